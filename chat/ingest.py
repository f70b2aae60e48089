"""Ingest documents: files -> sections -> chunks -> embeddings -> the local index or Azure AI Search.

    python -m chat.ingest data/docs [more paths] [--target local|azure] [--prune]

Chunk ids are stable (document path + position), and each chunk stores a hash of its text,
so a re-run embeds and uploads only what changed and removes chunks a document no longer
has. Every file is read and chunked before anything is written: a missing file, an
unreadable PDF or a folder without documents stops the run with a message and exit code 2,
and leaves the index as it was. The local index is replaced atomically at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from azure.core.credentials_async import AsyncTokenCredential
from tqdm import tqdm

from chat.chunking import chunk_text
from chat.documents import SUPPORTED_SUFFIXES, DocumentError, read_document
from chat.errors import ChatError
from chat.providers.identity import azure_credential
from chat.providers.llm import Embedder, build_openai_clients
from chat.providers.retriever import Chunk, IndexedChunk, IndexWriter
from chat.settings import ConfigurationError, Settings, get_settings

Target = Literal["local", "azure"]
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40
DEFAULT_BATCH_SIZE = 16
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class IngestError(Exception):
    """Bad input to ingest (missing path, unreadable document, nothing to ingest)."""


@dataclass(frozen=True, slots=True)
class Summary:
    files: int
    chunks: int
    embedded: int
    removed: int
    seconds: float

    def __str__(self) -> str:
        rate = f", {self.embedded / self.seconds:.1f} chunks/s" if self.embedded and self.seconds else ""
        return (
            f"{self.files} files, {self.chunks} chunks: {self.embedded} embedded and written, "
            f"{self.chunks - self.embedded} unchanged, {self.removed} removed, in {self.seconds:.1f} s{rate}"
        )


def collect_files(paths: Sequence[Path]) -> dict[str, Path]:
    """Document name (path relative to the folder given, or the file name) -> file, for every path given."""
    files: dict[str, Path] = {}
    for path in paths:
        if not path.exists():
            raise IngestError(f"{path}: no such file or folder")
        if path.is_dir():
            found = sorted(
                candidate
                for candidate in path.rglob("*")
                if candidate.is_file()
                and candidate.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
            )
            if not found:
                kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
                raise IngestError(f"{path}: the folder has no documents to ingest ({kinds})")
            files.update({candidate.relative_to(path).as_posix(): candidate for candidate in found})
        else:
            files[path.name] = path
    return files


def _chunk_id(document: str, number: int) -> str:
    """Stable and valid as an Azure AI Search key (letters, digits, _, -, =)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', document)}-{number:04d}"


def chunk_documents(files: dict[str, Path], size: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for document, path in files.items():
        try:
            sections = read_document(path, document)
        except DocumentError as error:
            raise IngestError(str(error)) from error
        number = 0
        for section in sections:
            for content in chunk_text(section.text, size, overlap):
                digest = hashlib.sha256(f"{section.title}\n{section.source}\n{content}".encode()).hexdigest()[:32]
                chunks.append(
                    Chunk(_chunk_id(document, number), document, section.title, section.source, content, digest)
                )
                number += 1
        if number == 0:
            raise IngestError(f"{path}: the document has no text")
    return chunks


async def embed_chunks(chunks: list[Chunk], embedder: Embedder, batch_size: int, progress: bool) -> list[IndexedChunk]:
    indexed: list[IndexedChunk] = []
    with tqdm(total=len(chunks), unit="chunk", desc="embedding", disable=not progress or not chunks) as bar:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            vectors = await embedder.embed([chunk.embedding_text for chunk in batch], "passage")
            indexed.extend(chunk.with_embedding(vector) for chunk, vector in zip(batch, vectors, strict=True))
            bar.update(len(batch))
    return indexed


async def ingest(
    chunks: list[Chunk],
    writer: IndexWriter,
    embedder: Embedder,
    *,
    prune: bool,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> tuple[int, int]:
    """Bring the index in step with ``chunks``; returns (chunks embedded and written, chunks removed)."""
    documents = {chunk.document for chunk in chunks}
    stored = await writer.existing(None if prune else documents)
    changed = [chunk for chunk in chunks if stored.get(chunk.id, ("", ""))[1] != chunk.content_hash]
    wanted = {chunk.id for chunk in chunks}
    stale = sorted(chunk_id for chunk_id in stored if chunk_id not in wanted)
    if not changed and not stale:
        return 0, 0
    await writer.upsert(await embed_chunks(changed, embedder, batch_size, progress))
    await writer.delete(stale)
    await writer.commit()
    return len(changed), len(stale)


def open_writer(
    target: Target, settings: Settings, embedding_model: str, credential: AsyncTokenCredential | None
) -> IndexWriter:
    if target == "local":
        from chat.providers.local_index import LocalIndexWriter  # numpy: only installed for local mode

        return LocalIndexWriter(settings.local_search.index_path, embedding_model)
    from chat.providers.azure_search import AzureIndexWriter

    search = settings.azure_search
    if not search.azure_search_endpoint or credential is None:
        raise ConfigurationError("--target azure needs AZURE_SEARCH_ENDPOINT (azd sets it after provisioning)")
    return AzureIndexWriter(search.azure_search_endpoint, search.azure_search_index, credential)


async def run(paths: Sequence[Path], target: Target, *, size: int, overlap: int, batch: int, prune: bool) -> Summary:
    started = time.perf_counter()
    files = collect_files(paths)
    chunks = chunk_documents(files, size, overlap)
    settings = get_settings()
    needs_credential = settings.mode.openai_host == "azure" or target == "azure"
    credential = azure_credential(settings.identity) if needs_credential else None
    clients = build_openai_clients(settings, credential)
    try:
        writer = open_writer(target, settings, clients.embedder.model, credential)
        try:
            embedded, removed = await ingest(
                chunks, writer, clients.embedder, prune=prune, batch_size=batch, progress=sys.stderr.isatty()
            )
        finally:
            await writer.aclose()
    finally:
        await clients.aclose()
        if credential is not None:
            await credential.close()
    return Summary(len(files), len(chunks), embedded, removed, time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders (.md .txt .html .pdf)")
    parser.add_argument("--target", choices=["local", "azure"], default="local")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--overlap-tokens", type=int, default=DEFAULT_OVERLAP_TOKENS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per embeddings request")
    parser.add_argument("--prune", action="store_true", help="also remove documents not among the paths given")
    args = parser.parse_args(argv)
    if not 0 <= args.overlap_tokens < args.chunk_tokens:
        parser.error("--overlap-tokens must be smaller than --chunk-tokens")
    try:
        summary = asyncio.run(
            run(
                args.paths,
                args.target,
                size=args.chunk_tokens,
                overlap=args.overlap_tokens,
                batch=args.batch_size,
                prune=args.prune,
            )
        )
    except (IngestError, ConfigurationError) as error:
        print(f"ingest: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ChatError as error:
        print(f"ingest: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("ingest: interrupted; the index is as it was before this run", file=sys.stderr)
        return 130
    print(f"ingest ({args.target}): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

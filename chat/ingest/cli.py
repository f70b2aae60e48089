"""Ingest documents: files -> sections -> chunks -> embeddings -> the local index or Azure AI Search.

    python -m chat.ingest data/docs [more paths] [--target local|azure] [--prune]

Chunk ids are stable (document name + position), and each chunk stores a hash of its text,
so a re-run embeds and uploads only what changed and removes chunks a document no longer
has. Every file is read and chunked before anything is written: a missing file, an
unreadable PDF or a folder without documents stops the run before the index is touched.
Any error ends the run with one line on stderr and exit code 2, and leaves the index as it
was: the local index is replaced atomically at the end, and Azure gets every new chunk
before any old one is deleted. Azure's 401/403 are retried while new role assignments
apply (--auth-wait-seconds), then the missing role is named.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import math
import re
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from tqdm import tqdm

from chat.errors import ChatError
from chat.ingest.auth_wait import (
    AZURE_OPENAI,
    AZURE_SEARCH,
    DEFAULT_WAIT_SECONDS,
    NO_WAIT,
    AuthWait,
    RoleMissing,
    Service,
)
from chat.ingest.chunking import chunk_text
from chat.ingest.documents import SUPPORTED_SUFFIXES, DocumentError, read_document
from chat.providers.identity import azure_credential
from chat.providers.llm import Embedder, build_openai_clients
from chat.providers.retriever import Chunk, IndexedChunk, IndexWriter
from chat.settings import ConfigurationError, Settings, get_settings

Target = Literal["local", "azure"]
# Small chunks: retrieved more precisely than 200-token ones (hybrid MRR@5 0.929 against 0.920 on
# data/eval/questions.jsonl), and the local model's sources budget (LOCAL_OPENAI_SOURCES_TOKENS,
# 200) holds two (or three) of them from different places instead of the start of one (README,
# Measured here). The default `top` of 5 keeps what hosted models read near what it was.
DEFAULT_CHUNK_TOKENS = 80
DEFAULT_OVERLAP_TOKENS = 16
DEFAULT_BATCH_SIZE = 16
EXIT_ERROR = 2
# Characters of the document name kept readable in a chunk id (Azure AI Search keys may have 1,024).
SLUG_CHARACTERS = 80
_NOT_KEY = re.compile(r"[^A-Za-z0-9_-]+")
SIGN_IN_HINT = (
    "could not sign in to Azure: run `azd auth login` (or `az login`); "
    "AZURE_CLIENT_ID selects a managed identity instead"
)


class IngestError(Exception):
    """Bad input to ingest (missing path, unreadable document, nothing to ingest, an unusable index)."""


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
    """Document name (path relative to the folder given, or the file name) -> file, for every path given.

    Two different files with the same name (``a/notes.md`` and ``b/notes.md`` given as files, or
    two folders that both hold ``guide.md``) would be cited alike and overwrite each other in the
    index, so they stop the run.
    """
    files: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        other = files.setdefault(name, path)
        if other.resolve() != path.resolve():
            raise IngestError(f"{other} and {path} would both be the document {name!r}: rename one")

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
            for candidate in found:
                add(candidate.relative_to(path).as_posix(), candidate)
        else:
            add(path.name, path)
    return files


def chunk_id(document: str, number: int) -> str:
    """The id of a document's ``number``-th chunk: a valid Azure AI Search key that no other document shares.

    A readable slug of the name, a hash of the exact name (``pizza.dough.md`` and
    ``pizza_dough.md`` share a slug, not a hash) and the position. It depends on nothing else,
    so a re-run finds the chunks it wrote before and updates them in place.
    """
    ascii_name = unicodedata.normalize("NFKD", document).encode("ascii", "ignore").decode()
    slug = _NOT_KEY.sub("_", ascii_name).strip("_")[:SLUG_CHARACTERS]
    digest = hashlib.sha256(document.encode()).hexdigest()[:12]
    return f"{slug}-{digest}-{number:04d}" if slug else f"{digest}-{number:04d}"


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
                    Chunk(chunk_id(document, number), document, section.title, section.source, content, digest)
                )
                number += 1
        if number == 0:
            raise IngestError(f"{path}: the document has no text")
    return chunks


async def embed_chunks(
    chunks: list[Chunk], embedder: Embedder, batch_size: int, progress: bool, wait: AuthWait = NO_WAIT
) -> list[IndexedChunk]:
    indexed: list[IndexedChunk] = []
    with tqdm(total=len(chunks), unit="chunk", desc="embedding", disable=not progress or not chunks) as bar:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            vectors = await wait.call(functools.partial(embedder.embed, [c.embedding_text for c in batch], "passage"))
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
    wait: AuthWait = NO_WAIT,
) -> tuple[int, int]:
    """Bring the index in step with ``chunks``; returns (chunks embedded and written, chunks removed).

    Every changed chunk is written before any stale one is deleted, so a run that fails midway
    leaves at least what the index held before.
    """
    documents = {chunk.document for chunk in chunks}
    stored = await wait.call(functools.partial(writer.existing, None if prune else documents))
    changed = [chunk for chunk in chunks if stored.get(chunk.id, ("", ""))[1] != chunk.content_hash]
    wanted = {chunk.id for chunk in chunks}
    stale = sorted(chunk_id for chunk_id in stored if chunk_id not in wanted)
    if not changed and not stale:
        return 0, 0
    indexed = await embed_chunks(changed, embedder, batch_size, progress, wait)
    await wait.call(functools.partial(writer.upsert, indexed))
    await wait.call(functools.partial(writer.delete, stale))
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


def _report(line: str) -> None:
    print(f"ingest: {line}", file=sys.stderr, flush=True)


async def run(
    paths: Sequence[Path],
    target: Target,
    *,
    size: int,
    overlap: int,
    batch: int,
    prune: bool,
    auth_wait_seconds: float = DEFAULT_WAIT_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Summary:
    started = time.perf_counter()
    files = collect_files(paths)
    chunks = chunk_documents(files, size, overlap)
    settings = get_settings()
    watched: dict[str, Service] = {}
    if target == "azure":
        watched["search_auth"] = AZURE_SEARCH
    if settings.mode.openai_host == "azure":
        watched["upstream_auth"] = AZURE_OPENAI
    wait = AuthWait(auth_wait_seconds, watched, sleep=sleep, report=_report)
    credential = azure_credential(settings.identity) if watched else None
    clients = build_openai_clients(settings, credential)
    try:
        writer = open_writer(target, settings, clients.embedder.model, credential)
        try:
            embedded, removed = await ingest(
                chunks, writer, clients.embedder, prune=prune, batch_size=batch, progress=sys.stderr.isatty(), wait=wait
            )
        finally:
            await writer.aclose()
    except sqlite3.Error as error:
        path = settings.local_search.index_path
        raise IngestError(f"{path}: the local index could not be updated ({error}); delete it to rebuild") from error
    finally:
        await clients.aclose()
        if credential is not None:
            await credential.close()
    return Summary(len(files), len(chunks), embedded, removed, time.perf_counter() - started)


def _one_line(error: BaseException) -> str:
    """The error as one line of text: what the user needs, never a traceback."""
    if isinstance(error, ChatError):
        text = error.message
    elif isinstance(error, ClientAuthenticationError) and error.status_code is None:
        text = SIGN_IN_HINT
    elif isinstance(error, (IngestError, ConfigurationError, RoleMissing, OSError)):
        text = str(error)
    else:
        text = f"unexpected {type(error).__name__}: {error} (run with --traceback for details)"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders (.md .txt .html .pdf)")
    parser.add_argument("--target", choices=["local", "azure"], default="local")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--overlap-tokens", type=int, default=DEFAULT_OVERLAP_TOKENS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per embeddings request")
    parser.add_argument("--prune", action="store_true", help="also remove documents not among the paths given")
    parser.add_argument(
        "--auth-wait-seconds",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help="how long to retry Azure's 401/403 while new role assignments apply (default %(default)g)",
    )
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(argv)
    if not 0 <= args.overlap_tokens < args.chunk_tokens:
        parser.error("--overlap-tokens must be smaller than --chunk-tokens")
    if not 0 <= args.auth_wait_seconds < math.inf:
        parser.error("--auth-wait-seconds must be a number of seconds, 0 or more")
    try:
        summary = asyncio.run(
            run(
                args.paths,
                args.target,
                size=args.chunk_tokens,
                overlap=args.overlap_tokens,
                batch=args.batch_size,
                prune=args.prune,
                auth_wait_seconds=args.auth_wait_seconds,
                sleep=sleep,
            )
        )
    except KeyboardInterrupt:
        print("ingest: interrupted; nothing was removed from the index", file=sys.stderr)
        return 130
    except Exception as error:
        if args.traceback:
            raise
        print(f"ingest: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    print(f"ingest ({args.target}): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the pipeline and ingest need from a search index, whichever index it is (local or Azure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chat.events import RetrievalMode, SearchResult


class Retriever(Protocol):
    async def search(
        self,
        query: str,
        *,
        top: int,
        mode: RetrievalMode,
        semantic_ranker: bool | None,
        notes: list[str] | None = None,
    ) -> list[SearchResult]:
        """The ``top`` best chunks for ``query``: BM25 text, vector or both fused (hybrid).

        When the search had to do without something asked for (the semantic ranker), a short
        note for the person reading the answer is appended to ``notes``.
        """
        ...

    async def check(self) -> str:
        """A short description of the index if it answers; raises UpstreamError if it does not."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document: ``document`` is the file it came from, ``source`` its citation."""

    id: str
    document: str
    title: str
    source: str
    content: str
    content_hash: str

    @property
    def embedding_text(self) -> str:
        return f"{self.title}\n{self.content}"

    def with_embedding(self, embedding: Sequence[float]) -> IndexedChunk:
        return IndexedChunk(self.id, self.document, self.title, self.source, self.content, self.content_hash, embedding)


@dataclass(frozen=True, slots=True)
class IndexedChunk(Chunk):
    """A chunk with its embedding, as stored."""

    embedding: Sequence[float]


class IndexWriter(Protocol):
    """How ingest keeps an index in step with the documents; changes are live after ``commit``."""

    async def existing(self, documents: set[str] | None) -> dict[str, tuple[str, str]]:
        """id -> (document, content hash) of the stored chunks of ``documents`` (None: of all)."""
        ...

    async def upsert(self, chunks: list[IndexedChunk]) -> None: ...

    async def delete(self, ids: list[str]) -> None: ...

    async def commit(self) -> None: ...

    async def aclose(self) -> None:
        """Release resources; uncommitted changes are dropped where the index allows it."""
        ...

"""The embedded local index: one SQLite file with FTS5 (BM25) text search and stored embeddings.

Hybrid search is the same idea as Azure AI Search's: a BM25 ranking and a vector ranking fused
by reciprocal rank fusion (RRF), so local results and citations look like Azure's. The file is
loaded into memory (chunks into an in-memory SQLite database, vectors into one normalised
numpy matrix) and reloaded when ingest replaces it; queries run in a worker thread so they
never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import numpy.typing as npt

from chat.errors import ChatError, UpstreamError
from chat.events import RetrievalMode, SearchResult
from chat.providers.llm import Embedder
from chat.providers.retriever import IndexedChunk

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
RRF_K = 60
# Each ranking contributes this many candidates to the fusion, as Azure's hybrid queries do.
FUSION_CANDIDATES = 50
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from how i in is it me my of on or should so that the "
    "this to what when which who why will with you your".split()
)
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chunks (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    content TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX chunks_document ON chunks (document);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    title, content, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, title, content) VALUES (new.rowid, new.title, new.content);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, title, content) VALUES ('delete', old.rowid, old.title, old.content);
END;
"""


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression (any of the words) that no user input can turn into FTS syntax."""
    words = [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words)) or None


def rrf(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of rankings of row numbers: best first, with their fused scores."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    return dict(connection.execute("SELECT key, value FROM meta").fetchall())


class _Snapshot:
    """One loaded version of the index file. Thread-safe: SQLite access is serialised by a lock."""

    def __init__(self, path: Path) -> None:
        self.stamp = _stamp(path)
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
            source.backup(self._db)
        finally:
            source.close()
        self._lock = threading.Lock()
        self.meta = read_meta(self._db)
        rows = self._db.execute("SELECT rowid, embedding FROM chunks ORDER BY rowid").fetchall()
        self.rowids = np.array([rowid for rowid, _ in rows], dtype=np.int64)
        dimensions = int(self.meta.get("dimensions", "0"))
        matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), dimensions)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.matrix: npt.NDArray[np.float32] = (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)

    @property
    def size(self) -> int:
        return len(self.rowids)

    def close(self) -> None:
        self._db.close()

    def search(self, query: str, vector: Sequence[float] | None, top: int, mode: RetrievalMode) -> list[SearchResult]:
        candidates = max(top, FUSION_CANDIDATES)
        text = self._text_ranking(query, candidates) if mode != "vectors" else []
        vectors = self._vector_ranking(vector, candidates) if vector is not None and self.size else []
        if mode == "hybrid":
            ranked = rrf([[rowid for rowid, _ in text], [rowid for rowid, _ in vectors]])
        else:
            ranked = text if mode == "text" else vectors
        return self._results(ranked[:top])

    def _text_ranking(self, query: str, limit: int) -> list[tuple[int, float]]:
        match = fts_query(query)
        if match is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid, bm25(chunks_fts, 2.0, 1.0) AS rank FROM chunks_fts WHERE chunks_fts MATCH ? "
                "ORDER BY rank LIMIT ?",
                (match, limit),
            ).fetchall()
        return [(rowid, -rank) for rowid, rank in rows]  # bm25() is lower-is-better

    def _vector_ranking(self, vector: Sequence[float], limit: int) -> list[tuple[int, float]]:
        query = np.asarray(vector, dtype=np.float32)
        query /= np.linalg.norm(query) or 1.0
        similarities = self.matrix @ query
        count = min(limit, self.size)
        best = np.argpartition(-similarities, count - 1)[:count]
        best = best[np.argsort(-similarities[best])]
        return [(int(self.rowids[i]), float(similarities[i])) for i in best]

    def _results(self, ranked: list[tuple[int, float]]) -> list[SearchResult]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        with self._lock:
            rows = self._db.execute(
                f"SELECT rowid, id, title, source, content FROM chunks WHERE rowid IN ({marks})",
                [rowid for rowid, _ in ranked],
            ).fetchall()
        by_rowid = {row[0]: row for row in rows}
        return [
            SearchResult(id=row[1], title=row[2], source=row[3], content=row[4], score=score)
            for rowid, score in ranked
            if (row := by_rowid.get(rowid))
        ]


def _stamp(path: Path) -> tuple[int, int, int]:
    status = os.stat(path)
    return (status.st_ino, status.st_mtime_ns, status.st_size)


class LocalIndexRetriever:
    """The Retriever over the local index file; embeds queries with the configured embedder."""

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self._path = path
        self._embedder = embedder
        self._snapshot: _Snapshot | None = None
        self._loading = asyncio.Lock()

    async def _current(self) -> _Snapshot:
        """The loaded index, reloaded (in a thread) when ingest has replaced the file."""
        try:
            stamp = _stamp(self._path)
        except FileNotFoundError:
            # The path goes to the server's log only: error bodies never show the server's files.
            logger.warning("no local index at %s", self._path)
            raise UpstreamError(
                "There is no local index yet. Run: python -m chat.ingest data/docs", code="index_missing"
            ) from None
        if self._snapshot is None or self._snapshot.stamp != stamp:
            async with self._loading:
                if self._snapshot is None or self._snapshot.stamp != stamp:
                    self._snapshot = await asyncio.to_thread(_Snapshot, self._path)
        return self._snapshot

    def _check_embeddings(self, snapshot: _Snapshot) -> None:
        built_with = snapshot.meta.get("embedding_model")
        if built_with != self._embedder.model:
            logger.warning("the local index has embeddings of %r, the app uses %r", built_with, self._embedder.model)
            raise UpstreamError(
                "The local index was built with another embedding model than the configured one. Run ingest again.",
                code="index_mismatch",
            )

    async def search(
        self,
        query: str,
        *,
        top: int,
        mode: RetrievalMode,
        semantic_ranker: bool | None,
        notes: list[str] | None = None,
    ) -> list[SearchResult]:
        """``semantic_ranker`` is an Azure AI Search feature; the local index has none and ignores it."""
        snapshot = await self._current()
        vector = None
        if mode != "text":
            self._check_embeddings(snapshot)
            [vector] = await self._embedder.embed([query], "query")
        return await asyncio.to_thread(snapshot.search, query, vector, top, mode)

    async def check(self) -> str:
        snapshot = await self._current()
        self._check_embeddings(snapshot)
        return f"{snapshot.size} chunks"

    async def aclose(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None


class LocalIndexWriter:
    """Writes a copy of the index and swaps it in atomically: an interrupted run leaves the old file usable.

    An existing index built with the same embedding model is the starting point, so re-runs
    only embed what changed; one built with another model is replaced wholesale.
    """

    def __init__(self, path: Path, embedding_model: str) -> None:
        self._path = path
        self._temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        self._temporary.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self._temporary)
        try:
            if self._compatible_existing(embedding_model):
                with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as existing:
                    existing.backup(self._db)
            else:
                self._db.executescript(SCHEMA)
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", SCHEMA_VERSION), ("embedding_model", embedding_model)],
            )
        except BaseException:
            self._discard()
            raise

    def _compatible_existing(self, embedding_model: str) -> bool:
        if not self._path.exists():
            return False
        try:
            with closing(sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)) as existing:
                meta = read_meta(existing)
        except sqlite3.Error:
            return False  # not an index of ours, or damaged: rebuild
        return meta.get("schema_version") == SCHEMA_VERSION and meta.get("embedding_model") == embedding_model

    async def existing(self, documents: set[str] | None) -> dict[str, tuple[str, str]]:
        """id -> (document, content hash) of the chunks stored for ``documents`` (None: all)."""
        rows = self._db.execute("SELECT id, document, content_hash FROM chunks").fetchall()
        return {row[0]: (row[1], row[2]) for row in rows if documents is None or row[1] in documents}

    async def upsert(self, chunks: list[IndexedChunk]) -> None:
        if not chunks:
            return
        dimensions = len(chunks[0].embedding)
        stored = read_meta(self._db).get("dimensions")
        if stored is not None and int(stored) != dimensions and self._db.execute("SELECT 1 FROM chunks").fetchone():
            message = f"The embeddings have {dimensions} dimensions but the index holds {stored}: delete it to rebuild."
            raise ChatError(message, code="index_mismatch")
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dimensions', ?)", (str(dimensions),))
        self._db.executemany("DELETE FROM chunks WHERE id = ?", [(chunk.id,) for chunk in chunks])
        self._db.executemany(
            "INSERT INTO chunks (id, document, title, source, content, content_hash, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (c.id, c.document, c.title, c.source, c.content, c.content_hash, _vector_blob(c.embedding))
                for c in chunks
            ],
        )

    async def delete(self, ids: list[str]) -> None:
        self._db.executemany("DELETE FROM chunks WHERE id = ?", [(chunk_id,) for chunk_id in ids])

    async def commit(self) -> None:
        self._db.commit()
        self._db.close()
        os.replace(self._temporary, self._path)

    async def aclose(self) -> None:
        """Drop the copy unless it was committed."""
        self._discard()

    def _discard(self) -> None:
        self._db.close()
        self._temporary.unlink(missing_ok=True)


def _vector_blob(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()

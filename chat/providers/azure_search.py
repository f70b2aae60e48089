"""Azure AI Search, keyless: the retriever the function uses, and the index schema ingest creates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.search.documents.aio import SearchClient
from azure.search.documents.indexes.aio import SearchIndexClient
from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    SearchableField,
    SearchField,
    SearchIndex,
    SemanticConfiguration,
    SemanticField,
    SemanticPrioritizedFields,
    SemanticSearch,
    SimpleField,
    VectorSearch,
    VectorSearchProfile,
)
from azure.search.documents.models import VectorizedQuery

from chat.errors import UpstreamError
from chat.events import RetrievalMode, SearchResult
from chat.providers.llm import Embedder
from chat.providers.retriever import IndexedChunk

logger = logging.getLogger(__name__)

SEMANTIC_CONFIGURATION = "default"
VECTOR_PROFILE = "embedding-profile"
SELECT_FIELDS = ["id", "title", "source", "content"]
# Hybrid queries fuse the text ranking with this many nearest neighbours, as Azure's own samples do.
HYBRID_NEIGHBOURS = 50


@contextmanager
def search_errors(timeout_seconds: float) -> Iterator[None]:
    """Translate Azure SDK exceptions into UpstreamError with a message safe to show."""
    try:
        yield
    except ClientAuthenticationError as error:
        raise UpstreamError("The search service refused this app's credentials.", code="search_auth") from error
    except HttpResponseError as error:
        message = f"The search service answered HTTP {error.status_code}."
        raise UpstreamError(message, code="search_unavailable") from error
    except (AzureError, TimeoutError) as error:
        message = f"The search service could not be reached within {timeout_seconds:g} seconds."
        raise UpstreamError(message, code="search_unavailable") from error


def _semantic_unavailable(error: BaseException | None) -> bool:
    """Whether the service refused the semantic ranker itself (not enabled on the service, or its
    free quota spent), as opposed to the query or the service failing: then searching without it helps."""
    if not isinstance(error, HttpResponseError) or error.status_code not in (400, 402, 403, 429, 503):
        return False
    return "semantic" in str(error).lower()


def index_schema(name: str, dimensions: int) -> SearchIndex:
    """The index ingest creates: searchable content, a vector field and a semantic configuration."""
    return SearchIndex(
        name=name,
        fields=[
            SimpleField(name="id", type="Edm.String", key=True),
            SearchableField(name="title", type="Edm.String"),
            SimpleField(name="source", type="Edm.String", filterable=True),
            SimpleField(name="document", type="Edm.String", filterable=True),
            SimpleField(name="content_hash", type="Edm.String"),
            SearchableField(name="content", type="Edm.String", analyzer_name="en.microsoft"),
            SearchField(
                name="embedding",
                type="Collection(Edm.Single)",
                searchable=True,
                vector_search_dimensions=dimensions,
                vector_search_profile_name=VECTOR_PROFILE,
            ),
        ],
        vector_search=VectorSearch(
            algorithms=[HnswAlgorithmConfiguration(name="hnsw")],
            profiles=[VectorSearchProfile(name=VECTOR_PROFILE, algorithm_configuration_name="hnsw")],
        ),
        semantic_search=SemanticSearch(
            configurations=[
                SemanticConfiguration(
                    name=SEMANTIC_CONFIGURATION,
                    prioritized_fields=SemanticPrioritizedFields(
                        title_field=SemanticField(field_name="title"),
                        content_fields=[SemanticField(field_name="content")],
                    ),
                )
            ]
        ),
    )


def search_client(endpoint: str, index: str, credential: AsyncTokenCredential) -> SearchClient:
    return SearchClient(endpoint=endpoint, index_name=index, credential=credential)


class AzureSearchRetriever:
    def __init__(
        self, client: SearchClient, embedder: Embedder, *, semantic_ranker: bool, timeout_seconds: float
    ) -> None:
        self._client = client
        self._embedder = embedder
        self._semantic_ranker = semantic_ranker
        self._timeout_seconds = timeout_seconds

    async def search(
        self,
        query: str,
        *,
        top: int,
        mode: RetrievalMode,
        semantic_ranker: bool | None,
        notes: list[str] | None = None,
    ) -> list[SearchResult]:
        options: dict[str, Any] = {"top": top, "select": SELECT_FIELDS, "timeout": self._timeout_seconds}
        if mode != "text":
            [vector] = await self._embedder.embed([query], "query")
            neighbours = top if mode == "vectors" else max(top, HYBRID_NEIGHBOURS)
            options["vector_queries"] = [
                VectorizedQuery(vector=vector, k_nearest_neighbors=neighbours, fields="embedding")
            ]
        search_text = None if mode == "vectors" else query
        if not (self._semantic_ranker if semantic_ranker is None else semantic_ranker):
            return await self._search(search_text, options)
        semantic = {
            "query_type": "semantic",
            "semantic_configuration_name": SEMANTIC_CONFIGURATION,
            "semantic_query": query,  # the ranker needs text, also in vectors-only mode
            # Ranker over capacity or too slow: the service answers with the base ranking (and says why).
            "semantic_error_mode": "partial",
        }
        try:
            return await self._search(search_text, {**options, **semantic}, notes)
        except UpstreamError as error:
            if not _semantic_unavailable(error.__cause__):
                raise
            logger.warning("semantic ranker unavailable, searching without it: %s", error.__cause__)
        if notes is not None:
            notes.append("semantic ranker unavailable: ranked without it")
        return await self._search(search_text, options)

    async def _search(
        self, search_text: str | None, options: dict[str, Any], notes: list[str] | None = None
    ) -> list[SearchResult]:
        """One query; with ``notes``, a semantic query whose results the ranker did not score is noted.

        With ``semantic_error_mode="partial"`` the service answers with its base ranking when the
        ranker is over capacity or too slow, and such results carry no reranker score (the SDK
        exposes the service's stated reason only through private attributes).
        """
        with search_errors(self._timeout_seconds):
            results = await self._client.search(search_text=search_text, **options)
            documents = [doc async for doc in results]
        if notes is not None and documents and all(doc.get("@search.reranker_score") is None for doc in documents):
            notes.append("semantic ranker skipped: ranked without it")
        return [
            SearchResult(
                id=doc["id"],
                title=doc.get("title") or doc["source"],
                source=doc["source"],
                content=doc["content"],
                score=float(doc.get("@search.reranker_score") or doc.get("@search.score") or 0.0),
            )
            for doc in documents
        ]

    async def check(self) -> str:
        with search_errors(self._timeout_seconds):
            count = await self._client.get_document_count(timeout=self._timeout_seconds)
        return f"{count} chunks"

    async def aclose(self) -> None:
        await self._client.close()


# Documents per upload request, and how often to retry documents the service throttled.
UPLOAD_BATCH = 100
UPLOAD_ATTEMPTS = 4
_RETRYABLE_STATUS = frozenset({409, 422, 429, 500, 502, 503})


class AzureIndexWriter:
    """Creates or updates the Azure AI Search index and keeps it in step with the ingested documents."""

    def __init__(self, endpoint: str, index: str, credential: AsyncTokenCredential) -> None:
        self._index = index
        self._indexes = SearchIndexClient(endpoint=endpoint, credential=credential)
        self._client = search_client(endpoint, index, credential)
        self._index_ready = False

    async def existing(self, documents: set[str] | None) -> dict[str, tuple[str, str]]:
        """id -> (document, content hash) of the chunks stored for ``documents`` (None: all)."""
        with search_errors(60):
            try:
                await self._indexes.get_index(self._index)
            except ResourceNotFoundError:
                return {}
            filter_ = None
            if documents is not None:
                names = "|".join(sorted(documents)).replace("'", "''")
                filter_ = f"search.in(document, '{names}', '|')"
            results = await self._client.search(
                search_text="*", filter=filter_, select=["id", "document", "content_hash"]
            )
            return {doc["id"]: (doc["document"], doc.get("content_hash") or "") async for doc in results}

    async def upsert(self, chunks: list[IndexedChunk]) -> None:
        if not chunks:
            return
        if not self._index_ready:
            with search_errors(60):
                await self._indexes.create_or_update_index(index_schema(self._index, len(chunks[0].embedding)))
            self._index_ready = True
        documents = [
            {
                "id": c.id,
                "document": c.document,
                "title": c.title,
                "source": c.source,
                "content": c.content,
                "content_hash": c.content_hash,
                "embedding": list(c.embedding),
            }
            for c in chunks
        ]
        for start in range(0, len(documents), UPLOAD_BATCH):
            await self._send(documents[start : start + UPLOAD_BATCH], "mergeOrUpload")

    async def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), UPLOAD_BATCH):
            await self._send([{"id": chunk_id} for chunk_id in ids[start : start + UPLOAD_BATCH]], "delete")

    async def _send(self, batch: list[dict[str, Any]], action: str) -> None:
        """One batch, retrying the documents the service could not take yet (throttling, busy)."""
        pending = batch
        for attempt in range(UPLOAD_ATTEMPTS):
            with search_errors(60):
                if action == "delete":
                    results = await self._client.delete_documents(documents=pending)
                else:
                    results = await self._client.merge_or_upload_documents(documents=pending)
            failed = {result.key for result in results if not result.succeeded}
            if not failed:
                return
            if any(r.status_code not in _RETRYABLE_STATUS for r in results if not r.succeeded):
                raise UpstreamError(f"The search service refused {len(failed)} documents.", code="search_rejected")
            pending = [document for document in pending if document["id"] in failed]
            await asyncio.sleep(2**attempt)
        raise UpstreamError(f"{len(pending)} documents were still refused after retries.", code="search_unavailable")

    async def commit(self) -> None:
        """Every write is already live in Azure."""

    async def aclose(self) -> None:
        await self._client.close()
        await self._indexes.close()

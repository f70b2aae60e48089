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


# Documents per upload request (well under the service's 1,000 documents and 16 MB per request).
UPLOAD_BATCH = 100
# Sends of a batch: the first, then retries of the documents the service could not take yet.
UPLOAD_ATTEMPTS = 4
# Per-document statuses worth retrying, as the REST reference lists them (and as the SDK's own
# buffered sender retries): 409 version conflict, 422 index busy, 503 service under load.
# Whole-request throttling (429, 503) is retried with backoff by azure-core's RetryPolicy.
_RETRYABLE_STATUS = frozenset({409, 422, 503})
# Stored chunks read per run: the service pages through at most 100,000 results of a query.
EXISTING_LIMIT = 100_000


@contextmanager
def _index_errors() -> Iterator[None]:
    """Azure SDK exceptions of the writer as UpstreamError, keeping the service's own reason.

    Only the ingest CLI writes, and its user is the index's operator, so the reason is shown.
    401 and 403 get the code ``search_auth`` (ingest waits for new role assignments on it). A
    credential that could not get a token at all raises ClientAuthenticationError without a
    status: that is left as it is, for ingest to say how to sign in.
    """
    try:
        yield
    except HttpResponseError as error:
        if error.status_code is None:
            raise
        code = "search_auth" if error.status_code in (401, 403) else "search_unavailable"
        reason = (error.message or error.reason or "").strip().splitlines()
        detail = f": {reason[0]}" if reason else ""
        message = f"Azure AI Search answered HTTP {error.status_code}{detail}"
        raise UpstreamError(message, code=code) from error
    except AzureError as error:
        message = f"Azure AI Search could not be reached ({type(error).__name__})."
        raise UpstreamError(message, code="search_unavailable") from error


def document_filter(documents: set[str]) -> str:
    """An OData filter matching the chunks of ``documents``, whatever characters their names hold.

    ``search.in`` splits its list at a delimiter, so it gets one that no name contains; names
    that hold every candidate are compared one by one instead.
    """
    names = sorted(documents)
    delimiter = next((mark for mark in "|,;" if not any(mark in name for name in names)), None)
    if delimiter is None:
        return " or ".join(f"document eq '{_odata_text(name)}'" for name in names)
    return f"search.in(document, '{_odata_text(delimiter.join(names))}', '{delimiter}')"


def _odata_text(text: str) -> str:
    return text.replace("'", "''")


class AzureIndexWriter:
    """Creates or updates the Azure AI Search index and keeps it in step with the ingested documents.

    Uploads go through SearchClient in batches, with this class retrying the documents a batch
    answered with a retryable status, rather than through the SDK's SearchIndexingBufferedSender:
    in azure-search-documents 12.0.0 its aio flush(), when a batch request raises (a 403, a
    dropped connection), puts back only the first document of the batch and drops the others
    without an error, returns instead of raising (so a 403 cannot be told from a throttled
    document), retries at once with no backoff, and reports final failures from tasks that may
    run after flush() has returned. Ingest must know that every document is in before it deletes.
    """

    def __init__(self, endpoint: str, index: str, credential: AsyncTokenCredential) -> None:
        self._index = index
        self._indexes = SearchIndexClient(endpoint=endpoint, credential=credential)
        self._client = search_client(endpoint, index, credential)
        self._index_ready = False

    async def existing(self, documents: set[str] | None) -> dict[str, tuple[str, str]]:
        """id -> (document, content hash) of the chunks stored for ``documents`` (None: all)."""
        with _index_errors():
            try:
                await self._indexes.get_index(self._index)
            except ResourceNotFoundError:
                return {}
            # Without `top` the service answers the first 50 chunks only.
            results = await self._client.search(
                search_text="*",
                filter=None if documents is None else document_filter(documents),
                select=["id", "document", "content_hash"],
                top=EXISTING_LIMIT,
            )
            return {doc["id"]: (doc["document"], doc.get("content_hash") or "") async for doc in results}

    async def upsert(self, chunks: list[IndexedChunk]) -> None:
        if not chunks:
            return
        if not self._index_ready:
            with _index_errors():
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
        """One batch; the documents answered with a retryable status are sent again after a pause."""
        pending = batch
        for attempt in range(UPLOAD_ATTEMPTS):
            if attempt:
                await asyncio.sleep(2 ** (attempt - 1))
            with _index_errors():
                if action == "delete":
                    results = await self._client.delete_documents(documents=pending)
                else:
                    results = await self._client.merge_or_upload_documents(documents=pending)
            failures = [result for result in results if not result.succeeded]
            if not failures:
                return
            refused = [result for result in failures if result.status_code not in _RETRYABLE_STATUS]
            if refused:
                first = refused[0]
                message = f"Azure AI Search refused {len(refused)} documents (HTTP {first.status_code}"
                raise UpstreamError(f"{message}: {first.error_message or 'no reason given'}).", code="search_rejected")
            failed = {result.key for result in failures}
            pending = [document for document in pending if document["id"] in failed]
        raise UpstreamError(
            f"Azure AI Search was still busy with {len(pending)} documents after {UPLOAD_ATTEMPTS} attempts; "
            "run ingest again to send them.",
            code="search_unavailable",
        )

    async def commit(self) -> None:
        """Every write is already live in Azure."""

    async def aclose(self) -> None:
        await self._client.close()
        await self._indexes.close()

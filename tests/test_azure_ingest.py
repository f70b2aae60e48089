"""Ingest into Azure AI Search, with the aio SearchIndexClient and SearchClient replaced at the SDK boundary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity.aio import DefaultAzureCredential
from azure.search.documents.aio import SearchClient
from azure.search.documents.indexes.aio import SearchIndexClient
from azure.search.documents.indexes.models import SearchIndex
from azure.search.documents.models import IndexingResult

from chat.ingest import chunk_id, main
from tests.conftest import write_documents
from tests.sdk_fakes import EmbeddingScript, SearchResults


@dataclass
class AzureIndex:
    """An in-memory stand-in for one Azure AI Search index, recording every SDK call."""

    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: SearchIndex | None = None
    throttle_next: int = 0
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        index = self

        async def get_index(self: SearchIndexClient, name: str, **kwargs: Any) -> SearchIndex:
            index.calls.append(("get_index", name))
            if index.schema is None:
                raise ResourceNotFoundError("no such index")
            return index.schema

        async def create_or_update_index(self: SearchIndexClient, schema: SearchIndex, **kwargs: Any) -> SearchIndex:
            index.calls.append(("create_or_update_index", schema.name))
            index.schema = schema
            return schema

        async def search(self: SearchClient, search_text: str | None = None, **kwargs: Any) -> SearchResults:
            index.calls.append(("search", kwargs.get("filter")))
            found = [dict(document) for document in index.documents.values()]
            return SearchResults(found[: kwargs.get("top", 50)])  # the service's default: the first 50

        async def merge_or_upload_documents(self: SearchClient, documents: list[dict[str, Any]]) -> list[Any]:
            index.calls.append(("upload", len(documents)))
            results = []
            for document in documents:
                if index.throttle_next:
                    index.throttle_next -= 1
                    results.append(IndexingResult(key=document["id"], succeeded=False, status_code=503))
                else:
                    index.documents[document["id"]] = document
                    results.append(IndexingResult(key=document["id"], succeeded=True, status_code=200))
            return results

        async def delete_documents(self: SearchClient, documents: list[dict[str, Any]]) -> list[Any]:
            index.calls.append(("delete", sorted(document["id"] for document in documents)))
            for document in documents:
                index.documents.pop(document["id"], None)
            return [IndexingResult(key=document["id"], succeeded=True, status_code=200) for document in documents]

        async def no_sleep(seconds: float) -> None:
            index.calls.append(("sleep", seconds))

        monkeypatch.setattr(SearchIndexClient, "get_index", get_index)
        monkeypatch.setattr(SearchIndexClient, "create_or_update_index", create_or_update_index)
        monkeypatch.setattr(SearchClient, "search", search)
        monkeypatch.setattr(SearchClient, "merge_or_upload_documents", merge_or_upload_documents)
        monkeypatch.setattr(SearchClient, "delete_documents", delete_documents)
        monkeypatch.setattr("chat.providers.azure_search.asyncio.sleep", no_sleep)


@pytest.fixture
def azure_index(azure_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AzureIndex:
    index = AzureIndex()
    index.install(monkeypatch)
    return index


def test_ingest_creates_the_index_and_uploads_keylessly(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path
) -> None:
    azure_index.throttle_next = 2  # the service refuses two documents once: they are sent again
    docs = write_documents(tmp_path / "docs")

    assert main([str(docs), "--target", "azure"]) == 0

    assert azure_index.schema is not None
    fields = {f.name: f for f in azure_index.schema.fields}
    assert set(fields) == {"id", "title", "source", "document", "content_hash", "content", "embedding"}
    assert fields["id"].key
    assert fields["embedding"].vector_search_dimensions == 384
    semantic = azure_index.schema.semantic_search
    assert semantic is not None and semantic.configurations is not None
    assert semantic.configurations[0].name == "default"
    assert len(azure_index.documents) == 5
    assert ("sleep", 1) in azure_index.calls, "throttled documents are retried with backoff"
    uploaded = next(iter(azure_index.documents.values()))
    assert len(uploaded["embedding"]) == 384
    assert {call["model"] for call in embedding_script.calls} == {"embedding-deployment"}
    assert all(call.get("extra_body") is None for call in embedding_script.calls), "no local-only parameters"


def test_rerun_uploads_only_changes_and_deletes_stale_chunks(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path
) -> None:
    docs = write_documents(tmp_path / "docs")
    assert main([str(docs), "--target", "azure"]) == 0
    azure_index.calls.clear()
    embedded_before = len(embedding_script.calls)

    assert main([str(docs), "--target", "azure"]) == 0
    assert not [call for call in azure_index.calls if call[0] in ("upload", "delete")], "unchanged: nothing sent"
    assert len(embedding_script.calls) == embedded_before

    (docs / "mushroom-pineapple.md").write_text("# Mushroom and pineapple pizza\n\nNow one section only.\n")
    assert main([str(docs), "--target", "azure"]) == 0
    assert ("delete", [chunk_id("mushroom-pineapple.md", 1)]) in azure_index.calls
    assert ("upload", 1) in azure_index.calls
    assert len(azure_index.documents) == 4
    search_filters = [call[1] for call in azure_index.calls if call[0] == "search"]
    assert search_filters[-1] == "search.in(document, 'dough.md|margherita.md|mushroom-pineapple.md|oven.txt', '|')"


def test_azure_target_without_a_search_endpoint(
    embedding_script: EmbeddingScript, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(write_documents(tmp_path / "docs")), "--target", "azure"]) == 2
    assert "AZURE_SEARCH_ENDPOINT" in capsys.readouterr().err


def test_the_hook_signs_in_as_the_user(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path
) -> None:
    """Without AZURE_CLIENT_ID (the hook unsets it) the CLI uses DefaultAzureCredential: azd's login."""
    created: list[object] = []
    original = DefaultAzureCredential.__init__

    def record(self: DefaultAzureCredential, **kwargs: Any) -> None:
        created.append(self)
        original(self, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DefaultAzureCredential, "__init__", record)
        assert main([str(write_documents(tmp_path / "docs")), "--target", "azure"]) == 0
    assert len(created) == 1, "one credential for both OpenAI and Search"

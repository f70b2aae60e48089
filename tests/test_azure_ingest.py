"""Ingest into Azure AI Search, with the aio SearchIndexClient and SearchClient replaced at the SDK boundary."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline.transport import RequestsTransportResponse
from azure.core.rest import HttpRequest
from azure.identity.aio import DefaultAzureCredential
from azure.search.documents.aio import SearchClient
from azure.search.documents.indexes.aio import SearchIndexClient
from azure.search.documents.indexes.models import SearchIndex
from azure.search.documents.models import IndexingResult

from chat.ingest.cli import chunk_id, main
from tests.conftest import write_documents
from tests.sdk_fakes import EmbeddingScript, SearchResults


@dataclass
class AzureIndex:
    """An in-memory stand-in for one Azure AI Search index, recording every SDK call."""

    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: SearchIndex | None = None
    throttle_next: int = 0
    refuse_status: int | None = None  # every uploaded document is answered with this status
    get_index_errors: list[Exception] = field(default_factory=list)  # raised by the next get_index calls
    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        """Pauses taken, recorded instead of waited."""
        self.calls.append(("sleep", seconds))

    @property
    def pauses(self) -> list[float]:
        return [call[1] for call in self.calls if call[0] == "sleep"]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        index = self

        async def get_index(self: SearchIndexClient, name: str, **kwargs: Any) -> SearchIndex:
            index.calls.append(("get_index", name))
            if index.get_index_errors:
                raise index.get_index_errors.pop(0)
            if index.schema is None:
                raise ResourceNotFoundError("no such index")
            return index.schema

        async def create_or_update_index(self: SearchIndexClient, schema: SearchIndex, **kwargs: Any) -> SearchIndex:
            index.calls.append(("create_or_update_index", schema.name))
            index.schema = schema
            return schema

        async def search(self: SearchClient, search_text: str | None = None, **kwargs: Any) -> SearchResults:
            index.calls.append(("search", kwargs.get("filter")))
            wanted = odata_documents(kwargs.get("filter"))
            found = [dict(d) for d in index.documents.values() if wanted is None or d["document"] in wanted]
            return SearchResults(found[: kwargs.get("top", 50)])  # the service's default: the first 50

        async def merge_or_upload_documents(self: SearchClient, documents: list[dict[str, Any]]) -> list[Any]:
            index.calls.append(("upload", len(documents)))
            results = []
            for document in documents:
                if index.refuse_status is not None:
                    error = "Document contains a field that is not in the index."
                    results.append(
                        IndexingResult(
                            key=document["id"], succeeded=False, status_code=index.refuse_status, error_message=error
                        )
                    )
                elif index.throttle_next:
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

        monkeypatch.setattr(SearchIndexClient, "get_index", get_index)
        monkeypatch.setattr(SearchIndexClient, "create_or_update_index", create_or_update_index)
        monkeypatch.setattr(SearchClient, "search", search)
        monkeypatch.setattr(SearchClient, "merge_or_upload_documents", merge_or_upload_documents)
        monkeypatch.setattr(SearchClient, "delete_documents", delete_documents)
        monkeypatch.setattr("chat.providers.azure_search.asyncio.sleep", index.sleep)


def odata_documents(filter_: str | None) -> set[str] | None:
    """The document names of the filters ingest sends (search.in, or eq clauses), as the service reads them."""
    if filter_ is None:
        return None
    if listed := re.fullmatch(r"search\.in\(document, '(.*)', '(.)'\)", filter_, re.DOTALL):
        return set(listed[1].replace("''", "'").split(listed[2]))
    clauses = filter_.split(" or ")
    names = [re.fullmatch(r"document eq '(.*)'", clause, re.DOTALL) for clause in clauses]
    assert all(names), filter_
    return {name[1].replace("''", "'") for name in names if name}


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


def http_error(status: int, code: str = "Forbidden", message: str = "Authorization failed.") -> HttpResponseError:
    """The exception the SDK raises for an HTTP error answer, built from a real transport response."""
    answer = requests.Response()
    answer.status_code, answer.reason = status, code
    answer.headers["content-type"] = "application/json"
    answer._content = json.dumps({"error": {"code": code, "message": message}}).encode()
    response = RequestsTransportResponse(HttpRequest("GET", "https://test-search.search.windows.net/indexes"), answer)
    error_type = ClientAuthenticationError if status == 401 else HttpResponseError
    return error_type(response=response)


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The last line on stderr, after checking it is the whole of the error: no traceback."""
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error.splitlines()[-1]


def test_rerun_of_an_index_over_50_chunks_sends_nothing(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path
) -> None:
    """The service answers 50 results unless asked for more: every stored chunk must be seen."""
    pizzas = {f"pizza-{n}.md": f"# Pizza {n}\n\nBake number {n}.\n" for n in range(60)}
    docs = write_documents(tmp_path / "docs", pizzas)
    assert main([str(docs), "--target", "azure"]) == 0
    assert len(azure_index.documents) == 60
    azure_index.calls.clear()

    assert main([str(docs), "--target", "azure"]) == 0
    assert not [call for call in azure_index.calls if call[0] in ("upload", "delete")], "unchanged: nothing sent"


def test_a_refused_upload_deletes_nothing(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """New chunks go in before stale ones are deleted: when they do not, the old ones stay."""
    docs = write_documents(tmp_path / "docs")
    assert main([str(docs), "--target", "azure"]) == 0
    before = dict(azure_index.documents)
    (docs / "mushroom-pineapple.md").write_text("# Mushroom and pineapple pizza\n\nNow one section only.\n")
    azure_index.refuse_status = 400
    azure_index.calls.clear()

    assert main([str(docs), "--target", "azure"]) == 2
    assert last_line(capsys) == (
        "ingest: Azure AI Search refused 1 documents (HTTP 400: Document contains a field that is not in the index.)."
    )
    assert not [call for call in azure_index.calls if call[0] == "delete"]
    assert azure_index.documents == before
    assert azure_index.pauses == [], "a refusal is not retried"


def test_throttled_documents_are_retried_with_no_pause_after_the_last_attempt(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_index.throttle_next = 1_000
    assert main([str(write_documents(tmp_path / "docs")), "--target", "azure"]) == 2
    assert azure_index.pauses == [1, 2, 4], "four attempts, three pauses between them"
    assert last_line(capsys) == (
        "ingest: Azure AI Search was still busy with 5 documents after 4 attempts; run ingest again to send them."
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            ServiceRequestError("Cannot connect to host test-search.search.windows.net:443"),
            "ingest: Azure AI Search could not be reached (ServiceRequestError).",
        ),
        (
            http_error(400, "InvalidRequestParameter", "The index name is invalid.\nMore lines."),
            "ingest: Azure AI Search answered HTTP 400: (InvalidRequestParameter) The index name is invalid.",
        ),
        (
            ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included credentials.\nAttempted: ..."
            ),
            "ingest: could not sign in to Azure: run `azd auth login` (or `az login`); "
            "AZURE_CLIENT_ID selects a managed identity instead",
        ),
    ],
    ids=["unreachable", "bad request", "not signed in"],
)
def test_azure_errors_are_one_line_and_exit_2(
    azure_index: AzureIndex,
    embedding_script: EmbeddingScript,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    message: str,
) -> None:
    azure_index.get_index_errors.append(error)
    assert main([str(write_documents(tmp_path / "docs")), "--target", "azure"]) == 2
    assert last_line(capsys) == message
    assert azure_index.pauses == [], "only 401 and 403 are waited out"


SEARCH_ROLES = (
    "assign 'Search Index Data Contributor' (and 'Search Service Contributor' to create the index) "
    "to the signed-in user"
)


def test_a_403_from_search_is_waited_out_while_the_roles_apply(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_index.get_index_errors += [http_error(403), http_error(403)]
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    assert main([str(write_documents(tmp_path / "docs")), "--target", "azure"], sleep=sleep) == 0
    assert pauses == [5, 10], "backoff"
    assert len(azure_index.documents) == 5
    retries = [line for line in capsys.readouterr().err.splitlines() if "retrying" in line]
    assert retries[0] == (
        "ingest: 403 from Azure AI Search: new role assignments take minutes to apply; "
        "retrying in 5 s (300 s left of --auth-wait-seconds)"
    )


def test_a_403_that_outlasts_the_wait_names_the_missing_role(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_index.get_index_errors += [http_error(403) for _ in range(20)]
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    docs = str(write_documents(tmp_path / "docs"))
    assert main([docs, "--target", "azure", "--auth-wait-seconds", "60"], sleep=sleep) == 2
    assert pauses == [5, 10, 20, 25], "bounded: the pauses add up to the time given"
    assert last_line(capsys) == f"ingest: 403 from Azure AI Search: {SEARCH_ROLES} (still refused after waiting 60 s)"
    assert embedding_script.calls == [], "nothing embedded before the index answers"


def test_a_401_from_azure_openai_names_its_role(
    azure_index: AzureIndex,
    embedding_script: EmbeddingScript,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Azure OpenAI answers 401 (PermissionDenied) to a token whose principal lacks the role."""

    async def refuse(**kwargs: object) -> None:
        request = httpx2.Request("POST", "https://test-openai.openai.azure.com/openai/deployments/x/embeddings")
        body = {"code": "PermissionDenied", "message": "The principal lacks the required data action."}
        raise openai.AuthenticationError("denied", response=httpx2.Response(401, request=request), body=body)

    monkeypatch.setattr(embedding_script, "create", refuse)
    docs = str(write_documents(tmp_path / "docs"))
    assert main([docs, "--target", "azure", "--auth-wait-seconds", "0"]) == 2
    expected = "ingest: 401 from Azure OpenAI: assign 'Cognitive Services OpenAI User' to the signed-in user"
    assert last_line(capsys) == expected
    assert azure_index.documents == {}


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf"])
def test_the_wait_is_a_finite_number_of_seconds(seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["docs", "--auth-wait-seconds", seconds])
    assert exited.value.code == 2
    assert "--auth-wait-seconds must be a number of seconds, 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    "names",
    [["pizza|dough.md", "it's.md", "plain.md"], ["a|b,c;d.md", "plain.md"]],
    ids=["delimiter in a name", "every delimiter in a name"],
)
def test_rerun_finds_documents_whatever_their_names_hold(
    azure_index: AzureIndex, embedding_script: EmbeddingScript, tmp_path: Path, names: list[str]
) -> None:
    docs = write_documents(tmp_path / "docs", {name: f"# {name}\n\nText of {name}.\n" for name in names})
    assert main([str(docs), "--target", "azure"]) == 0
    assert len(azure_index.documents) == len(names)
    azure_index.calls.clear()

    assert main([str(docs), "--target", "azure"]) == 0
    assert not [call for call in azure_index.calls if call[0] in ("upload", "delete")], "unchanged: nothing sent"

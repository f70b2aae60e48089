"""python -m chat.doctor against real servers: the local stack, the simulated upstream, a buffering proxy.

Azure services are reached through the SDKs as in production: Azure OpenAI calls go over HTTP to
the simulated upstream (it serves the Azure paths) with a fake credential; Azure AI Search is
replaced at the SDK boundary (SearchIndexClient.get_index, SearchClient.get_document_count).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import uvicorn
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.search.documents.aio import SearchClient
from azure.search.documents.indexes.aio import SearchIndexClient
from azure.search.documents.indexes.models import SearchIndex
from openai.resources.chat.completions import AsyncCompletions

from chat.doctor import configuration, environment
from chat.doctor.__main__ import main
from chat.doctor.configuration import check_configuration
from chat.doctor.deployment import judge_auth
from chat.doctor.report import Check, exit_code
from chat.localstack import free_port, running
from chat.providers.azure_search import index_schema
from chat.settings import PROJECT_ROOT, get_settings
from tests.conftest import LocalStack, child_environment, host_server

IDENTITY_CLAIMS = {"upn": "alice@contoso.com", "oid": "11111111-2222-3333-4444-555555555555"}
EMBEDDING_DIMENSIONS = 384  # what benchmarks/upstream.py makes


def jwt(claims: dict[str, str]) -> str:
    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


class FakeCredential:
    """An async token credential (azure.core protocol) that hands out a token naming ``claims``."""

    def __init__(self, claims: dict[str, str] | None = IDENTITY_CLAIMS) -> None:
        self._claims = claims
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes += scopes
        if self._claims is None:
            raise RuntimeError("no account is signed in")
        return AccessToken(jwt(self._claims), 2_000_000_000)

    async def close(self) -> None:
        return None


def run_doctor(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chat.doctor", "--source", "environment", *args]
    return subprocess.run(command, env=environment, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def lines_of(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(status)]


# --- the configuration, as a user runs it ------------------------------------------------------------


def test_local_configuration_against_running_servers_passes(local_stack: LocalStack) -> None:
    environment = local_stack.environment(
        LOCAL_EMBEDDING_MODEL="multilingual-e5-small-q4",
    )
    done = run_doctor(environment=environment)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [
        "ok   settings",
        "ok   chat model",
        "ok   embedding model",
        "ok   local index",
    ]
    assert f"{local_stack.index_path}: " in done.stdout and "embedded with multilingual-e5-small-q4" in done.stdout


def test_an_unreachable_endpoint_is_named_and_fails(local_stack: LocalStack) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    environment = local_stack.environment(LOCAL_OPENAI_ENDPOINT=closed)
    done = run_doctor(environment=environment)
    assert done.returncode == 1
    [failure] = lines_of(done.stdout, "FAIL")
    assert failure.startswith(f"FAIL chat model: cannot reach {closed} (the local model server)")
    assert "fix: check the endpoint setting" in done.stdout
    assert "ok   embedding model" in done.stdout


def doctor_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **environment: str
) -> tuple[int, str]:
    """main() in this process, with ``environment`` on top of the clean test environment."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    code = main(["--source", "environment"])
    return code, capsys.readouterr().out


def test_invalid_settings_fail_with_the_variables_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = doctor_in_process(monkeypatch, capsys, OPENAI_HOST="azure")
    assert code == 1
    assert output.startswith("FAIL settings: ")
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT", "AZURE_OPENAI_EMBEDDING_DEPLOYMENT"):
        assert name in output


def test_a_missing_local_index_fails_with_the_ingest_command(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    upstream = f"{local_stack.upstream_url}/v1"
    absent = tmp_path / "absent.sqlite"
    code, output = doctor_in_process(
        monkeypatch,
        capsys,
        LOCAL_OPENAI_ENDPOINT=upstream,
        LOCAL_EMBEDDING_ENDPOINT=upstream,
        LOCAL_INDEX_PATH=str(absent),
    )
    assert code == 1
    assert lines_of(output, "FAIL") == [
        f"FAIL local index: {absent}: There is no local index yet. Run: python -m chat.ingest data/docs"
        " (LOCAL_EMBEDDING_MODEL=multilingual-e5-small-q4)"
    ]
    assert "fix: python -m chat.ingest data/docs --prune" in output


# --- Azure mode: tokens, deployments, index, roles ----------------------------------------------------


@pytest.fixture
def azure_doctor(monkeypatch: pytest.MonkeyPatch, local_stack: LocalStack) -> FakeCredential:
    """Azure mode with Azure OpenAI served by the simulated upstream and a signed-in fake identity."""
    values = {
        "OPENAI_HOST": "azure",
        "SEARCH_HOST": "azure",
        "AZURE_OPENAI_ENDPOINT": local_stack.upstream_url,
        "AZURE_OPENAI_CHAT_DEPLOYMENT": "chat",
        "AZURE_OPENAI_EMBEDDING_DEPLOYMENT": "embedding",
        "AZURE_SEARCH_ENDPOINT": "https://search.example.search.windows.net",
        "AZURE_SEARCH_INDEX": "documents",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    credential = FakeCredential()
    monkeypatch.setattr(configuration, "azure_credential", lambda identity: credential)
    return credential


def search_service(monkeypatch: pytest.MonkeyPatch, *, index: SearchIndex | Exception, count: int | Exception) -> None:
    async def get_index(self: SearchIndexClient, name: str, **kwargs: Any) -> SearchIndex:
        if isinstance(index, Exception):
            raise index
        return index

    async def get_document_count(self: SearchClient, **kwargs: Any) -> int:
        if isinstance(count, Exception):
            raise count
        return count

    monkeypatch.setattr(SearchIndexClient, "get_index", get_index)
    monkeypatch.setattr(SearchClient, "get_document_count", get_document_count)


def http_error(status: int) -> HttpResponseError:
    response = httpx.Response(status, request=httpx.Request("GET", "https://search.example.search.windows.net"))
    error = HttpResponseError(message=f"HTTP {status}")
    error.status_code = response.status_code
    return error


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


async def test_a_working_azure_configuration_passes_every_check(
    azure_doctor: FakeCredential, monkeypatch: pytest.MonkeyPatch
) -> None:
    search_service(monkeypatch, index=index_schema("documents", EMBEDDING_DIMENSIONS), count=42)
    checks = by_name(await check_configuration("test"))
    assert {name: check.status for name, check in checks.items()} == {
        "settings": "ok",
        "token for Cognitive Services": "ok",
        "token for Search": "ok",
        "chat model": "ok",
        "embedding model": "ok",
        "search index": "ok",
        "search documents": "ok",
    }
    # the token check asked for both scopes, and the OpenAI client used the credential for its calls
    assert set(azure_doctor.scopes) == {
        "https://cognitiveservices.azure.com/.default",
        "https://search.azure.com/.default",
    }
    assert azure_doctor.scopes.count("https://cognitiveservices.azure.com/.default") > 1
    assert "alice@contoso.com (object id 11111111-2222-3333-4444-555555555555)" in checks["token for Search"].detail
    assert f"{EMBEDDING_DIMENSIONS}-dimension" in checks["embedding model"].detail
    assert checks["search documents"].detail == "42 chunks in 'documents'"


async def test_missing_roles_name_the_role_and_the_identity(
    azure_doctor: FakeCredential, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: AsyncCompletions, **kwargs: Any) -> Any:
        request = httpx2.Request("POST", "https://example.openai.azure.com/openai/deployments/chat/chat/completions")
        raise openai.PermissionDeniedError("denied", response=httpx2.Response(403, request=request), body=None)

    monkeypatch.setattr(AsyncCompletions, "create", refused)
    search_service(monkeypatch, index=index_schema("documents", EMBEDDING_DIMENSIONS), count=http_error(403))
    checks = by_name(await check_configuration("test"))
    identity = "alice@contoso.com (object id 11111111-2222-3333-4444-555555555555)"
    assert checks["chat model"].status == "fail"
    assert checks["chat model"].detail == f"403 from Azure OpenAI: assign Cognitive Services OpenAI User to {identity}"
    assert checks["embedding model"].status == "ok"
    assert (
        checks["search documents"].detail == f"403 from Azure AI Search: assign Search Index Data Reader to {identity}"
    )
    assert "az role assignment create" in checks["search documents"].fix


async def test_index_problems_are_explained(azure_doctor: FakeCredential, monkeypatch: pytest.MonkeyPatch) -> None:
    search_service(monkeypatch, index=ResourceNotFoundError("no index"), count=0)
    [missing] = [check for check in await check_configuration("test") if check.name == "search index"]
    assert missing.status == "fail" and "has no index 'documents'" in missing.detail
    assert "python -m chat.ingest data/docs --target azure" in missing.fix

    old = index_schema("documents", EMBEDDING_DIMENSIONS)
    old.fields = [field for field in old.fields if field.name != "content_hash"]
    search_service(monkeypatch, index=old, count=3)
    [lacking] = [check for check in await check_configuration("test") if check.name == "search index"]
    assert lacking.detail == "index 'documents' lacks the fields content_hash"

    search_service(monkeypatch, index=index_schema("documents", 1536), count=3)
    [mismatch] = [check for check in await check_configuration("test") if check.name == "search index"]
    assert mismatch.detail == (
        f"index 'documents' holds 1536-dimension vectors, the embedding model makes {EMBEDDING_DIMENSIONS}"
    )


async def test_no_token_fails_and_skips_the_services(
    azure_doctor: FakeCredential, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(configuration, "azure_credential", lambda identity: FakeCredential(None))
    checks = await check_configuration("test")
    assert [(check.name, check.status) for check in checks] == [
        ("settings", "ok"),
        ("token for Cognitive Services", "fail"),
        ("token for Search", "fail"),
        ("services", "skip"),
    ]
    assert "no account is signed in" in checks[1].detail and "azd auth login" in checks[1].fix


def test_the_azd_environment_is_used_when_the_shell_sets_no_azure_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {
        "OPENAI_HOST": "azure",
        "AZURE_OPENAI_ENDPOINT": "https://from-azd.openai.azure.com",
        "AZURE_OPENAI_CHAT_DEPLOYMENT": "chat",
        "AZURE_OPENAI_EMBEDDING_DEPLOYMENT": "embedding",
    }
    azd = tmp_path / "azd"
    lines = "".join(f"echo '{name}=\"{value}\"'\n" for name, value in {**values, "UNRELATED": "x"}.items())
    azd.write_text(f"#!/bin/sh\n{lines}")
    azd.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path), prepend=":")
    for name in values:  # recorded, so that what load_configuration sets is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    get_settings.cache_clear()

    assert environment.load_configuration("environment") == "from the environment"
    assert environment.load_configuration("auto") == "from the azd environment: 4 variables"
    assert get_settings().azure_openai.azure_openai_endpoint == "https://from-azd.openai.azure.com"


# --- a deployed app: the local host stands in for it ------------------------------------------------


def test_the_local_host_passes_with_an_anonymous_warning(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", local_stack.url]) == 0
    output = capsys.readouterr().out
    assert [line.split(":")[0] for line in output.splitlines() if not line.startswith("     fix")] == [
        "ok   health",
        "ok   page",
        "skip CORS",
        "WARN auth mode",
        "ok   streaming",
    ]
    assert "incremental" in output
    assert main(["--url", local_stack.url, "--strict"]) == 1


def test_cors_for_an_origin(local_stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", local_stack.url, "--origin", "https://page.example"]) == 1
    assert "FAIL CORS: the preflight from https://page.example got no Access-Control-Allow-Origin" in (
        capsys.readouterr().out
    )
    (tmp_path / "none.json").write_text(json.dumps({"Host": {"CORS": "https://page.example"}}))
    upstream = f"{local_stack.upstream_url}/v1"
    environment = child_environment(
        LOCAL_OPENAI_ENDPOINT=upstream, LOCAL_EMBEDDING_ENDPOINT=upstream, LOCAL_INDEX_PATH=str(local_stack.index_path)
    )
    host, url = host_server(tmp_path, environment, ready_path="/")
    with running([host]):
        assert main(["--url", url, "--origin", "https://page.example"]) == 0
    assert "ok   CORS: a page on https://page.example may call the API" in capsys.readouterr().out


class BufferingProxy:
    """A reverse proxy on 127.0.0.1 that reads the app's whole response before sending any of it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", interface="asgi3"
        )
        self.server = uvicorn.Server(config)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.lower() != b"host"]
        async with httpx.AsyncClient(timeout=60) as client:
            url = f"{self.target}{scope['path']}"
            response = await client.request(scope["method"], url, headers=headers, content=body)
        passed = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() != "content-length"]
        passed += [(b"content-length", str(len(response.content)).encode()), (b"via", b"1.1 buffering-test-proxy")]
        await send({"type": "http.response.start", "status": response.status_code, "headers": passed})
        await send({"type": "http.response.body", "body": response.content})

    def __enter__(self) -> BufferingProxy:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def buffering_proxy(local_stack: LocalStack) -> Iterator[BufferingProxy]:
    with BufferingProxy(local_stack.url) as proxy:
        yield proxy


def test_a_buffering_proxy_is_named_with_the_fix(
    buffering_proxy: BufferingProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", buffering_proxy.url]) == 1
    output = capsys.readouterr().out
    [failure] = lines_of(output, "FAIL")
    assert failure.startswith("FAIL streaming: ")
    assert "all at once, so the proxy '1.1 buffering-test-proxy' (its Via header) buffers the stream" in failure
    assert "proxy_buffering off" in output


# --- verdicts that need no server ------------------------------------------------------------------


def response(status: int, **headers: str) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, request=httpx2.Request("POST", "https://app.example/api/chat"))


@pytest.mark.parametrize(
    ("answer", "easy_auth", "status", "mode"),
    [
        (response(400), False, "warn", "anonymous"),
        (response(401, **{"www-authenticate": 'Bearer realm="app.example"'}), True, "ok", "entra"),
        (
            response(302, location="https://app.example/.auth/login/aad?post_login_redirect_uri=/api/chat"),
            True,
            "ok",
            "entra",
        ),
        (response(401), True, "ok", "entra"),
        (response(403), True, "ok", "entra"),
        (response(401), False, "ok", "keys"),
        (response(404), False, "fail", "404"),
        (response(500), False, "fail", "/api/chat answered HTTP 500"),
    ],
)
def test_the_auth_mode_is_read_from_the_answer_to_an_anonymous_call(
    answer: httpx2.Response, easy_auth: bool, status: str, mode: str
) -> None:
    check = judge_auth(answer, easy_auth=easy_auth)
    assert check.status == status
    assert check.detail.startswith(mode)


def test_exit_codes() -> None:
    passing, warning, failing = Check("a", "ok", ""), Check("b", "warn", "", "x"), Check("c", "fail", "", "y")
    assert exit_code([passing, Check("s", "skip", "")], strict=True) == 0
    assert exit_code([passing, warning], strict=False) == 0
    assert exit_code([passing, warning], strict=True) == 1
    assert exit_code([passing, failing], strict=False) == 1


async def test_every_failure_carries_its_fix() -> None:
    checks = await check_configuration("test")  # local mode, with nothing listening (clean_environment)
    failures = [check for check in checks if check.status == "fail"]
    assert [check.name for check in failures] == ["chat model", "embedding model", "local index"]
    assert all(check.fix for check in failures)

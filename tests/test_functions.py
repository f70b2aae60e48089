"""The function app itself: its route table, and its handlers called with real starlette Requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message

import function_app
from chat.http.devserver import http_functions
from tests.sdk_fakes import ChatScript, EmbeddingScript

QUESTION = {"messages": [{"role": "user", "content": "Which pizza has mushroom and pineapple?"}]}


def make_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Request:
    """A real starlette Request, as the http-fastapi extension hands it to a function."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": method, "path": path, "headers": raw_headers, "query_string": b""}
    return Request(scope, receive)


def handler(name: str) -> Callable[[Request], Awaitable[Response]]:
    [function] = [f for f in http_functions(function_app.app) if f.name == name]
    return function.handler


async def body_of(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[misc]
    return bytes(response.body)


def test_route_table() -> None:
    """What app.get_functions() indexes, as the Functions host would see it."""
    table = {f.name: (f.route, f.methods, f.auth_level) for f in http_functions(function_app.app)}
    assert table == {
        "chat_stream": ("api/chat/stream", ("POST",), "anonymous"),
        "chat": ("api/chat", ("POST",), "anonymous"),
        "health": ("api/health", ("GET",), "anonymous"),
        "health_details": ("api/health/details", ("GET",), "anonymous"),
        "chat_page": ("chat", ("GET",), "anonymous"),
        "page": ("/", ("GET",), "anonymous"),
        "assets": ("assets/{*path}", ("GET",), "anonymous"),
    }


def test_function_json_is_what_the_host_indexes() -> None:
    """Streaming needs the http-fastapi extension's types; routes carry "api/" since routePrefix is ""."""
    import json

    host = json.loads((Path(function_app.__file__).parent / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
    for function in http_functions(function_app.app):
        annotations = function.handler.__annotations__
        assert annotations["req"] == "Request" and annotations["return"] == "Response", function.name


async def test_stream_handler_returns_an_ndjson_stream(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    request = make_request(
        "POST", "/api/chat/stream", orjson.dumps(QUESTION), {"content-type": "application/json; charset=utf-8"}
    )
    response = await handler("chat_stream")(request)

    assert isinstance(response, StreamingResponse)
    assert response.status_code == 200
    assert response.media_type == "application/x-ndjson"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    lines = [orjson.loads(line) for line in (await body_of(response)).splitlines()]
    assert all("delta" in line for line in lines)
    assert lines[0]["delta"] == {"role": "assistant"}
    assert lines[0]["context"]["stage"]["name"] == "question"
    assert lines[-1]["finishReason"] == "stop"


async def test_json_handler_answers_once(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    request = make_request("POST", "/api/chat", orjson.dumps(QUESTION), {"content-type": "application/json"})
    response = await handler("chat")(request)
    answer = orjson.loads(await body_of(response))
    assert response.status_code == 200
    assert answer["message"] == {"role": "assistant", "content": "".join(chat_script.answer_pieces)}
    assert [stage["name"] for stage in answer["context"]["stages"]] == ["question", "query", "search", "answer"]


async def test_health_details_report_each_provider(local_index: Path, client: httpx.AsyncClient) -> None:
    # The local model servers are not running in this test: chat and embeddings do not answer.
    response = await client.get("/api/health/details")
    assert response.status_code == 503
    health = response.json()
    assert health["status"] == "unavailable"
    assert set(health["providers"]) == {"chat", "embeddings", "search"}
    assert health["providers"]["search"]["ok"] is True
    assert health["providers"]["search"]["detail"] == "5 chunks"  # 4 documents; the mushroom one has two sections
    assert health["providers"]["chat"]["ok"] is False


async def test_health_is_status_only(local_index: Path, client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_health_is_200_when_everything_answers(
    local_index: Path, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def models(client: Any) -> str:
        return "1 models"

    monkeypatch.setattr("chat.services.list_models", models)
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    details = await client.get("/api/health/details")
    assert details.status_code == 200
    assert all(provider["ok"] for provider in details.json()["providers"].values())


async def test_misconfiguration_is_503_naming_the_variables(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.settings import get_settings

    monkeypatch.setenv("OPENAI_HOST", "azure")
    get_settings.cache_clear()
    response = await client.post("/api/chat/stream", json=QUESTION)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_configured"
    assert "AZURE_OPENAI_ENDPOINT" in error["message"]
    assert "azure" not in error["message"].replace("AZURE_", ""), "names, never values"
    health = await client.get("/api/health")
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable"}
    details = await client.get("/api/health/details")
    assert details.status_code == 503
    assert "AZURE_OPENAI_ENDPOINT" in details.json()["error"]["message"]


async def test_page_and_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text
    named = await client.get("/chat")
    assert named.status_code == 200 and named.text == page.text, "the named route serves the same page"
    assert named.headers["content-security-policy"] == page.headers["content-security-policy"]
    for path in ("/assets/../function_app.py", "/assets/%2e%2e/%2e%2e/host.json", "/assets/..%2fweb.py"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "routePrefix" not in response.text and "import" not in response.text
    missing = await client.get("/assets/missing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"

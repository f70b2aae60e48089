"""Bad input gets 400/413/415 and {"error": {"code", "message"}}: never a 500, a trace or an echo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from chat.settings import get_settings
from tests.sdk_fakes import ChatScript, EmbeddingScript

ROUTES = ["/api/chat", "/api/chat/stream"]
SECRET = "sk-do-not-echo-this-0123456789"
USER = {"role": "user", "content": "hello"}
JSON = "application/json"
INVALID = "invalid_request"


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


CASES: list[tuple[str, bytes, str, int, str]] = [
    # name, body, content type, status, code
    ("malformed json", b'{"messages": [', JSON, 400, "invalid_json"),
    ("invalid utf-8", b'{"messages": "\xff\xfe"}', JSON, 400, "invalid_json"),
    ("deep nesting", b"[" * 1500 + b"]" * 1500, JSON, 400, "invalid_json"),
    ("not an object", b"[1, 2]", JSON, 400, INVALID),
    (
        "deep session state",
        b'{"messages": [{"role": "user", "content": "hi"}], "sessionState": ' + b"[" * 300 + b"]" * 300 + b"}",
        JSON,
        400,
        INVALID,
    ),
    (
        "deep context",
        b'{"messages": [{"role": "user", "content": "hi"}], "context": ' + b'{"a":' * 100 + b"1" + b"}" * 101,
        JSON,
        400,
        INVALID,
    ),
    ("wrong content type", body(messages=[USER]), "text/plain", 415, "unsupported_media_type"),
    ("form content type", b"messages=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("missing messages", body(context={}), JSON, 400, INVALID),
    ("empty messages", body(messages=[]), JSON, 400, INVALID),
    ("messages not a list", body(messages="hi"), JSON, 400, INVALID),
    ("system role", body(messages=[{"role": "system", "content": SECRET}, USER]), JSON, 400, INVALID),
    ("unknown role", body(messages=[{"role": "tool", "content": "x"}, USER]), JSON, 400, INVALID),
    ("last from assistant", body(messages=[USER, {"role": "assistant", "content": "x"}]), JSON, 400, INVALID),
    ("empty last message", body(messages=[{"role": "user", "content": "  "}]), JSON, 400, INVALID),
    ("content parts list", body(messages=[{"role": "user", "content": [{"type": "text"}]}]), JSON, 400, INVALID),
    ("missing content", body(messages=[{"role": "user"}]), JSON, 400, INVALID),
    ("message too long", body(messages=[{"role": "user", "content": "x" * 201}]), JSON, 400, INVALID),
    ("too many messages", body(messages=[USER] * 7), JSON, 400, INVALID),
    ("body too large", body(messages=[USER], sessionState="y" * 5000), JSON, 413, "body_too_large"),
    ("top not a number", body(messages=[USER], context={"overrides": {"top": "many"}}), JSON, 400, INVALID),
    ("top out of range", body(messages=[USER], context={"overrides": {"top": 0}}), JSON, 400, INVALID),
    ("temperature too hot", body(messages=[USER], context={"overrides": {"temperature": 9}}), JSON, 400, INVALID),
    (
        "unknown retrieval mode",
        body(messages=[USER], context={"overrides": {"retrievalMode": SECRET}}),
        JSON,
        400,
        INVALID,
    ),
    ("overrides not an object", body(messages=[USER], context={"overrides": [1]}), JSON, 400, INVALID),
    ("top above CHAT_MAX_TOP", body(messages=[USER], context={"overrides": {"top": 11}}), JSON, 400, INVALID),
    ("semantic ranker on", body(messages=[USER], context={"overrides": {"semanticRanker": True}}), JSON, 400, INVALID),
]


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_MAX_MESSAGES", "6")
    monkeypatch.setenv("CHAT_MAX_MESSAGE_CHARS", "200")
    monkeypatch.setenv("CHAT_MAX_BODY_BYTES", "4096")
    get_settings.cache_clear()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("name", "payload", "content_type", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input(
    client: httpx.AsyncClient, route: str, name: str, payload: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.post(route, content=payload, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert 10 < len(error["message"]) < 400
    assert SECRET not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("system role", "role 'system' is set by the server"),
        ("last from assistant", "the last message must be from the user"),
        ("message too long", "messages.0.content: content is longer than 200 characters"),
        ("deep session state", "deeper than 64 levels"),
        ("top above CHAT_MAX_TOP", "context.overrides.top: top is larger than 10"),
        ("semantic ranker on", "does not let requests turn the semantic ranker on"),
    ],
)
async def test_messages_name_the_problem(client: httpx.AsyncClient, name: str, phrase: str) -> None:
    [payload] = [case[1] for case in CASES if case[0] == name]
    response = await client.post("/api/chat", content=payload, headers={"content-type": JSON})
    assert phrase in response.json()["error"]["message"]


async def test_body_too_large_without_content_length(client: httpx.AsyncClient) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    response = await client.post("/api/chat/stream", content=chunked(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("route", ROUTES)
async def test_unknown_keys_are_ignored_and_session_state_echoed(
    client: httpx.AsyncClient,
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    route: str,
) -> None:
    payload = {
        "messages": [{"role": "user", "content": "mushroom pizza?", "name": "ignored"}],
        "context": {"overrides": {"top": 2, "futureOption": True}, "somethingNew": 1},
        "sessionState": {"conversation": "abc"},
        "extraTopLevel": [1, 2, 3],
    }
    response = await client.post(route, json=payload)
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines[-1]["sessionState"] == {"conversation": "abc"}


@pytest.mark.parametrize(
    ("environment", "overrides"),
    [
        ({}, {"top": 10, "semanticRanker": False}),  # within the bound; turning the ranker off costs nothing
        ({"CHAT_MAX_TOP": "20", "CHAT_ALLOW_SEMANTIC_RANKER_OVERRIDE": "true"}, {"top": 20, "semanticRanker": True}),
    ],
)
async def test_costly_overrides_pass_where_the_settings_allow_them(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    environment: dict[str, str],
    overrides: dict[str, Any],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    payload = {"messages": [USER], "context": {"overrides": overrides}}
    response = await client.post("/api/chat", json=payload)
    assert response.status_code == 200, response.text

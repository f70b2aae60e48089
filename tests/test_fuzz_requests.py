"""Property-based bad input: whatever the body, the answer is 2xx or 4xx with the error shape, never 5xx.

The larger run (thousands of bodies against the local host over loopback) is
`python -m benchmarks.fuzz`; this one runs in-process in every test run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.settings import get_settings
from tests.sdk_fakes import ChatScript, EmbeddingScript

ROUTES = ["/api/chat", "/api/chat/stream"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
roles = st.sampled_from(["user", "assistant", "system", "tool", "", "USER"]) | st.text(max_size=8) | json_values
messages = st.lists(
    st.fixed_dictionaries({"role": roles, "content": st.text(max_size=50) | json_values})
    | st.dictionaries(st.sampled_from(["role", "content", "name"]), json_values, max_size=3),
    max_size=5,
)
overrides = st.dictionaries(
    st.sampled_from(["top", "retrievalMode", "temperature", "suggestFollowupQuestions", "semanticRanker", "x"]),
    json_values | st.sampled_from(["text", "vectors", "hybrid"]) | st.integers(-5, 60),
    max_size=4,
)
near_valid = st.fixed_dictionaries(
    {"messages": messages},
    optional={
        "context": st.fixed_dictionaries({}, optional={"overrides": overrides}) | json_values,
        "sessionState": json_values,
    },
)


@pytest.fixture(autouse=True)
def no_client_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example is the same client: without this, all but the first few would get 429 and test nothing else."""
    monkeypatch.setenv("CHAT_REQUESTS_PER_MINUTE_PER_CLIENT", "100000")
    get_settings.cache_clear()


def encode(value: Any) -> bytes:
    """JSON text of any value, big integers included (json, not orjson, which stops at 64 bits)."""
    return json.dumps(value).encode()


bodies = st.one_of(
    near_valid.map(encode),
    json_values.map(encode),
    st.binary(max_size=200),
    st.integers(50, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(200_000, 400_000).map(
        lambda size: orjson.dumps({"messages": [{"role": "user", "content": "x" * size}]})
    ),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "", "multipart/form-data"]
)


def check(response: httpx.Response, route: str) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code != 429, "the per-client limits are tested in tests/test_security.py"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        assert error["code"] and error["message"]
        assert "Traceback" not in response.text
    elif route.endswith("/stream"):
        lines = [orjson.loads(line) for line in response.content.splitlines()]
        assert all("delta" in line for line in lines)
        assert lines[-1].get("finishReason") or lines[-1].get("error")
        assert (lines[-1].get("error") or {}).get("code") != "internal_error", "a bug, not bad input"
    else:
        assert response.json()["message"]["role"] == "assistant"


@pytest.mark.parametrize("route", ROUTES)
@FUZZ
@given(body=bodies, content_type=content_types)
async def test_any_body_gets_a_clean_answer(
    client: httpx.AsyncClient,
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    route: str,
    body: bytes,
    content_type: str,
) -> None:
    headers: dict[str, Any] = {"content-type": content_type} if content_type else {}
    check(await client.post(route, content=body, headers=headers), route)


def test_check_refuses_a_stream_that_ends_in_internal_error() -> None:
    """A 200 whose stream ends in internal_error is the server failing on the input: the fuzz test must see it."""
    lines = [{"delta": {"role": "assistant"}}, {"delta": {}, "error": {"code": "internal_error", "message": "x"}}]
    response = httpx.Response(200, content=b"\n".join(orjson.dumps(line) for line in lines))
    with pytest.raises(AssertionError, match="a bug, not bad input"):
        check(response, "/api/chat/stream")

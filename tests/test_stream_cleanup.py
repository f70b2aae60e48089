"""Issue 11 item 6: however sending fails, under ASGI spec 2.3 and 2.4, the pipeline and the upstream call close.

Starlette's StreamingResponse takes two paths: under spec 2.4 a failed send raises (OSError
becomes ClientDisconnect) straight out of the response; under 2.3 the response also listens
for ``http.disconnect`` in a task group, which cancels the streaming task when the client goes.
The real stream handler is driven here with a fake ASGI server whose ``send`` fails once the
answer is streaming, and with one whose client leaves mid-answer.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import orjson
import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from chat.http.ndjson import NdjsonStreamingResponse
from chat.services import get_services
from chat.settings import get_settings
from tests.sdk_fakes import ChatScript, EmbeddingScript
from tests.test_functions import QUESTION, handler, make_request

SPECS = ["2.3", "2.4"]


def scope(spec_version: str) -> dict[str, object]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "method": "POST"}


async def open_stream() -> NdjsonStreamingResponse:
    request = make_request("POST", "/api/chat/stream", orjson.dumps(QUESTION), {"content-type": "application/json"})
    response = await handler("chat_stream")(request)
    assert isinstance(response, NdjsonStreamingResponse)
    return response


async def never_disconnects() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.fixture
def slow_answer(chat_script: ChatScript) -> ChatScript:
    chat_script.answer_pieces = [f" word{n}" for n in range(50)]
    return chat_script


@pytest.mark.parametrize("spec_version", SPECS)
@pytest.mark.parametrize("failure", [OSError("connection reset"), RuntimeError("the server broke")], ids=repr)
async def test_a_failed_send_closes_the_pipeline_and_the_upstream_call(
    local_index: Path,
    embedding_script: EmbeddingScript,
    slow_answer: ChatScript,
    spec_version: str,
    failure: Exception,
) -> None:
    response = await open_stream()
    assert get_services().limiter.open_count("address:unknown") == 1
    sent: list[bytes] = []

    async def send(message: Message) -> None:
        body = message.get("body", b"")
        if b'"content"' in body:  # the first token: the answer is streaming from the upstream
            raise failure
        sent.append(body)

    # Under 2.4 starlette turns a send's OSError into ClientDisconnect; anything else goes up as it is.
    expected = ClientDisconnect if spec_version == "2.4" and isinstance(failure, OSError) else type(failure)
    with pytest.raises(expected):
        await response(scope(spec_version), never_disconnects, send)

    assert sent, "lines went out before the failure"
    assert response.body_iterator.ag_frame is None, "the line generator was closed"  # type: ignore[attr-defined]
    [upstream] = slow_answer.streams
    assert upstream.closed, "the upstream stub saw the close"
    assert get_services().limiter.open_count("address:unknown") == 0, "the client's slot is free again"


@pytest.mark.parametrize("spec_version", SPECS)
async def test_a_client_that_leaves_mid_answer_frees_everything(
    local_index: Path, embedding_script: EmbeddingScript, slow_answer: ChatScript, spec_version: str
) -> None:
    """The 2.3 path: http.disconnect arrives while tokens stream; the streaming task is cancelled."""
    response = await open_stream()
    token_sent = asyncio.Event()

    async def receive() -> Message:
        await token_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if b'"content"' in message.get("body", b""):
            token_sent.set()
            await asyncio.sleep(0.05)  # a slow client: the disconnect lands while a line is being sent
            if spec_version == "2.4":
                raise OSError("the client went away")

    if spec_version == "2.4":
        with pytest.raises(ClientDisconnect):
            await response(scope(spec_version), receive, send)
    else:
        await response(scope(spec_version), receive, send)  # cancelled quietly by the disconnect
    [upstream] = slow_answer.streams
    assert upstream.closed
    assert response.body_iterator.ag_frame is None  # type: ignore[attr-defined]
    assert get_services().limiter.open_count("address:unknown") == 0


async def test_open_answers_per_client_answer_429_until_one_ends(
    local_index: Path, embedding_script: EmbeddingScript, chat_script: ChatScript, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_MAX_STREAMS_PER_CLIENT", "1")
    get_settings.cache_clear()
    first = await open_stream()  # admitted: it holds the slot until its response has run
    request = make_request("POST", "/api/chat/stream", orjson.dumps(QUESTION), {"content-type": "application/json"})
    refused = await handler("chat_stream")(request)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert orjson.loads(bytes(refused.body))["error"]["code"] == "too_many_requests"

    async def send(message: Message) -> None:
        return None

    await first(scope("2.4"), never_disconnects, send)
    second = await open_stream()
    assert second.status_code == 200
    await second(scope("2.4"), never_disconnects, send)
    assert get_services().limiter.open_count("address:unknown") == 0


async def test_a_response_that_never_runs_gives_its_slot_back(
    local_index: Path, embedding_script: EmbeddingScript, chat_script: ChatScript
) -> None:
    """A host that drops the response without sending it (the client left first) must not keep the slot."""
    response = await open_stream()
    assert get_services().limiter.open_count("address:unknown") == 1
    del response
    gc.collect()
    assert get_services().limiter.open_count("address:unknown") == 0
    assert chat_script.streams == [], "the pipeline never started, so there was nothing upstream to close"

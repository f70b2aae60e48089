"""The server-sent events decoder against the specification's own examples and its edge cases,
and the streamed answer's handling of what a real upstream can send (SDK boundary, raw bytes)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from chat.errors import UpstreamError
from chat.providers.llm import StreamOutcome
from chat.providers.sse import SSEDecoder
from chat.services import get_services
from tests.sdk_fakes import ChatScript


def decode(*chunks: bytes) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def every_split(stream: bytes) -> list[list[bytes]]:
    """The stream cut into two network chunks at every possible place."""
    return [[stream[:cut], stream[cut:]] for cut in range(len(stream) + 1)]


# The examples of the WHATWG HTML specification, section "Server-sent events", 9.2.6.
SPEC_EXAMPLES = [
    (b"data: YHOO\ndata: +2\ndata: 10\n\n", [(b"message", b"YHOO\n+2\n10")]),
    (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [(b"message", b"first event"), (b"message", b"second event"), (b"message", b" third event")],
    ),
    # An empty "data" field gives an event with empty data; two give a newline; the last block,
    # not followed by a blank line, is discarded.
    (b"data\n\ndata\ndata\n\ndata:", [(b"message", b""), (b"message", b"\n")]),
    (b"data:test\n\ndata: test\n\n", [(b"message", b"test"), (b"message", b"test")]),
]


@pytest.mark.parametrize(("stream", "expected"), SPEC_EXAMPLES)
def test_the_specifications_examples(stream: bytes, expected: list[tuple[bytes, bytes]]) -> None:
    assert decode(stream) == expected


@pytest.mark.parametrize(("stream", "expected"), SPEC_EXAMPLES)
@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_every_line_ending_reads_the_same(stream: bytes, expected: list[tuple[bytes, bytes]], ending: bytes) -> None:
    assert decode(stream.replace(b"\n", ending)) == expected


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_any_split_between_network_chunks_reads_the_same(ending: bytes) -> None:
    stream = b'event: delta\ndata: {"a":\ndata: 1}\n\n: keep-alive\n\ndata: [DONE]\n\n'.replace(b"\n", ending)
    expected = [(b"delta", b'{"a":\n1}'), (b"message", b"[DONE]")]
    for chunks in every_split(stream):
        assert decode(*chunks) == expected, chunks


def test_a_crlf_split_between_chunks_is_one_line_ending() -> None:
    assert decode(b"data: a\r", b"\ndata: b\r\n\r", b"\n") == [(b"message", b"a\nb")]


def test_fields_comments_and_event_types() -> None:
    stream = (
        b": keep-alive\n"
        b"retry: 3000\n"
        b"id: 42\n"
        b"unknown: ignored\n"
        b"event: error\n"
        b"data: {}\n\n"
        b"event: only-a-type\n\n"  # no data: not dispatched, and the type does not leak on
        b"data: next\n\n"
    )
    assert decode(stream) == [(b"error", b"{}"), (b"message", b"next")]


def test_one_space_after_the_colon_is_dropped_not_more() -> None:
    assert decode(b"data:  two spaces\n\ndata:none\n\n") == [(b"message", b" two spaces"), (b"message", b"none")]


# --- The streamed answer over these bytes (AsyncCompletions.create replaced at the SDK boundary) ---


def chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return orjson.dumps(body)


async def streamed(chat_script: ChatScript, raw: list[bytes]) -> tuple[list[str], StreamOutcome]:
    chat_script.raw_sse = raw
    outcome = StreamOutcome()
    model = get_services().openai.chat
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "q"}]
    texts = [text async for text in model.stream(messages, temperature=0, max_tokens=10, outcome=outcome)]
    return texts, outcome


async def test_a_json_chunk_split_over_two_data_lines_is_read(chat_script: ChatScript, tmp_path: Path) -> None:
    first = b'data: {"object":"chat.completion.chunk",\ndata: "choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    texts, outcome = await streamed(
        chat_script, [first, b"data: " + chunk(None, "stop") + b"\n\n", b"data: [DONE]\n\n"]
    )
    assert texts == ["Hi"]
    assert outcome.finish_reason == "stop"


async def test_comments_and_crlf_from_a_proxy_are_harmless(chat_script: ChatScript) -> None:
    raw = [b": keep-alive\r\n\r\n", b"data: " + chunk("a") + b"\r\n\r", b"\ndata: " + chunk("b", "stop") + b"\r\n\r\n"]
    texts, outcome = await streamed(chat_script, [*raw, b"data: [DONE]\r\n\r\n"])
    assert texts == ["a", "b"]
    assert outcome.finish_reason == "stop"


async def test_an_error_event_ends_the_stream_with_a_typed_error(chat_script: ChatScript) -> None:
    raw = [b"data: " + chunk("a") + b"\n\n", b"event: error\ndata: whatever it holds\n\n"]
    with pytest.raises(UpstreamError) as raised:
        await streamed(chat_script, raw)
    assert raised.value.code == "upstream_unavailable"


@pytest.mark.parametrize("payload", [b"null", b"123", b"[1, 2]", b'"text"', b"{not json"])
async def test_a_payload_that_is_not_a_json_object_is_malformed(chat_script: ChatScript, payload: bytes) -> None:
    with pytest.raises(UpstreamError) as raised:
        await streamed(chat_script, [b"data: " + payload + b"\n\n"])
    assert raised.value.code == "upstream_malformed"


async def test_an_unfinished_last_event_is_not_read(chat_script: ChatScript) -> None:
    """The specification discards an event cut off by the end of the stream: the answer is incomplete."""
    with pytest.raises(UpstreamError) as raised:
        await streamed(chat_script, [b"data: " + chunk("a") + b"\n\n", b"data: " + chunk(None, "stop")])
    assert raised.value.code == "upstream_unavailable"

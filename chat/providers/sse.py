"""A server-sent events decoder that follows the specification (WHATWG HTML, "Server-sent events").

What the specification asks, and this does: lines end in CRLF, LF or a bare CR (also when a
CRLF is split between two network chunks); a line starting with ``:`` is a comment (servers
send ``: keep-alive``); ``field: value`` drops one space after the colon; a line without a
colon is a field with an empty value; an event's ``data`` lines are joined with ``\\n`` and
the event is dispatched at the blank line that ends it; an event with no data is not
dispatched; ``event`` names the type (default ``message``); ``id`` and ``retry`` are read and
have no use here (the SDK does not reconnect a chat completion); an event left unfinished at
the end of the stream is discarded.

Why not a library: the kept SSE parsers (httpx-sse, sse-starlette's client side, the openai
SDK's own decoder) expose their incremental decoders only as private API, and build a Python
object per event. This is the hot path of every streamed token, so it stays a small loop over
bytes that yields (event type, data) pairs; benchmarks/run.py measures its CPU per token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

MESSAGE = b"message"
_CR = b"\r"


class SSEDecoder:
    """Feed it the stream's bytes as they come; it returns the events each chunk completes."""

    __slots__ = ("_data", "_event", "_pending", "_skip_lf")

    def __init__(self) -> None:
        self._pending = b""  # an unfinished line
        self._data: list[bytes] = []
        self._event = b""
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one belongs to it

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if (
            # The common case, one whole one-line event per read, answered without splitting lines.
            chunk.startswith(b"data:")
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk.endswith(b"\n\n")
            and not (self._pending or self._data or self._event or self._skip_lf)
            and _CR not in chunk
        ):
            value = chunk[5:-2]
            return [(MESSAGE, value[1:] if value.startswith(b" ") else value)]
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if _CR in chunk:
            self._skip_lf = chunk.endswith(_CR)
            chunk = chunk.replace(b"\r\n", b"\n").replace(_CR, b"\n")
        lines = (self._pending + chunk if self._pending else chunk).split(b"\n")
        self._pending = lines.pop()
        events: list[tuple[bytes, bytes]] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append((self._event or MESSAGE, b"\n".join(self._data)))
                    self._data = []
                self._event = b""
            elif line.startswith(b"data:"):  # by far the most common line: checked first
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif not line.startswith(b":"):
                self._field(line)
        return events

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":  # "data" without a colon: an empty data line
            self._data.append(value)
        elif name == b"event":
            self._event = value
        # "id" and "retry" only matter for reconnecting, which a chat completion never does;
        # unknown fields are ignored, as the specification says.


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bytes]]:
    """The (event type, data) pairs of a server-sent event stream, as they complete."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event

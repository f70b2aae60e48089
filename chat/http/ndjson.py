"""Frame the pipeline's events as the NDJSON response: encoding, heartbeats, the error line, cleanup.

Once the first line is out the HTTP status is 200, so a failure can only be reported as one
last ``{"delta":{},"error":...}`` line; every path out of ``ndjson_lines`` ends the stream
with whole lines. The pipeline runs in the response's own task. How starlette notices a client that went away
depends on the server's ASGI version: under spec 2.3 it listens for ``http.disconnect`` and
cancels the task that streams; under 2.4 the failed ``send`` raises (OSError, turned into
ClientDisconnect). Neither path runs a response's background task, so the response closes the
line generator itself, in a ``finally`` around the whole response: whatever way the stream
ends, each generator closes the one it reads (``aclosing``), down to the upstream call, and
the caller's ``on_close`` (its per-client slot) runs once.

Heartbeats come from a timer rather than from a task that races each event against a
timeout: a slow model is rare, tokens are not, and the timer costs nothing per token.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from chat.errors import INTERNAL_ERROR_MESSAGE, ChatError
from chat.events import ChatEvent
from chat.protocol import HEARTBEAT_LINE, StreamEncoder, encode_error

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
# Every API response: browsers must not guess another type than the one declared.
API_HEADERS = {"X-Content-Type-Options": "nosniff"}
# Proxies must pass each line on as it comes; compression would buffer it.
STREAM_HEADERS = {**API_HEADERS, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def report(error: Exception) -> ChatError:
    """The client-facing error for ``error``, logged once with its cause (never its prompt or answer)."""
    if isinstance(error, ChatError):
        cause = error.__cause__
        logger.warning("chat failed: %s (%s)", error.code, type(cause).__name__ if cause else "no cause")
        return error
    logger.exception("chat failed unexpectedly", exc_info=error)
    return ChatError(INTERNAL_ERROR_MESSAGE)


async def ndjson_lines(events: AsyncGenerator[ChatEvent, None], session_state: Any) -> AsyncGenerator[bytes, None]:
    """One line per event, ending with the last event or with an error line."""
    encoder = StreamEncoder(session_state)
    try:
        async with aclosing(events):
            async for event in events:
                yield encoder.encode(event)
    except Exception as error:
        yield encode_error(report(error))


async def _send_heartbeat(send: Send) -> None:
    await send({"type": "http.response.body", "body": HEARTBEAT_LINE, "more_body": True})


class NdjsonStreamingResponse(StreamingResponse):
    """A StreamingResponse of NDJSON lines that sends a heartbeat line after ``heartbeat_seconds`` of silence.

    The heartbeat keeps proxies and Azure's load balancer (230 s idle limit) from closing a
    stream whose model is slow to answer. Sends from the timer and from the body cannot tear
    a line: each ASGI send writes one whole line.
    """

    def __init__(
        self,
        lines: AsyncGenerator[bytes, None],
        heartbeat_seconds: float,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(lines, media_type=NDJSON, headers=STREAM_HEADERS)
        self._lines = lines
        self._heartbeat_seconds = heartbeat_seconds
        # Runs once: when the response has run, or when it is dropped without ever running (a host
        # that gave up on the request), so a per-client slot is never held forever.
        self._on_close = weakref.finalize(self, on_close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                # Shielded: when the stream ends by cancellation, closing must still reach the upstream call.
                with anyio.CancelScope(shield=True):
                    await self._lines.aclose()
            finally:
                self._on_close()

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        interval = self._heartbeat_seconds
        last_sent = loop.time()
        beating: set[asyncio.Task[None]] = set()
        timer: asyncio.TimerHandle

        def beat() -> None:
            """Due since the last line: send a heartbeat (unless one is still on its way) and look again later."""
            nonlocal timer
            due = last_sent + interval
            if loop.time() < due:
                timer = loop.call_at(due, beat)
                return
            if not beating:
                task = loop.create_task(_send_heartbeat(send))
                beating.add(task)
                task.add_done_callback(beating.discard)
            timer = loop.call_later(interval, beat)

        timer = loop.call_later(interval, beat)
        try:
            async for line in self.body_iterator:
                last_sent = loop.time()
                await send({"type": "http.response.body", "body": line, "more_body": True})
        finally:
            timer.cancel()
            for task in beating:
                task.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

"""Turn the pipeline's events into the NDJSON byte stream: heartbeats, the error line, cleanup.

Once the first line is out the HTTP status is 200, so a failure can only be reported as one
last ``{"delta":{},"error":...}`` line; every path out of ``ndjson_stream`` ends the stream
with whole lines. The pipeline runs in its own task so the stream can send a heartbeat while
an upstream call is slow, and so that closing the stream (client gone) cancels that task,
which closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from chat.errors import INTERNAL_ERROR_MESSAGE, ChatError
from chat.events import ChatEvent
from chat.protocol import HEARTBEAT_LINE, StreamEncoder, encode_error

logger = logging.getLogger(__name__)

# Events the pipeline may run ahead of a slow client before it waits (backpressure).
PUMP_QUEUE_SIZE = 64


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_END = object()
_HEARTBEAT = object()


async def _pump(events: AsyncIterator[ChatEvent], queue: asyncio.Queue[object]) -> None:
    async with aclosing(events):  # type: ignore[type-var]  # async generators have aclose()
        try:
            async for event in events:
                await queue.put(event)
        except Exception as error:
            await queue.put(_Failed(error))
            return
    await queue.put(_END)


async def _with_heartbeats(events: AsyncIterator[ChatEvent], interval: float) -> AsyncIterator[object]:
    """The events, with ``_HEARTBEAT`` whenever ``interval`` seconds pass without one."""
    queue: asyncio.Queue[object] = asyncio.Queue(PUMP_QUEUE_SIZE)
    pump = asyncio.create_task(_pump(events, queue))
    try:
        while True:
            try:
                async with asyncio.timeout(interval):
                    item = await queue.get()
            except TimeoutError:
                yield _HEARTBEAT
                continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        pump.cancel()


def report(error: Exception) -> ChatError:
    """The client-facing error for ``error``, logged once with its cause (never its prompt or answer)."""
    if isinstance(error, ChatError):
        cause = error.__cause__
        logger.warning("chat failed: %s (%s)", error.code, type(cause).__name__ if cause else "no cause")
        return error
    logger.exception("chat failed unexpectedly", exc_info=error)
    return ChatError(INTERNAL_ERROR_MESSAGE)


async def ndjson_stream(
    events: AsyncIterator[ChatEvent], session_state: Any, heartbeat_seconds: float
) -> AsyncGenerator[bytes, None]:
    """The response body of ``/api/chat/stream``: one line per event, ending in success or an error line."""
    encoder = StreamEncoder(session_state)
    try:
        async for item in _with_heartbeats(events, heartbeat_seconds):
            yield HEARTBEAT_LINE if item is _HEARTBEAT else encoder.encode(item)  # type: ignore[arg-type]
    except Exception as error:
        yield encode_error(report(error))

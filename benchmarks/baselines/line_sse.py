"""The server-sent events reader main had before issue 11, kept only as benchmarks/sse_decode.py's yardstick.

It read one ``data:`` line per event and split on LF only: a subset of the specification.
"""

from __future__ import annotations

from collections.abc import AsyncIterator


async def line_sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a stream whose events are each one ``data:`` line."""
    pending = b""
    async for chunk in chunks:
        lines = (pending + chunk if pending else chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()

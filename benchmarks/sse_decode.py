"""CPU per streamed token of the server-sent events decoder, against the line reader it replaced.

    python -m benchmarks.sse_decode [--tokens 20000] [--repeats 7]

Both read the same bytes: an OpenAI-style chat stream, one event per network read (as a model
streaming token by token sends it), and again with several events per read (a burst). The
"before" reader is the subset parser main had until issue 11 (one ``data:`` line per event,
LF only), kept in benchmarks/baselines/line_sse.py as the yardstick. Prints the median
microseconds per event over the repeats, with the fastest and slowest in brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

import orjson

from benchmarks.baselines.line_sse import line_sse_data
from chat.providers.sse import MESSAGE, sse_events


def stream_bytes(tokens: int) -> list[bytes]:
    """One chat.completion.chunk event per token, then [DONE]."""
    events = []
    for number in range(tokens):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": f" word{number % 97}"}, "finish_reason": None}],
        }
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


async def _reads(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def _new(pieces: list[bytes]) -> int:
    count = 0
    async for event, _data in sse_events(_reads(pieces)):
        count += event == MESSAGE
    return count


async def _old(pieces: list[bytes]) -> int:
    count = 0
    async for _data in line_sse_data(_reads(pieces)):
        count += 1
    return count


def measure(reader: Callable[[list[bytes]], object], pieces: list[bytes], events: int, repeats: int) -> list[float]:
    timings = []
    for _ in range(repeats):
        started = time.process_time()
        asyncio.run(reader(pieces))  # type: ignore[arg-type]
        timings.append((time.process_time() - started) / events * 1e6)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    events = stream_bytes(args.tokens)
    bursts = [b"".join(events[start : start + 8]) for start in range(0, len(events), 8)]
    print(f"{args.tokens} events, {args.repeats} repeats, CPU time (process_time) per event")
    for layout, pieces in (("one event per read", events), ("eight events per read", bursts)):
        for name, reader in (("before (line reader)", _old), ("after (SSE decoder)", _new)):
            timings = measure(reader, pieces, len(events), args.repeats)
            print(
                f"{layout:22} {name:22} {statistics.median(timings):6.2f} µs [{min(timings):.2f}..{max(timings):.2f}]"
            )


if __name__ == "__main__":
    main()

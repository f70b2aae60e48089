"""Where an open stream's memory goes: tracemalloc in the app while N streams are held open.

    python -m benchmarks.memory              # 200 streams; JSON in benchmarks/results/memory-<time>.json
    python -m benchmarks.memory --streams 50 --output-dir /tmp

The app (chat.http.devserver's ASGI app) runs in this process under uvicorn with tracemalloc on;
a child process (the load client, on the other core) opens ``--streams`` streams whose answers
come slowly from the simulated upstream, so that all are open, mid-answer, at the moment of
the second snapshot. The difference between a snapshot after a warm-up and that one, divided
by the streams open, is the Python-level memory of one stream, grouped by the line that
allocated it (the innermost frame in a library or the app) and by library. What tracemalloc
does not see (C buffers, allocator slack) is the rest of the RSS per stream that
benchmarks.run measures; RSS is not read here, as tracemalloc's own records inflate it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from benchmarks.client import Bodies, LoadClient, Shape, Timing
from benchmarks.profiling import short_path
from benchmarks.stack import APP_CORE, HARNESS_CORE, READY_TIMEOUT_SECONDS, Stack, detect_pinning
from chat.localstack import free_port
from chat.settings import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# Slow answers: every stream stays open (first token after 2 s, then 1 token/s) while the snapshot is taken.
HOLD = Shape(ttft=2.0, tps=1.0, tokens=20)
WARM = Shape(ttft=0.0, tps=1000, tokens=5)
FRAMES = 12
LIBRARIES = ("openai", "httpx2", "httpx", "aiohttp", "starlette", "uvicorn", "pydantic", "asyncio", "anyio", "chat")


def _library(filename: str) -> str:
    for name in LIBRARIES:
        if f"/{name}/" in filename:
            return name
    return "other (stdlib, interpreter)"


def attribute(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, streams: int) -> dict[str, Any]:
    """Bytes per stream by allocating line (innermost frame outside asyncio plumbing) and by library."""
    by_line: defaultdict[str, float] = defaultdict(float)
    by_library: defaultdict[str, float] = defaultdict(float)
    total = 0.0
    for stat in after.compare_to(before, "traceback"):
        if stat.size_diff <= 0:
            continue
        frames = list(stat.traceback)  # most recent call last
        innermost = frames[-1]
        # Name the first frame of a library or the app, not the stdlib helper that did the allocating.
        named = next((f for f in reversed(frames) if _library(f.filename) != "other (stdlib, interpreter)"), innermost)
        by_line[f"{short_path(named.filename)}:{named.lineno}"] += stat.size_diff
        by_library[_library(named.filename)] += stat.size_diff
        total += stat.size_diff
    per_stream = max(streams, 1) * 1024

    def top(table: dict[str, float], count: int) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:count]
        return [{"where": where, "kib_per_stream": size / per_stream} for where, size in ranked]

    return {"traced_kib_per_stream": total / per_stream, "by_library": top(by_library, 12), "by_line": top(by_line, 25)}


async def hold_streams(url: str, streams: int, seconds: float) -> None:
    """The child's job: open ``streams`` slow streams at once and read them until they end or time runs out."""
    body = Bodies.for_shape(HOLD).chat
    async with LoadClient(seconds + 30) as client:
        tasks = [client.stream(Timing(), f"{url}/api/chat/stream", body, HOLD.content_lines) for _ in range(streams)]
        await asyncio.gather(*tasks)


async def _measure(port: int, streams: int, child: list[str]) -> dict[str, Any]:
    import uvicorn

    from chat.http.devserver import create_app

    config = uvicorn.Config(create_app(Path("/nonexistent")), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    async with LoadClient(30) as client:  # warm-up from this process, before tracing: imports, pools, caches
        body = Bodies.for_shape(WARM).chat
        for _ in range(5):
            await client.stream(Timing(), f"{url}/api/chat/stream", body, WARM.content_lines)
    await asyncio.sleep(0.5)
    tracemalloc.start(FRAMES)
    before = tracemalloc.take_snapshot()
    holder = await asyncio.create_subprocess_exec(*child, url, str(streams))
    await asyncio.sleep(HOLD.ttft + 3.5)  # all streams open and past their first tokens
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    await holder.wait()
    server.should_exit = True
    await serving
    figures = attribute(before, after, streams)
    figures["streams"] = streams
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--hold", nargs=2, metavar=("URL", "STREAMS"), help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args(argv)
    if args.hold:
        asyncio.run(hold_streams(args.hold[0], int(args.hold[1]), HOLD.duration(0) + 5))
        return 0
    pinning = detect_pinning()
    child = [*pinning.prefix(HARNESS_CORE), sys.executable, "-m", "benchmarks.memory", "--hold"]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        stack = Stack(Path(workdir), pinning)  # its upstream and index; the app runs here instead
        try:
            stack.upstream.start(READY_TIMEOUT_SECONDS)
            stack.ingest()
            os.environ.update(stack.environment)
            if pinning.active:
                os.sched_setaffinity(0, {APP_CORE})
            figures = asyncio.run(_measure(free_port(), args.streams, child))
        finally:
            stack.close()
    figures["machine_load_1m"] = os.getloadavg()[0]
    print(f"{args.streams} open streams: {figures['traced_kib_per_stream']:.1f} KiB per stream traced. By library:")
    for row in figures["by_library"]:
        print(f"  {row['kib_per_stream']:6.2f} KiB  {row['where']}")
    print("By allocating line:")
    for row in figures["by_line"]:
        print(f"  {row['kib_per_stream']:6.2f} KiB  {row['where']}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"memory-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What one refusal (429) costs the real Python worker, beside what it costs the dev server, same client.

The flood scenario (benchmarks/run.py, docs/performance.md) runs the app on the dev server: uvicorn
and starlette, as the worker's streaming extension does. On Azure each request is also an
invocation: the Functions host forwards the HTTP request to the worker's own server and sends an
InvocationRequest over gRPC, and the worker library matches the two. This script drives the real
worker library (azure-functions-runtime) the way tests/test_worker.py does, playing the host,
and sends the same refusals to it and to the dev server, each pinned to the app's core, from
this process on the other: the worker's CPU per refusal next to the dev server's. The host's
own work (a .NET process on the same instance) is not in either figure.

    python -m benchmarks.worker_refusal [--requests 2000] [--concurrency 10]

Needs Python 3.13 with requirements-dev.txt (the worker library exists for 3.13+ only). Every
request goes to 127.0.0.1; the product's default per-client limits apply, so after the first 20
of a minute every request is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson

from benchmarks.stack import (
    APP_CORE,
    HARNESS_CORE,
    Pinning,
    ProcessProbe,
    child_environment,
    detect_pinning,
    pin_this_process,
)
from chat.localstack import Server, free_port
from chat.settings import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
HEADERS = {"content-type": "application/json", "X-Forwarded-For": "203.0.113.66"}
BODY = b'{"messages":[{"role":"user","content":"Can you suggest a pizza?"}]}'
# No model or index is needed: every measured request is refused before either is used.
UNUSED = "http://127.0.0.1:9/v1"
Send = Callable[[], Awaitable[int]]


async def _drive(send: Send, requests: int, concurrency: int) -> Counter[int]:
    statuses: Counter[int] = Counter()

    async def loop() -> None:
        for _ in range(requests // concurrency):
            statuses[await send()] += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return statuses


async def _measure(probe: ProcessProbe, send: Send, requests: int, concurrency: int) -> dict[str, object]:
    """The server's CPU per request over ``requests`` sent after as many again (warm-up; the minute's 20)."""
    await _drive(send, requests, concurrency)
    cpu, started = probe.cpu_seconds(), time.perf_counter()
    statuses = await _drive(send, requests, concurrency)
    cpu, wall = probe.cpu_seconds() - cpu, time.perf_counter() - started
    sent = sum(statuses.values())
    return {"statuses": dict(statuses), "cpu_us_per_request": cpu / sent * 1e6, "requests_per_s": sent / wall}


def _children() -> set[int]:
    tasks = Path(f"/proc/{os.getpid()}/task")
    return {int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()}


async def worker(requests: int, concurrency: int) -> dict[str, object]:
    import tests.test_worker as harness  # needs Python 3.13 and the worker library
    from tests.conftest import HOST_LIMITS

    # The product's default per-client limits, not the ones the test suite lifts for its one client.
    vars(harness)["HOST_LIMITS"] = {name: value for name, value in HOST_LIMITS.items() if not name.startswith("CHAT_")}
    stack = SimpleNamespace(upstream_url=UNUSED.removesuffix("/v1"), index_path=Path("/nonexistent"))
    with tempfile.TemporaryDirectory(prefix="worker-") as folder:
        before = _children()
        async with harness.running_worker(stack, Path(folder)) as running:  # type: ignore[arg-type]
            [pid] = _children() - before
            os.sched_setaffinity(pid, {APP_CORE})

            async def send() -> int:
                route = "/api/chat/stream"
                response, _ = await running.call("chat_stream", "POST", route, content=BODY, headers=HEADERS)
                await response.aread()
                return response.status_code

            return await _measure(ProcessProbe(pid), send, requests, concurrency)


def devserver(requests: int, concurrency: int, pinning: Pinning, log_dir: Path) -> dict[str, object]:
    port = free_port()
    environment = child_environment(
        OPENAI_HOST="local",
        SEARCH_HOST="local",
        LOCAL_OPENAI_ENDPOINT=UNUSED,
        LOCAL_EMBEDDING_ENDPOINT=UNUSED,
        LOCAL_INDEX_PATH="/nonexistent",
    )
    command = [sys.executable, "-m", "chat.http.devserver", "--port", str(port), "--settings", "/nonexistent"]
    command = [*pinning.prefix(APP_CORE), *command, "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    server = Server("devserver", command, f"{base}/chat", env=environment, log_dir=log_dir).start()
    assert server.process is not None
    probe = ProcessProbe(server.process.pid)  # taskset execs the command: the pid is the server's

    async def measure() -> dict[str, object]:
        async with httpx.AsyncClient(timeout=30) as http:

            async def send() -> int:
                response = await http.post(f"{base}/api/chat/stream", content=BODY, headers=HEADERS)
                return response.status_code

            return await _measure(probe, send, requests, concurrency)

    try:
        return asyncio.run(measure())
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server (at most 100,000)")
    parser.add_argument("--concurrency", type=int, default=10, help="requests open at once (at most 100)")
    args = parser.parse_args(argv)
    if not (0 < args.requests <= 100_000 and 0 < args.concurrency <= 100):
        parser.error("--requests must be within 1..100000 and --concurrency within 1..100")
    if sys.version_info < (3, 13):
        parser.error("the worker library (azure-functions-runtime) needs Python 3.13+")
    pinning = detect_pinning()
    pin_this_process(pinning)
    with tempfile.TemporaryDirectory(prefix="devserver-") as log_dir:
        figures = {
            "dev server": devserver(args.requests, args.concurrency, pinning, Path(log_dir)),
            "worker": asyncio.run(worker(args.requests, args.concurrency)),
        }
    for name, measured in figures.items():
        print(f"{name}: {measured['cpu_us_per_request']:.0f} µs of CPU per request, {measured['statuses']}")
    results = {
        "command": "python -m benchmarks.worker_refusal " + " ".join(sys.argv[1:] if argv is None else argv),
        "python": sys.version.split()[0],
        "pinning": f"servers on core {APP_CORE}, this client on core {HARNESS_CORE}" if pinning.active else "none",
        "load_average": os.getloadavg(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "figures": figures,
    }
    path = RESULTS_DIR / f"worker-refusal-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

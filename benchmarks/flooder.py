"""One client flooding the app (issue 10), in a process of its own: the harness starts it beside the victims.

    python -m benchmarks.flooder --url http://127.0.0.1:PORT/api/chat/stream --rate 1000 --connections 100
    python -m benchmarks.flooder --url ... --rate 0   # closed loop: each connection asks again at once

Open loop (``--rate R``): R requests a second on a fixed schedule, whatever the app answers, on at
most ``--connections`` requests open at once; a request that falls due while all of them are busy
is not sent and counted as ``not_sent``. Closed loop (``--rate 0``): every connection sends its next
request as soon as the previous one ends, ``--pause`` after a refusal. Every request comes from one
client address (X-Forwarded-For), so the app's per-client limits see one client.

It runs until SIGTERM or ``--seconds``, whichever comes first, prints ``ready`` once its first
answer arrived, and at the end one JSON line: what it sent and what came back. Bounded in time,
in open requests and in count (``MAX_REQUESTS``), and it only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Callable
from time import perf_counter
from urllib.parse import urlsplit

import orjson

from benchmarks.client import Bodies, LoadClient, Shape, Timing

MAX_CONNECTIONS = 100
MAX_SECONDS = 600.0
MAX_REQUESTS = 10_000_000
# The open loop's scheduler wakes this often and sends whatever fell due since.
TICK_SECONDS = 0.001


class Flooder:
    """The requests of one flooding client and what became of them."""

    def __init__(self, client: LoadClient, url: str, body: bytes, expected: int, address: str) -> None:
        self._client, self._url, self._body, self._expected, self._address = client, url, body, expected, address
        self.outcomes: Counter[str] = Counter()
        self.sent = 0
        self.not_sent = 0
        self.first_answer = asyncio.Event()

    async def request(self) -> str | None:
        """One request; its outcome ("ok", "http-429", ...) is counted once it ends, "unfinished" until then."""
        self.sent += 1
        timing = Timing()
        try:
            await self._client.stream(timing, self._url, self._body, self._expected, client=self._address)
        finally:
            self.outcomes[timing.error or "ok"] += 1
            self.first_answer.set()
        return timing.error

    async def closed_loop(self, stop: asyncio.Event, pause: float) -> None:
        while not stop.is_set() and self.sent < MAX_REQUESTS:
            if await self.request() is not None:
                await asyncio.sleep(pause)

    async def open_loop(self, stop: asyncio.Event, rate: float, connections: int) -> None:
        started, due = perf_counter(), 0
        tasks: set[asyncio.Task[str | None]] = set()
        while not stop.is_set() and due < MAX_REQUESTS:
            now_due = int((perf_counter() - started) * rate)
            while due < now_due:
                due += 1
                if self._client.open >= connections:
                    self.not_sent += 1
                    continue
                task = asyncio.create_task(self.request())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(TICK_SECONDS)
        await _cancel(tasks)


async def _cancel(tasks: set[asyncio.Task[str | None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def flood(args: argparse.Namespace) -> dict[str, object]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(args.seconds, stop.set)
    shape = Shape(ttft=args.ttft, tps=args.tps, tokens=args.tokens)
    async with LoadClient(args.timeout) as client:
        flooder = Flooder(client, args.url, Bodies.for_shape(shape).chat, shape.content_lines, args.client)
        started = perf_counter()
        if args.rate > 0:
            loops = [asyncio.create_task(flooder.open_loop(stop, args.rate, args.connections))]
        else:
            loops = [asyncio.create_task(flooder.closed_loop(stop, args.pause)) for _ in range(args.connections)]
        await flooder.first_answer.wait()
        print("ready", flush=True)
        await stop.wait()
        wall = perf_counter() - started
        await _cancel(set(loops))
    outcomes = dict(flooder.outcomes)
    outcomes.pop("unfinished", None)  # counted as "unfinished" below, from what was sent
    unfinished = flooder.sent - sum(outcomes.values())
    return {
        "rate": args.rate,
        "connections": args.connections,
        "sent": flooder.sent,
        "not_sent": flooder.not_sent,
        "sent_per_s": flooder.sent / wall,
        "seconds": wall,
        "outcomes": {**outcomes, **({"unfinished": unfinished} if unfinished else {})},
    }


def _loopback_url(text: str) -> str:
    if urlsplit(text).hostname != "127.0.0.1":
        raise argparse.ArgumentTypeError("the flooder only talks to 127.0.0.1")
    return text


def _bounded(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low:g}..{high:g}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", type=_loopback_url, required=True, help="the app's streaming route on 127.0.0.1")
    parser.add_argument("--rate", type=_bounded(0, 1e6), default=0.0, help="requests a second; 0: closed loop")
    parser.add_argument("--connections", type=int, default=MAX_CONNECTIONS, help=f"at most {MAX_CONNECTIONS}")
    parser.add_argument("--pause", type=_bounded(0, 1), default=0.01, help="closed loop: wait after a refusal, s")
    parser.add_argument("--seconds", type=_bounded(0.1, MAX_SECONDS), default=60.0, help="stop after this long")
    parser.add_argument("--client", default="203.0.113.66", help="the flooding client's address (X-Forwarded-For)")
    parser.add_argument("--ttft", type=float, default=0.3, help="the upstream shape its questions ask for")
    parser.add_argument("--tps", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on one request, seconds")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be within 1..{MAX_CONNECTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    result = asyncio.run(flood(parse_args(argv)))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One client flooding the app (issue 10), in a process of its own: the harness starts it beside the victims.

    python -m benchmarks.flooder --url http://127.0.0.1:PORT/api/chat/stream --rate 1000 --connections 100
    python -m benchmarks.flooder --url ... --rate 0   # closed loop: each connection asks again at once

Open loop (``--rate R``): R requests a second on a fixed schedule, whatever the app answers, on at
most ``--connections`` keep-alive connections with one request each at a time; a request that
falls due while all of them are busy is not sent and counted as ``not_sent``. Closed loop
(``--rate 0``): every connection sends its next request as soon as the previous one ended,
``--pause`` after a refusal. Every request comes from one client address (X-Forwarded-For), so the
app's per-client limits see one client.

The client is deliberately cheaper than the victims' aiohttp one (benchmarks/client.py): one
pre-encoded request written to a socket, the answer parsed by httptools (the C parser uvicorn
uses) for its status and end, its body dropped. A flood is then limited by what the app can
refuse rather than by what this process can send.

It runs until SIGTERM or ``--seconds``, whichever comes first, prints ``ready`` once its first
answer arrived, and at the end one JSON line: what it sent and what came back. Bounded in time,
in connections and in count (``MAX_REQUESTS``), and it only talks to 127.0.0.1.
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

import httptools
import orjson

from benchmarks.client import JSON_HEADERS, Bodies, Shape

MAX_CONNECTIONS = 100
MAX_SECONDS = 600.0
MAX_REQUESTS = 10_000_000
# The open loop's scheduler wakes this often and sends whatever fell due since.
TICK_SECONDS = 0.001


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends the same request bytes, one request at a time."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[int] | None = None
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(error)

    def connection_lost(self, error: Exception | None) -> None:
        self.reusable = False
        self._fail(error or ConnectionResetError("closed by the app"))

    def on_message_complete(self) -> None:  # httptools' callback: the whole answer is in
        self.reusable = self._parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(self._parser.get_status_code())

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def ask(self) -> int:
        """Send the request; its status once the answer has ended (a stream: after its last line)."""
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(self._request)
        return await self._answer

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class Flooder:
    """The requests of one flooding client and what became of them."""

    def __init__(self, url: str, body: bytes, address: str, timeout: float) -> None:
        parts = urlsplit(url)
        self._host, self._port, self._timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Forwarded-For: {address}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in JSON_HEADERS.items())
        self._request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        self._idle: list[Connection] = []
        self.busy = 0
        self.outcomes: Counter[str] = Counter()
        self.sent = 0
        self.not_sent = 0
        self.first_answer = asyncio.Event()

    async def _connection(self) -> Connection:
        """The most recently used idle connection that is still open (the app closes idle ones), or a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: Connection(self._request), self._host, self._port)
        return connection

    async def request(self) -> bool:
        """One request, on an idle connection or a new one; counts its outcome ("ok", "http-429", the
        error's name), or "unfinished" if it is cancelled. Whether the app answered 200."""
        self.sent += 1
        self.busy += 1
        connection: Connection | None = None
        outcome, answered = "unfinished", False
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._connection()
                status = await connection.ask()
            outcome, answered = ("ok" if status == 200 else f"http-{status}"), True
        except (OSError, TimeoutError, httptools.HttpParserError) as error:
            outcome = type(error).__name__
        finally:
            self.busy -= 1
            self.outcomes[outcome] += 1
            self.first_answer.set()
            if connection is not None and answered and connection.reusable:
                self._idle.append(connection)
            elif connection is not None:
                connection.close()
        return outcome == "ok"

    async def closed_loop(self, stop: asyncio.Event, pause: float) -> None:
        while not stop.is_set() and self.sent < MAX_REQUESTS:
            if not await self.request():
                await asyncio.sleep(pause)

    async def open_loop(self, stop: asyncio.Event, rate: float, connections: int) -> None:
        started, due = perf_counter(), 0
        tasks: set[asyncio.Task[bool]] = set()
        while not stop.is_set() and due < MAX_REQUESTS:
            now_due = int((perf_counter() - started) * rate)
            while due < now_due:
                due += 1
                if self.busy >= connections:
                    self.not_sent += 1
                    continue
                task = asyncio.create_task(self.request())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(TICK_SECONDS)
        await _cancel(tasks)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()


async def _cancel(tasks: set[asyncio.Task[bool]] | set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def flood(args: argparse.Namespace) -> dict[str, object]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(args.seconds, stop.set)
    body = Bodies.for_shape(Shape(ttft=args.ttft, tps=args.tps, tokens=args.tokens)).chat
    flooder = Flooder(args.url, body, args.client, args.timeout)
    started = perf_counter()
    if args.rate > 0:
        loops = {asyncio.create_task(flooder.open_loop(stop, args.rate, args.connections))}
    else:
        loops = {asyncio.create_task(flooder.closed_loop(stop, args.pause)) for _ in range(args.connections)}
    await flooder.first_answer.wait()
    print("ready", flush=True)
    await stop.wait()
    wall = perf_counter() - started
    await _cancel(loops)
    flooder.close()
    return {
        "rate": args.rate,
        "connections": args.connections,
        "sent": flooder.sent,
        "not_sent": flooder.not_sent,
        "sent_per_s": flooder.sent / wall,
        "seconds": wall,
        "outcomes": dict(flooder.outcomes),
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

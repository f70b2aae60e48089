"""benchmarks/flooder.py: its raw keep-alive client counts what a real server answers, over a real socket.

The flood figures in docs/performance.md rest on these counts (refused, answered, cut off), so the
client is checked against a small HTTP/1.1 server that answers like the app does: 429 with a
Content-Length body, 200 as a chunked stream, and a connection the server closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from benchmarks.flooder import Flooder, parse_args

STREAM = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\n\r\n\r\n6\r\n{"a"}\n\r\n0\r\n\r\n'
REFUSAL = b'HTTP/1.1 429 Too Many Requests\r\nContent-Length: 11\r\nRetry-After: 5\r\n\r\n{"error":1}'
CLOSING = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


@dataclass
class Server:
    """Answers the n-th request with ``answers[n]`` (the last one after that); records what it saw."""

    answers: list[bytes]
    hang_up: bool = False  # close each connection after its answer, unannounced (an idle timeout)
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
                writer.write(answer)
                await writer.drain()
                if self.hang_up or b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    answers, hang_up = request.param
    state = Server(answers, hang_up)
    listening = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/api/chat/stream"
    async with listening:
        yield state


@pytest.mark.parametrize("server", [([STREAM, REFUSAL], False)], indirect=True)
async def test_answers_are_counted_and_one_connection_is_kept_alive(server: Server) -> None:
    flooder = Flooder(server.url, b'{"messages":[]}', "203.0.113.66", timeout=5)
    answered = [await flooder.request() for _ in range(3)]
    flooder.close()
    assert answered == [True, False, False]
    assert flooder.outcomes == {"ok": 1, "http-429": 2}
    assert (flooder.sent, flooder.busy, server.connections) == (3, 0, 1)
    first = server.requests[0]
    assert first.startswith(b"POST /api/chat/stream HTTP/1.1\r\n")
    assert b"X-Forwarded-For: 203.0.113.66\r\n" in first
    assert first.endswith(b'\r\n\r\n{"messages":[]}')


@pytest.mark.parametrize("server", [([CLOSING], False), ([REFUSAL], True)], indirect=True)
async def test_a_connection_the_server_closed_is_replaced(server: Server) -> None:
    """Whether the server said so (Connection: close) or just hung up on an idle connection."""
    flooder = Flooder(server.url, b"{}", "203.0.113.66", timeout=1)
    for _ in range(3):
        await flooder.request()
        await asyncio.sleep(0.01)  # the server's close arrives
    flooder.close()
    assert flooder.outcomes == {"http-429": 3}
    assert server.connections == 3


@pytest.mark.parametrize("server", [([REFUSAL], False)], indirect=True)
async def test_the_open_loop_sends_on_schedule_and_counts_what_it_could_not_send(server: Server) -> None:
    flooder = Flooder(server.url, b"{}", "203.0.113.66", timeout=5)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    await flooder.open_loop(stop, rate=200, connections=2)
    flooder.close()
    # The schedule decides how many fell due; each was either sent (and answered) or not sent.
    assert flooder.sent > 0
    assert sum(flooder.outcomes.values()) == flooder.sent
    assert set(flooder.outcomes) <= {"http-429", "unfinished"}
    assert server.connections <= 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://example.com/api/chat/stream"],
        ["--url", "http://127.0.0.1:1/api/chat/stream", "--connections", "101"],
        ["--url", "http://127.0.0.1:1/api/chat/stream", "--seconds", "3600"],
    ],
)
def test_it_stays_on_loopback_and_within_its_bounds(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)

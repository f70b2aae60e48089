"""The load client: one asyncio process with aiohttp that splits lines and timestamps them, nothing more.

A line is "content" when it contains the bytes ``"delta":{"content"`` (an NDJSON answer delta
from the app, or an SSE chunk with a delta from the upstream; a bare ``"content"`` would also
match the app's final line, whose data points carry a "content" key). Nothing is JSON-parsed
per token, so the client's own cost stays small next to what it measures. Only a stream's last line is parsed,
and only when it reports an error. Every request is bounded by the session's timeout and
every load by the caller's deadline; all URLs are on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from time import perf_counter
from types import TracebackType

import aiohttp
import orjson

from benchmarks.stack import ProcessProbe

CONTENT_MARK = b'"delta":{"content"'
# Every question the harness sends is a first question, which the app searches as asked (its default
# query-rewrite policy, CHAT_QUERY_REWRITE=auto): the direct sequence makes the same calls, no rewrite.
REWRITES_FIRST_QUESTION = False
JSON_HEADERS = {"Content-Type": "application/json"}
QUESTION = "Can you suggest a pizza with mushroom and pineapple?"
# Roughly the size of what the app sends a hosted model: its prompts plus its sources (measured with
# three ~200-token sources; five ~80-token ones since the second round of issue 12, a little less).
_SOURCES = " ".join(["[mushroom-pineapple-pizza.md]: Brown the mushrooms in a hot pan, caramelise the pineapple."] * 24)


@dataclass(frozen=True)
class Shape:
    """What the simulated upstream does for one request, sent as a directive in the question.

    ``ttft`` is the model's latency for every chat call: the streamed answer's first chunk and
    the non-streamed query rewrite alike (a real model takes its time for both).
    """

    ttft: float
    tps: float
    tokens: int
    chunk: int = 1

    @property
    def directive(self) -> str:
        timing = f"ttft={self.ttft:g} delay={self.ttft:g} tps={self.tps:g}"
        return f"[[upstream {timing} tokens={self.tokens} chunk={self.chunk}]]"

    @property
    def interval(self) -> float:
        """The upstream's pause between two content chunks."""
        return self.chunk / self.tps

    @property
    def content_lines(self) -> int:
        return -(-self.tokens // self.chunk)

    def duration(self, embed_delay: float) -> float:
        """How long one request takes at the upstream: (query rewrite,) embedding, first token, the other chunks."""
        calls = 2 if REWRITES_FIRST_QUESTION else 1
        return calls * self.ttft + embed_delay + (self.content_lines - 1) * self.interval


@dataclass(slots=True)
class Timing:
    """One request as the client saw it (perf_counter seconds); ``error`` is None when it succeeded."""

    started: float = 0.0
    status: int = 0
    first_line: float | None = None
    content: list[float] = field(default_factory=list)
    ended: float | None = None
    error: str | None = "unfinished"
    # Direct sequences only: the upstream's own waits (query rewrite and embedding) before the stream call.
    prelude: float = 0.0

    @property
    def to_first_line(self) -> float | None:
        return None if self.first_line is None else self.first_line - self.started

    @property
    def to_first_content(self) -> float | None:
        return self.content[0] - self.started if self.content else None

    @property
    def to_last_content(self) -> float | None:
        return self.content[-1] - self.started if self.content else None

    @property
    def to_end(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def gaps(self) -> list[float]:
        content = self.content
        return [later - earlier for earlier, later in pairwise(content)]


@dataclass(frozen=True)
class Bodies:
    """Pre-encoded request bodies for one upstream shape: the app's, and the upstream's three calls."""

    chat: bytes
    rewrite: bytes
    embeddings: bytes
    answer: bytes

    @classmethod
    def for_shape(cls, shape: Shape) -> Bodies:
        question = f"{QUESTION} {shape.directive}"
        chat = {"messages": [{"role": "user", "content": question}]}
        rewrite = {
            "model": "simulated",
            "messages": [{"role": "system", "content": "Turn the question into a search query."}, chat["messages"][0]],
            "temperature": 0.0,
            "max_tokens": 48,
        }
        embeddings = {
            "model": "simulated",
            "input": ["pizza recipes with mushroom and pineapple"],
            "input_type": "query",
        }
        answer = {
            "model": "simulated",
            "messages": [
                {"role": "system", "content": "Answer using only the sources; cite them in square brackets."},
                {"role": "user", "content": f"{question}\n\nSources:\n{_SOURCES}"},
            ],
            "temperature": 0.3,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return cls(*(orjson.dumps(body) for body in (chat, rewrite, embeddings, answer)))


def _stream_error(last: bytes, sse: bool) -> str | None:
    """Why a finished stream failed, judged from its last line only; None when it ended properly."""
    if sse:
        return None if last == b"data: [DONE]" else "stream-incomplete"
    if b'"error"' in last:
        try:
            return f"error-line:{orjson.loads(last)['error']['code']}"
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "error-line:unreadable"
    return None if b'"finishReason"' in last else "no-final-line"


class LoadClient:
    """An aiohttp session without a connection limit; counts the requests open at any moment."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.open = 0

    async def __aenter__(self) -> LoadClient:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=self._timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use LoadClient in 'async with'"
        return self._session

    async def stream(
        self, timing: Timing, url: str, body: bytes, expected: int, *, sse: bool = False, client: str = ""
    ) -> None:
        """POST ``body`` and timestamp every line of the streamed answer (NDJSON, or SSE with ``sse``).

        ``client`` is sent as X-Forwarded-For: who the app's per-client limits see.
        """
        self.open += 1
        timing.started = perf_counter()
        headers = {**JSON_HEADERS, "X-Forwarded-For": client} if client else JSON_HEADERS
        try:
            async with self.session.post(url, data=body, headers=headers) as response:
                timing.status = response.status
                if response.status != 200:
                    await response.read()
                    timing.error = f"http-{response.status}"
                    return
                last = await _read_lines(response, timing)
            timing.ended = perf_counter()
            timing.error = _stream_error(last, sse) or (None if len(timing.content) >= expected else "short")
        except (aiohttp.ClientError, TimeoutError) as error:
            timing.error = type(error).__name__
        finally:
            self.open -= 1

    async def whole(self, timing: Timing, url: str, body: bytes, ok_mark: bytes, *, client: str = "") -> None:
        """POST ``body`` and read the whole (non-streamed) answer; it succeeded if it holds ``ok_mark``.

        ``client`` is sent as X-Forwarded-For, as with ``stream``.
        """
        self.open += 1
        timing.started = perf_counter()
        headers = {**JSON_HEADERS, "X-Forwarded-For": client} if client else JSON_HEADERS
        try:
            async with self.session.post(url, data=body, headers=headers) as response:
                timing.status = response.status
                data = await response.read()
            timing.ended = timing.first_line = perf_counter()
            ok = response.status == 200 and ok_mark in data
            timing.error = None if ok else f"http-{response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            timing.error = type(error).__name__
        finally:
            self.open -= 1

    async def direct_sequence(self, timing: Timing, upstream_url: str, bodies: Bodies, expected: int) -> None:
        """The app's upstream calls made directly, in order: (query rewrite,) embedding, streamed answer.

        Times are taken from the start of the sequence, so its first content is what the app's
        first token would be if the app itself cost nothing.
        """
        started = perf_counter()
        prelude = Timing(error=None)
        if REWRITES_FIRST_QUESTION:
            await self.whole(prelude, f"{upstream_url}/v1/chat/completions", bodies.rewrite, b'"choices"')
        if prelude.error is None:
            await self.whole(prelude, f"{upstream_url}/v1/embeddings", bodies.embeddings, b'"embedding"')
        if prelude.error is None:
            timing.prelude = perf_counter() - started
            await self.stream(timing, f"{upstream_url}/v1/chat/completions", bodies.answer, expected, sse=True)
        else:
            timing.error = f"prelude-{prelude.error}"
        timing.started = started


async def _read_lines(response: aiohttp.ClientResponse, timing: Timing) -> bytes:
    """Timestamp each line when its last byte arrives; return the last non-empty line."""
    pending = b""
    last = b""
    content = timing.content
    async for chunk in response.content.iter_any():
        now = perf_counter()
        lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if not line:
                continue  # the blank line after each server-sent event
            if timing.first_line is None:
                timing.first_line = now
            if CONTENT_MARK in line:
                content.append(now)
            last = line
    return pending or last


# One request of a simulated user: its timing record and the user's number (0..workers-1).
Request = Callable[[Timing, int], Awaitable[None]]


@dataclass
class Peak:
    """The highest RSS of a process and the most requests open, sampled while a load runs."""

    rss_kib: int = 0
    open_requests: int = 0


async def _sample(probe: ProcessProbe | None, client: LoadClient, peak: Peak, every: float) -> None:
    while True:
        if probe is not None:
            peak.rss_kib = max(peak.rss_kib, probe.rss_kib())
        peak.open_requests = max(peak.open_requests, client.open)
        await asyncio.sleep(every)


async def closed_loop(
    client: LoadClient,
    request: Request,
    *,
    workers: int,
    rounds: int,
    ramp: float,
    deadline: float,
    probe: ProcessProbe | None = None,
) -> tuple[list[Timing], Peak]:
    """``workers`` concurrent users, started evenly over ``ramp`` seconds (0: all at once), each making
    ``rounds`` requests one after the other; stopped after ``deadline`` seconds (unfinished requests
    count as errors)."""
    timings: list[Timing] = []
    peak = Peak()

    async def user(number: int) -> None:
        await asyncio.sleep(ramp * number / workers)
        for _ in range(rounds):
            timing = Timing()
            timings.append(timing)
            await request(timing, number)

    sampler = asyncio.create_task(_sample(probe, client, peak, 0.05))
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(user(number) for number in range(workers)))
    except TimeoutError:
        pass
    finally:
        sampler.cancel()
    return timings, peak

"""Where a request's CPU goes before its first token: the real app, stage by stage, without a profiler.

The app (chat.http.devserver's ASGI app) runs in this process under uvicorn, with the pipeline's
provider calls wrapped in CPU meters (``time.process_time``: every thread of the process,
so the local index's worker thread counts). Requests come one at a time from the harness (another
process), so all the CPU the process spends while a stage is in progress is that stage's. An
ASGI wrapper adds two routes of its own: ``GET /_stages`` (the totals) and ``POST /_profile``
(start a measurement afresh, optionally under cProfile, written to ``--profile-output`` at its end).

Stages, in request order:
    http         request in, routing, body read and validation, until the response starts
    rewrite      the query rewrite call (ChatModel.complete): the SDK's request build, transport, parse
    embedding    the embedding call (Embedder.embed)
    search       the local index query (LocalIndexRetriever.search minus its embedding call)
    answer_call  the answer call up to its first token (ChatModel.stream until it yields)
    other        the rest before the first token: stage events, NDJSON, telemetry, the event loop

    python -m benchmarks.request_cpu --port 8030   # environment as the harness's Stack sets it
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.client import CONTENT_MARK

STAGES = ("http", "rewrite", "embedding", "search", "answer_call", "other")
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Any, Send], Awaitable[None]]


class Meters:
    """CPU seconds per stage, summed over the measured requests."""

    def __init__(self) -> None:
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.requests = 0
        self.profiler: cProfile.Profile | None = None

    def add(self, stage: str, seconds: float) -> None:
        self.cpu[stage] += seconds

    def report(self) -> dict[str, Any]:
        """Milliseconds of CPU per request: each stage, to the first token, and the whole request."""
        count = max(self.requests, 1)
        measured = {name: seconds / count * 1000 for name, seconds in self.cpu.items()}
        stages = {stage: measured.get(stage, 0.0) for stage in STAGES[:-1]}
        stages["search"] = measured.get("search_with_embedding", 0.0) - stages["embedding"]
        to_first_token = measured.get("to_first_token", 0.0)
        stages["other"] = to_first_token - sum(stages.values())
        return {
            "requests": self.requests,
            "stages_ms": stages,
            "to_first_token_ms": to_first_token,
            "whole_request_ms": measured.get("whole_request", 0.0),
        }


def _timed(meters: Meters, stage: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return await call(*args, **kwargs)
        finally:
            meters.add(stage, time.process_time() - started)

    return timed


def instrument(meters: Meters) -> None:
    """Wrap the provider calls of the pipeline in CPU meters (this process only)."""
    from chat.providers import llm, local_index

    llm.ChatModel.complete = _timed(meters, "rewrite", llm.ChatModel.complete)  # type: ignore[method-assign,assignment]
    llm.Embedder.embed = _timed(meters, "embedding", llm.Embedder.embed)  # type: ignore[method-assign,assignment]
    search = _timed(meters, "search_with_embedding", local_index.LocalIndexRetriever.search)
    local_index.LocalIndexRetriever.search = search  # type: ignore[method-assign,assignment]
    stream = llm.ChatModel.stream

    @functools.wraps(stream)
    async def metered_stream(*args: Any, **kwargs: Any) -> AsyncGenerator[str, None]:
        started: float | None = time.process_time()
        async for text in stream(*args, **kwargs):
            if started is not None:
                meters.add("answer_call", time.process_time() - started)
                started = None
            yield text

    llm.ChatModel.stream = metered_stream  # type: ignore[method-assign]


def metering(app: ASGIApp, meters: Meters, profile_output: Path | None) -> ASGIApp:
    """The app with request-level meters (to response start, to first token, whole) and the two routes."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] == "/_stages":
            await _json(send, meters.report())
            return
        if scope["path"] == "/_profile":
            await _switch_profile(receive, send, meters, profile_output)
            return
        if scope["path"] != "/api/chat/stream":
            await app(scope, receive, send)
            return
        started = time.process_time()
        first_token = False

        async def metered_send(message: dict[str, Any]) -> None:
            nonlocal first_token
            if message["type"] == "http.response.start":
                meters.add("http", time.process_time() - started)
            elif not first_token and CONTENT_MARK in message.get("body", b""):
                first_token = True
                meters.add("to_first_token", time.process_time() - started)
            await send(message)

        await app(scope, receive, metered_send)
        meters.add("whole_request", time.process_time() - started)
        meters.requests += 1

    return wrapped


async def _json(send: Send, body: Any) -> None:
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


async def _switch_profile(receive: Any, send: Send, meters: Meters, output: Path | None) -> None:
    """``{"on": true}`` starts a measurement afresh (with ``"profile": true``, under cProfile); ``{"on": false}``
    ends it and writes the profile, if one ran."""
    message = await receive()
    switch = orjson.loads(message.get("body") or b"{}")
    on = bool(switch.get("on"))
    if on:
        meters.cpu.clear()
        meters.requests = 0
        if switch.get("profile") and output is not None:
            meters.profiler = cProfile.Profile()
            meters.profiler.enable()
    elif meters.profiler is not None:
        meters.profiler.disable()
        meters.profiler.dump_stats(str(output))
        meters.profiler = None
    await _json(send, {"profiling": on})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from chat.http.devserver import create_app

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile-output", type=Path, help="where POST /_profile writes cProfile stats")
    args = parser.parse_args(argv)
    meters = Meters()
    instrument(meters)
    app = metering(create_app(Path("/nonexistent")), meters, args.profile_output)  # type: ignore[arg-type]
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""A simulated OpenAI-compatible upstream for benchmarks and socket tests, on 127.0.0.1 only.

Serves /v1/chat/completions (streamed or not), /v1/embeddings and /v1/models, plus the
Azure OpenAI paths (/openai/deployments/{name}/...), as a bare ASGI app so that the
simulator costs little CPU next to the app it measures.

Timing and faults are set per process (command-line options) and can be overridden per
request by a directive in the last user message, so one running upstream serves every
scenario of a test suite: ``[[upstream ttft=0.3 tps=20 tokens=60 fail=drop after=5]]``.

Latency applies to every call, as with a real model: the process option ``--ttft`` is the
wait before the first streamed chunk AND before a non-streamed answer (query rewrite,
follow-ups), unless ``--delay`` sets the latter apart; ``--embed-delay`` is the embeddings
call's. A directive's ``ttft`` changes the streamed answer's wait only and ``delay`` the
non-streamed calls', so a test can slow one call without the others.

Directives:
    ttft=SECONDS       delay before the first streamed chunk
    tps=N              tokens per second after that
    tokens=N           answer length in tokens
    chunk=N            tokens per SSE chunk
    fail=KIND          status | hang | drop | malformed | error-event
    call=KIND          with fail=status: which call fails, answer (streamed) | query | followups | all
    after=N            ...after N tokens (hang, drop, malformed, error-event)
    status=CODE        with fail=status: the HTTP status to answer
    times=N            with fail=status: only the first N attempts of this message fail
    retry_after=S      with fail=status: the Retry-After header
    delay=SECONDS      delay before answering a non-streamed call (query rewrite, follow-ups)

Process options only: --embed-delay (embeddings calls carry no directive, just the query).

GET /_stats returns counters, including ``cancelled``: streams whose client went away
before the end (what the disconnect tests look for), with the time each was noticed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EMBEDDING_DIMENSIONS = 384
QUERY_REPLY = "pizza recipes with mushroom and pineapple"
FOLLOWUP_REPLY = "What oven temperature should I use?\nCan I make the dough a day ahead?\nWhich cheese melts best?"
WORDS = (
    "Sure",
    "!",
    " Here",
    "'s",
    " a",
    " pizza",
    " with",
    " mushroom",
    " and",
    " pineapple",
    " [mushroom-pineapple.md]",
    ".",
)
_DIRECTIVE = re.compile(r"\[\[upstream ([^\]]*)\]\]")


@dataclass(frozen=True)
class Behaviour:
    ttft: float = 0.05
    tps: float = 200.0
    tokens: int = 24
    chunk: int = 1
    fail: str = ""
    call: str = "answer"
    after: int = 0
    status: int = 500
    times: int = 1_000_000
    retry_after: float = 0.0
    delay: float = 0.05  # the process default follows ttft (see main)
    embed_delay: float = 0.0

    def override(self, text: str) -> Behaviour:
        """This behaviour changed by the directive in ``text``; ValueError names a key it does not know."""
        match = _DIRECTIVE.search(text)
        if not match:
            return self
        changes: dict[str, Any] = {}
        for pair in match.group(1).split():
            key, _, value = pair.partition("=")
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown upstream directive {key!r}")
            changes[key] = type(getattr(self, key))(value)
        return replace(self, **changes)


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    cancelled: list[float] = field(default_factory=list)
    completed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "cancelled": self.cancelled, "completed": self.completed}


def _chunk_bytes(completion_id: str, content: str | None, finish_reason: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "simulated",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _usage_bytes(completion_id: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": 0, "model": "simulated"}
    return b"data: " + orjson.dumps({**body, "choices": [], "usage": usage}) + b"\n\n"


def fake_embedding(text: str) -> list[float]:
    """A deterministic unit-ish vector from the text's words, so similar texts get similar vectors."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "little") % EMBEDDING_DIMENSIONS] += 1.0
    return vector


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class SimulatedUpstream:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stats = Stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "GET":
            if path == "/_stats":
                await _json(send, 200, self.stats.as_dict())
            elif path.endswith("/models"):
                await _json(send, 200, {"object": "list", "data": [{"id": "simulated", "object": "model"}]})
            else:
                await _json(send, 404, {"error": {"message": "not found"}})
            return
        body = await _read_body(receive)
        request = orjson.loads(body) if body else {}
        if path.endswith("/embeddings"):
            await self._embeddings(send, request)
        elif path.endswith("/chat/completions"):
            await self._chat(scope, receive, send, request)
        else:
            await _json(send, 404, {"error": {"message": "not found"}})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _embeddings(self, send: Send, request: dict[str, Any]) -> None:
        self.stats.requests["embeddings"] += 1
        await asyncio.sleep(self.behaviour.embed_delay)
        texts = request.get("input") or []
        texts = [texts] if isinstance(texts, str) else texts
        # Like OpenAI and Azure OpenAI: base64 of little-endian float32 when asked (the openai SDK asks by
        # default), a list of floats otherwise. Floats would cost the SDK a model per number to parse.
        encode = _base64 if request.get("encoding_format") == "base64" else list
        data = [
            {"object": "embedding", "index": i, "embedding": encode(fake_embedding(t))} for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        await _json(send, 200, {"object": "list", "data": data, "model": request.get("model"), "usage": usage})

    async def _chat(self, scope: Scope, receive: Receive, send: Send, request: dict[str, Any]) -> None:
        messages = request.get("messages") or []
        last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
        try:
            behaviour = self.behaviour.override(last_user)
        except ValueError as error:
            await _json(send, 400, {"error": {"message": str(error)}})
            return
        streamed = bool(request.get("stream"))
        kind = "answer" if streamed else ("followups" if "follow-up" in system else "query")
        self.stats.requests[kind] += 1
        if behaviour.fail == "status" and behaviour.call in (kind, "all"):
            # Counted per question: the line that carries the directive (the rest of the message
            # holds the sources between per-request nonce markers, new on every attempt).
            key = f"{kind}:{next(line for line in last_user.splitlines() if _DIRECTIVE.search(line))}"
            self.stats.attempts[key] += 1
            if self.stats.attempts[key] <= behaviour.times:
                headers = [(b"retry-after", str(behaviour.retry_after).encode())] if behaviour.retry_after else []
                await _json(send, behaviour.status, {"error": {"message": "simulated failure"}}, headers)
                return
        if not streamed:
            await asyncio.sleep(behaviour.delay)
            text = FOLLOWUP_REPLY if kind == "followups" else QUERY_REPLY
            await _json(send, 200, _completion(text))
            return
        await self._stream(receive, send, behaviour)

    async def _stream(self, receive: Receive, send: Send, behaviour: Behaviour) -> None:
        """Stream the answer; a client that goes away cancels this task (recorded in stats.cancelled)."""
        completion_id = f"chatcmpl-{time.monotonic_ns()}"
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self._emit(send, behaviour, completion_id)
        except asyncio.CancelledError:
            if not gone:
                raise
            self.stats.cancelled.append(time.time())
        except _Drop:
            pass  # returning without finishing the body makes uvicorn close the connection
        finally:
            watcher.cancel()

    async def _emit(self, send: Send, behaviour: Behaviour, completion_id: str) -> None:
        async def body(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        await asyncio.sleep(behaviour.ttft)
        loop = asyncio.get_running_loop()
        first_chunk_at = loop.time()
        interval = behaviour.chunk / behaviour.tps
        sent = 0
        while sent < behaviour.tokens:
            if behaviour.fail and behaviour.fail != "status" and sent >= behaviour.after:
                if behaviour.fail == "hang":
                    await asyncio.sleep(3600)
                if behaviour.fail == "malformed":
                    await body(b"data: {not json\n\n")
                elif behaviour.fail == "error-event":
                    await body(b'data: {"error": {"message": "simulated", "type": "server_error"}}\n\n')
                raise _Drop
            pieces = "".join(WORDS[(sent + i) % len(WORDS)] for i in range(behaviour.chunk))
            await body(_chunk_bytes(completion_id, pieces, None))
            sent += behaviour.chunk
            if sent < behaviour.tokens:
                # Paced against the first chunk, so a busy event loop does not stretch the rate.
                await asyncio.sleep(max(0.0, first_chunk_at + (sent / behaviour.chunk) * interval - loop.time()))
        await body(_chunk_bytes(completion_id, None, "stop"))
        await body(_usage_bytes(completion_id, 50, sent))
        await body(b"data: [DONE]\n\n", more=False)
        self.stats.completed += 1


class _Drop(Exception):
    """The simulated connection drop: end the response without its last chunk."""


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-simulated",
        "object": "chat.completion",
        "created": 0,
        "model": "simulated",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    }


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = orjson.dumps(body)
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start_headers + (headers or [])})
    await send({"type": "http.response.body", "body": data})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8011)
    defaults = Behaviour()
    parser.add_argument("--ttft", type=float, default=defaults.ttft)
    parser.add_argument("--tps", type=float, default=defaults.tps)
    parser.add_argument("--tokens", type=int, default=defaults.tokens)
    parser.add_argument("--chunk", type=int, default=defaults.chunk)
    parser.add_argument(
        "--delay", type=float, help="wait before a non-streamed answer (query rewrite, follow-ups); default: --ttft"
    )
    parser.add_argument("--embed-delay", type=float, default=defaults.embed_delay, help="wait before embeddings")
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        ttft=args.ttft,
        tps=args.tps,
        tokens=args.tokens,
        chunk=args.chunk,
        delay=args.ttft if args.delay is None else args.delay,
        embed_delay=args.embed_delay,
    )
    uvicorn.run(SimulatedUpstream(behaviour), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

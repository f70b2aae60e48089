"""A typical SDK-based streaming RAG backend: the comparison the README quotes, measured, not assumed.

It does what most async chat backends built on the openai SDK do: one AsyncOpenAI client
(the SDK's default httpx transport) made at start-up, ``stream=True`` and ``async for`` over
the SDK's pydantic chunk objects, ``model_dump()`` and ``json.dumps`` per chunk, one task
per request (uvicorn's), starlette's StreamingResponse. It serves the same route and NDJSON
shape as the app and makes the same upstream calls with the same prompts (query rewrite,
embedding, streamed answer), and searches the same local index with the same code, so the
difference in the figures is the request and streaming path, not the work.

    python -m benchmarks.baselines.sdk_app --port 8020 --upstream http://127.0.0.1:8011/v1 \\
        --index /tmp/index.sqlite --embedding-model multilingual-e5-small-q4

Not part of the product: no auth, no limits, no heartbeats, minimal validation.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chat import prompts
from chat.pipeline import QUERY_MAX_TOKENS
from chat.providers.llm import Embedder
from chat.providers.local_index import LocalIndexRetriever


def _line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":")) + "\n"


class Backend:
    def __init__(self, upstream: str, index: Path, chat_model: str, embedding_model: str) -> None:
        self.client = AsyncOpenAI(base_url=upstream, api_key="no-key-needed", max_retries=3, timeout=30)
        self.chat_model = chat_model
        self.retriever = LocalIndexRetriever(
            index, Embedder(self.client, embedding_model, send_input_type=True, timeout_seconds=30)
        )

    async def events(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        question = messages[-1]["content"]
        yield _line({"delta": {"role": "assistant"}, "context": {"stage": {"name": "question", "status": "done"}}})
        try:
            if len(messages) > 1:  # the app's rewrite policy (auto): a first question is searched as asked
                rewrite = await self.client.chat.completions.create(
                    model=self.chat_model,
                    messages=[{"role": "system", "content": prompts.QUERY_PROMPT}, *prompts.QUERY_EXAMPLES, *messages],  # type: ignore[list-item]
                    temperature=0.0,
                    max_tokens=QUERY_MAX_TOKENS,
                )
                query = rewrite.choices[0].message.content or question
            else:
                query = question
            yield _line({"delta": {}, "context": {"stage": {"name": "query", "status": "done", "detail": query}}})
            results = await self.retriever.search(query, top=3, mode="hybrid", semantic_ranker=None)
            sources = prompts.sources_block(
                [(result.source, result.title, result.content) for result in results], prompts.new_nonce()
            )
            points = [{"id": r.id, "title": r.title, "source": r.source} for r in results]
            yield _line({"delta": {}, "context": {"stage": {"name": "search", "status": "done", "detail": points}}})
            stream = await self.client.chat.completions.create(
                model=self.chat_model,
                messages=[
                    {"role": "system", "content": prompts.ANSWER_PROMPT},
                    {
                        "role": "user",
                        "content": prompts.answer_question(sources, question, [r.source for r in results]),
                    },
                ],
                temperature=0.3,
                stream=True,
                stream_options={"include_usage": True},
            )
            finish_reason, usage = "stop", None
            async for chunk in stream:
                event = chunk.model_dump()
                if event.get("usage"):
                    usage = event["usage"]
                if not event["choices"]:
                    continue
                choice = event["choices"][0]
                finish_reason = choice["finish_reason"] or finish_reason
                if choice["delta"].get("content"):
                    yield _line({"delta": {"content": choice["delta"]["content"]}})
            context = {"dataPoints": [{**p, "content": r.content} for p, r in zip(points, results, strict=True)]}
            yield _line({"delta": {}, "finishReason": finish_reason, "context": {**context, "usage": usage}})
        except Exception as error:  # the usual catch-all: one error line
            yield _line({"delta": {}, "error": {"code": "internal_error", "message": type(error).__name__}})

    async def chat_stream(self, request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") if isinstance(body, dict) else None
        if not messages:
            return JSONResponse({"error": {"code": "invalid_request", "message": "messages"}}, status_code=400)
        return StreamingResponse(self.events(messages), media_type="application/x-ndjson")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8011/v1")
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--chat-model", default="simulated")
    parser.add_argument("--embedding-model", required=True)
    args = parser.parse_args(argv)
    backend = Backend(args.upstream, args.index, args.chat_model, args.embedding_model)
    routes = [
        Route("/api/chat/stream", backend.chat_stream, methods=["POST"]),
        Route("/api/health", backend.health, methods=["GET"]),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

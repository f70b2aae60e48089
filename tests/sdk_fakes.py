"""Objects shaped like the SDKs' own, for monkeypatching at the SDK boundary (the seed pattern).

``ChatScript`` replaces ``AsyncCompletions.create``: a ChatCompletion for plain calls (a
different one for the query rewrite than for follow-up questions) and, for ``stream=True``,
a ``StreamedAnswer`` made of real ``ChatCompletionChunk`` objects. The app reads streams
through the SDK's raw streaming response, so StreamedAnswer offers both faces of the SDK:
``iter_bytes()``/``close()`` like ``AsyncAPIResponse`` (what the app calls) and async
iteration over the chunk objects like ``AsyncStream``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_message import ChatCompletionMessage
from openai.types.completion_usage import CompletionUsage

from benchmarks.upstream import fake_embedding
from chat.prompts import ANSWERABLE_CHECK, FOLLOWUP_PROMPT, QUERY_PROMPT

QUERY_TEXT = "mushroom pineapple pizza"
FOLLOWUP_TEXT = "What oven temperature works best?\n2. How long should the dough rest?\nThanks for asking"
ANSWER_PIECES = ["Try", " the", " mushroom", " and", " pineapple", " pizza", " [mushroom-pineapple.md]", "."]


def completion(text: str, prompt_tokens: int = 30, completion_tokens: int = 6) -> ChatCompletion:
    return ChatCompletion(
        id="chatcmpl-test",
        object="chat.completion",
        created=0,
        model="test-model",
        choices=[Choice(index=0, finish_reason="stop", message=ChatCompletionMessage(role="assistant", content=text))],
        usage=CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


def answer_chunks(pieces: list[str], finish_reason: str = "stop") -> list[ChatCompletionChunk]:
    def chunk(delta: ChoiceDelta, finish: Any = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(
            id="chatcmpl-test", object="chat.completion.chunk", created=0, model="test-model", choices=[choice]
        )

    chunks = [chunk(ChoiceDelta(role="assistant", content=""))]
    chunks += [chunk(ChoiceDelta(content=piece)) for piece in pieces]
    chunks.append(chunk(ChoiceDelta(), finish_reason))
    usage = CompletionUsage(prompt_tokens=120, completion_tokens=len(pieces), total_tokens=120 + len(pieces))
    chunks.append(
        ChatCompletionChunk(
            id="chatcmpl-test", object="chat.completion.chunk", created=0, model="test-model", choices=[], usage=usage
        )
    )
    return chunks


@dataclass
class StreamedAnswer:
    """A streamed chat completion: real chunk objects, served as the SSE bytes the API sends."""

    chunks: list[ChatCompletionChunk]
    raise_after: int | None = None
    error: Exception | None = None
    closed: bool = False

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        for index, chunk in enumerate(self.chunks):
            if self.raise_after is not None and index >= self.raise_after and self.error:
                raise self.error
            yield chunk

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self:
            yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def close(self) -> None:
        self.closed = True


@dataclass
class RawSSE:
    """A streamed response that sends exactly these bytes, as they would arrive from the network."""

    chunks: list[bytes]
    closed: bool = False

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def close(self) -> None:
        self.closed = True


@dataclass
class ChatScript:
    """Stands in for ``AsyncCompletions.create`` and records every call's keyword arguments."""

    query_text: str = QUERY_TEXT
    followup_text: str = FOLLOWUP_TEXT
    # The relevance gate's yes/no (chat.pipeline._sources_answer).
    check_text: str = "Yes"
    answer_pieces: list[str] = field(default_factory=lambda: list(ANSWER_PIECES))
    stream_error: Exception | None = None
    stream_error_after: int = 0
    # When set, the streamed answer is these raw server-sent event bytes instead of answer_pieces.
    raw_sse: list[bytes] | None = None
    # When set, the follow-up call raises it (the answer call does not).
    followup_error: Exception | None = None
    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    streams: list[StreamedAnswer] = field(default_factory=list)

    async def create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        if kwargs.get("stream"):
            if self.raw_sse is not None:
                return RawSSE(self.raw_sse)
            stream = StreamedAnswer(answer_chunks(self.answer_pieces), self.stream_error_after, self.stream_error)
            self.streams.append(stream)
            return stream
        system = kwargs["messages"][0]["content"]
        if _is_check(kwargs):
            return completion(self.check_text, completion_tokens=1)
        if system == QUERY_PROMPT:
            return completion(self.query_text)
        if system == FOLLOWUP_PROMPT:
            if self.followup_error is not None:
                raise self.followup_error
            return completion(self.followup_text, completion_tokens=20)
        raise AssertionError(f"unexpected non-streamed call: {system[:60]}")

    def calls_with(self, prompt: str) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["messages"][0]["content"] == prompt]

    @property
    def answer_calls(self) -> list[dict[str, Any]]:
        return [call for call in self.calls if call.get("stream")]

    @property
    def check_calls(self) -> list[dict[str, Any]]:
        """The relevance gate's yes/no calls (chat.pipeline._sources_answer)."""
        return [call for call in self.calls if _is_check(call)]


def _is_check(call: dict[str, Any]) -> bool:
    return not call.get("stream") and str(call["messages"][-1]["content"]).endswith(ANSWERABLE_CHECK)


@dataclass
class EmbeddingScript:
    """Stands in for ``AsyncEmbeddings.create``: deterministic word-hash vectors."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def create(self, **kwargs: Any) -> CreateEmbeddingResponse:
        self.calls.append(kwargs)
        texts = kwargs["input"]
        return CreateEmbeddingResponse(
            object="list",
            model=kwargs["model"],
            data=[
                Embedding(object="embedding", index=index, embedding=fake_embedding(text))
                for index, text in enumerate(texts)
            ],
            usage={"prompt_tokens": len(texts), "total_tokens": len(texts)},
        )


class SearchResults:
    """Shaped like the aio SearchClient's AsyncSearchItemPaged: an async iterator of result dicts."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self._documents = documents

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for document in self._documents:
            yield document


@dataclass
class SearchScript:
    """Stands in for the aio ``SearchClient.search`` and records its arguments."""

    documents: list[dict[str, Any]]
    calls: list[dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None

    async def search(self, search_text: str | None = None, **kwargs: Any) -> SearchResults:
        self.calls.append({"search_text": search_text, **kwargs})
        if self.error is not None:
            raise self.error
        return SearchResults(self.documents[: kwargs.get("top", 50)])

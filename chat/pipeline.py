"""The RAG pipeline: an async generator of typed events, knowing nothing of HTTP.

question -> search query (model) -> top-k chunks (retriever) -> grounded answer, streamed
(model) -> optional follow-up questions (model) -> completed. The first event is yielded
before any upstream call, so a client sees life at once. Errors are raised as ChatError
subclasses; whoever consumes the events decides how to report them.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from openai.types.chat import ChatCompletionMessageParam

from chat.events import AnswerDelta, ChatEvent, Completed, FollowupQuestions, SearchResult, Stage, Thought, Usage
from chat.protocol import ChatRequest, Message
from chat.providers.llm import ChatModel, StreamOutcome
from chat.providers.retriever import Retriever

QUERY_PROMPT = (
    "Turn the user's last question into a short keyword search query for a document index. "
    "Use the conversation for context. Reply with the query only."
)
# Two worked examples: small local models copy the form far better than they follow instructions.
QUERY_EXAMPLES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "How do I reset my password if I forgot it?"},
    {"role": "assistant", "content": "reset forgotten password"},
    {"role": "user", "content": "What's the best temperature to bake bread at home?"},
    {"role": "assistant", "content": "home bread baking temperature"},
]
ANSWER_PROMPT = (
    "You answer questions using only the sources given with the question. "
    "After each fact, cite its source name in square brackets, for example [guide.md]. "
    "If the sources do not contain the answer, say that you don't know. Be brief."
)
FOLLOWUP_PROMPT = (
    "Suggest three short follow-up questions the user could ask next, answerable from the sources. "
    "Write one question per line, nothing else."
)
NO_SOURCES_ANSWER = "I could not find anything about that in the documents."
# How much of the conversation the model sees: the last turns, enough for follow-up questions.
HISTORY_MESSAGES = 6
QUERY_MAX_TOKENS = 48
FOLLOWUP_MAX_TOKENS = 120
SNIPPET_CHARS = 200
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


class _Clock:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._start = now()

    def elapsed_ms(self) -> int:
        return int((self._now() - self._start) * 1000)


def _history(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    """The last turns as model messages (one literal per role, so the SDK's TypedDicts type-check)."""
    history: list[ChatCompletionMessageParam] = []
    for message in messages[-HISTORY_MESSAGES:]:
        if message.role == "user":
            history.append({"role": "user", "content": message.content})
        else:
            history.append({"role": "assistant", "content": message.content})
    return history


def _clean_query(text: str, question: str) -> str:
    """The model's query, or the question itself when a (small) model answers with something unusable.

    A query longer than the question is a model that chatted instead of rewriting.
    """
    lines = [line.strip().strip("\"'").removeprefix("Query:").strip() for line in text.strip().splitlines()]
    query = lines[0] if lines else ""
    return query if query and len(query.split()) <= len(question.split()) else question


def _flat(text: str) -> str:
    """Text on one line, runs of white space folded."""
    return " ".join(text.split())


def _sources_text(results: list[SearchResult], texts: list[str]) -> str:
    return "\n".join(f"[{result.source}]: {text}" for result, text in zip(results, texts, strict=True))


def _parse_followups(text: str) -> list[str]:
    questions = [_LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
    return [question for question in questions if question.endswith("?")][:3]


def _result_summary(result: SearchResult, text: str) -> dict[str, str]:
    snippet = text
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rsplit(" ", 1)[0] + "…"
    return {"id": result.id, "title": result.title, "source": result.source, "snippet": snippet}


async def answer(
    request: ChatRequest,
    model: ChatModel,
    retriever: Retriever,
    *,
    now: Callable[[], float] = time.perf_counter,
) -> AsyncGenerator[ChatEvent, None]:
    """Answer the last user message of ``request`` from the documents, one event at a time."""
    clock = _Clock(now)
    overrides = request.context.overrides
    question = request.question
    yield Stage("question", "done", "Processing your question", clock.elapsed_ms(), {"question": question})

    usage = Usage()
    history = _history(request.messages)
    rewrite = await model.complete(
        [{"role": "system", "content": QUERY_PROMPT}, *QUERY_EXAMPLES, *history],
        temperature=0.0,
        max_tokens=QUERY_MAX_TOKENS,
    )
    usage.add(rewrite.prompt_tokens, rewrite.completion_tokens)
    query = _clean_query(rewrite.text, question)
    yield Stage("query", "done", "Generated search query", clock.elapsed_ms(), {"query": query})

    results = await retriever.search(
        query,
        top=overrides.top,
        mode=overrides.retrieval_mode,
        semantic_ranker=overrides.semantic_ranker,
    )
    title = f"Found {len(results)} result{'' if len(results) == 1 else 's'}"
    texts = [_flat(result.content) for result in results]
    summaries = [_result_summary(result, text) for result, text in zip(results, texts, strict=True)]
    yield Stage("search", "done", title, clock.elapsed_ms(), {"results": summaries})

    yield Stage("answer", "started", "Generating answer", clock.elapsed_ms())
    sources = _sources_text(results, texts)
    answer_messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": ANSWER_PROMPT},
        *history[:-1],
        # Sources first, the question last: small models attend best to what they read last.
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}"},
    ]
    thoughts = [
        Thought("Search query", query),
        Thought("Search results", summaries),
        Thought("Prompt to generate answer", answer_messages),
    ]
    if not results:
        yield AnswerDelta(NO_SOURCES_ANSWER)
        yield Completed("stop", results, thoughts, usage)
        return

    outcome = StreamOutcome(usage=usage)
    async with aclosing(model.stream(answer_messages, temperature=overrides.temperature, outcome=outcome)) as tokens:
        async for text in tokens:
            yield AnswerDelta(text)

    if overrides.suggest_followup_questions:
        followups = await model.complete(
            [{"role": "system", "content": FOLLOWUP_PROMPT}, {"role": "user", "content": f"{question}\n\n{sources}"}],
            temperature=0.5,
            max_tokens=FOLLOWUP_MAX_TOKENS,
        )
        usage.add(followups.prompt_tokens, followups.completion_tokens)
        yield FollowupQuestions(_parse_followups(followups.text))
    yield Completed(outcome.finish_reason or "stop", results, thoughts, usage)

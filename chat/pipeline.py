"""The RAG pipeline: an async generator of typed events, knowing nothing of HTTP.

question -> search query (the question itself, or a model rewrite when earlier turns need
resolving) -> top-k chunks (retriever) -> grounded answer, streamed (model) -> optional
follow-up questions (model) -> completed. The first event is yielded before any upstream
call, so a client sees life at once. Errors are raised as ChatError subclasses; whoever
consumes the events decides how to report them.

Every model call is planned against a token budget (chat.budget): a cap on what it may
write, and a prompt that fits the model's context window, so a long conversation is trimmed
(oldest turns first) instead of being refused upstream, and no caller can run up the bill.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import replace

from openai.types.chat import ChatCompletionMessageParam

from chat import prompts, relevance
from chat.budget import Budget, fit_sources
from chat.errors import UpstreamError
from chat.events import (
    AnswerDelta,
    ChatEvent,
    Completed,
    FollowupQuestions,
    Notice,
    SearchResult,
    Stage,
    Thought,
    Usage,
)
from chat.protocol import ChatRequest, Message
from chat.providers.llm import ChatModel, StreamOutcome
from chat.providers.retriever import Retriever
from chat.settings import AnsweringSettings

logger = logging.getLogger(__name__)

QUERY_MAX_TOKENS = 48
# "Yes" or "No" (and room for a model that puts a space or a full stop first).
CHECK_MAX_TOKENS = 2
FOLLOWUP_MAX_TOKENS = 120
SNIPPET_CHARS = 200
# The thought that says "I don't know" was answered without an answer call, and why.
GATE_THOUGHT = "The sources do not answer the question"
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
# What the client is told when the model's answer ended for a reason other than "stop".
ENDING_NOTICES = {
    "content_filter": Notice(
        "content_filtered", "The rest of this answer was withheld by the service's content filter."
    ),
    "length": Notice("answer_truncated", "The answer reached its length limit and was cut short."),
}


class _Clock:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._start = now()

    def elapsed_ms(self) -> int:
        return int((self._now() - self._start) * 1000)


def _model_messages(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    """Conversation turns as model messages (one literal per role, so the SDK's TypedDicts type-check)."""
    history: list[ChatCompletionMessageParam] = []
    for message in messages:
        if message.role == "user":
            history.append({"role": "user", "content": message.content})
        else:
            history.append({"role": "assistant", "content": message.content})
    return history


def _needs_rewrite(policy: str, earlier_turns: list[Message]) -> bool:
    """Whether to ask the model for a search query: a first question is searched as it is asked."""
    return policy == "always" or (policy == "auto" and bool(earlier_turns))


def _clean_query(text: str, question: str) -> str:
    """The model's query, or the question itself when a (small) model answers with something unusable.

    A query longer than the question is a model that chatted instead of rewriting.
    """
    lines = [line.strip().strip("\"'").removeprefix("Query:").strip() for line in text.strip().splitlines()]
    query = lines[0] if lines else ""
    return query if query and len(query.split()) <= len(question.split()) else question


def _parse_followups(text: str) -> list[str]:
    questions = [_LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
    return [question for question in questions if question.endswith("?")][:3]


def _result_summary(result: SearchResult, text: str) -> dict[str, str]:
    snippet = " ".join(text.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rsplit(" ", 1)[0] + "…"
    return {"id": result.id, "title": result.title, "source": result.source, "snippet": snippet}


def _search_title(count: int, notes: list[str]) -> str:
    title = f"Found {count} result{'' if count == 1 else 's'}"
    return f"{title} ({'; '.join(notes)})" if notes else title


async def _followups(model: ChatModel, question: str, sources: str, usage: Usage) -> list[str] | None:
    """Follow-up questions, or None when the call fails: the answer is already out and stays valid."""
    try:
        followups = await model.complete(
            [
                {"role": "system", "content": prompts.FOLLOWUP_PROMPT},
                {"role": "user", "content": prompts.followup_request(sources, question)},
            ],
            temperature=0.5,
            max_tokens=FOLLOWUP_MAX_TOKENS,
        )
    except UpstreamError as error:
        logger.warning("follow-up questions skipped: %s", error.code)
        return None
    usage.add(followups.prompt_tokens, followups.completion_tokens)
    return _parse_followups(followups.text)


async def _sources_answer(
    model: ChatModel, answer_messages: list[ChatCompletionMessageParam], question_message: str, usage: Usage
) -> bool:
    """The model's own yes/no on whether the sources it is about to answer from hold the answer.

    Asked with the answer call's messages and the question extended by one line
    (prompts.answerability_check), so a server with a prompt cache pays for that line only. A
    small model told "if the sources do not answer, say you don't know" still answers from its
    memory; asked the question on its own, it tells the cases apart far better (README, Measured here).
    """
    check = await model.complete(
        [*answer_messages[:-1], {"role": "user", "content": prompts.answerability_check(question_message)}],
        temperature=0.0,
        max_tokens=CHECK_MAX_TOKENS,
    )
    usage.add(check.prompt_tokens, check.completion_tokens)
    return not check.text.strip().lower().startswith("no")


async def _unanswered(
    model: ChatModel,
    *,
    question: str,
    query: str,
    read: list[SearchResult],
    answer_messages: list[ChatCompletionMessageParam],
    question_message: str,
    usage: Usage,
    relevance_gate: bool,
) -> tuple[str, str] | None:
    """The answer to give without an answer call, and why; None when the model is to answer.

    ``read`` are the sources as the model reads them (cut to the budget), ``query`` what was
    searched for (the question, or a rewrite of it that resolves earlier turns).
    """
    if not read:
        return prompts.NO_SOURCES_ANSWER, "nothing was found"
    if not relevance_gate:
        return None
    if not relevance.covers(query, read):
        return prompts.NO_SOURCES_ANSWER, "no source shares a word with it"
    if relevance.asks_yes_or_no(question) and relevance.covers_all(query, read):
        # The model's yes/no cannot judge a question that is itself answered yes or no: the 1.5B
        # model answers the question instead ("Can I thaw dough in the microwave?" -> "No", with the
        # answer in its sources). Such a question passes when its every distinctive word is in the sources.
        return None
    if not await _sources_answer(model, answer_messages, question_message, usage):
        return prompts.DONT_KNOW, "the model found no answer in them"
    return None


def _missing_citation(text: str, results: list[SearchResult]) -> str | None:
    """A citation for an answer that names none of its sources: the one its words came from.

    Small models often state a fact from a source without naming it. Nothing is added to an
    answer that cites a source or says it does not know.
    """
    if prompts.DONT_KNOW_START in text or any(f"[{result.source}]" in text for result in results):
        return None
    source = relevance.best_source(text, results)
    return None if source is None else f" [{source.source}]"


async def answer(
    request: ChatRequest,
    model: ChatModel,
    retriever: Retriever,
    options: AnsweringSettings,
    *,
    relevance_gate: bool = False,
    now: Callable[[], float] = time.perf_counter,
) -> AsyncGenerator[ChatEvent, None]:
    """Answer the last user message of ``request`` from the documents, one event at a time.

    With ``relevance_gate``, sources that share no distinctive word with the search query get
    "I don't know" without a model call (chat.relevance).
    """
    clock = _Clock(now)
    overrides = request.context.overrides
    question = request.question
    yield Stage("question", "done", "Processing your question", clock.elapsed_ms(), {"question": question})

    budget = Budget.for_model(model.context_tokens, options.chat_answer_max_tokens, question, model.sources_tokens)
    earlier = request.messages[:-1]
    usage = Usage()
    if _needs_rewrite(options.chat_query_rewrite, earlier):
        rewrite_turns = budget.history(earlier, prompts.QUERY_PROMPT, options.chat_history_max_tokens)
        rewrite = await model.complete(
            [
                {"role": "system", "content": prompts.QUERY_PROMPT},
                *prompts.QUERY_EXAMPLES,
                *_model_messages(rewrite_turns),
                {"role": "user", "content": question},
            ],
            temperature=0.0,
            max_tokens=QUERY_MAX_TOKENS,
        )
        usage.add(rewrite.prompt_tokens, rewrite.completion_tokens)
        query = _clean_query(rewrite.text, question)
        yield Stage("query", "done", "Generated search query", clock.elapsed_ms(), {"query": query, "rewritten": True})
    else:
        query = question
        detail = {"query": query, "rewritten": False}
        yield Stage("query", "done", "Searching for your question as asked", clock.elapsed_ms(), detail)

    notes: list[str] = []
    found = await retriever.search(
        query,
        top=overrides.top,
        mode=overrides.retrieval_mode,
        semantic_ranker=overrides.semantic_ranker,
        notes=notes,
    )
    results, texts = fit_sources(found, [result.content for result in found], budget.sources_tokens)
    summaries = [_result_summary(result, text) for result, text in zip(results, texts, strict=True)]
    search_detail = {"results": summaries, **({"notes": notes} if notes else {})}
    yield Stage("search", "done", _search_title(len(results), notes), clock.elapsed_ms(), search_detail)

    yield Stage("answer", "started", "Generating answer", clock.elapsed_ms())
    nonce = prompts.new_nonce()
    sources = prompts.sources_block([(r.source, r.title, text) for r, text in zip(results, texts, strict=True)], nonce)
    instructions = prompts.GATED_ANSWER_PROMPT if relevance_gate else prompts.ANSWER_PROMPT
    answer_turns = budget.history(earlier, instructions + sources, options.chat_history_max_tokens)
    question_message = prompts.answer_question(sources, question, [r.source for r in results])
    answer_messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": instructions},
        *_model_messages(answer_turns),
        {"role": "user", "content": question_message},
    ]
    thoughts = [Thought("Search query", query), Thought("Search results", summaries)]
    if options.chat_expose_prompt:
        thoughts.append(Thought("Prompt to generate answer", answer_messages))
    read = [replace(result, content=text) for result, text in zip(results, texts, strict=True)]
    unanswered = await _unanswered(
        model,
        question=question,
        query=query,
        read=read,
        answer_messages=answer_messages,
        question_message=question_message,
        usage=usage,
        relevance_gate=relevance_gate,
    )
    if unanswered is not None:
        text, reason = unanswered
        yield AnswerDelta(text)
        yield Completed("stop", results, [*thoughts, Thought(GATE_THOUGHT, reason)], usage)
        return

    outcome = StreamOutcome(usage=usage)
    tokens = model.stream(
        answer_messages, temperature=overrides.temperature, max_tokens=budget.answer_tokens, outcome=outcome
    )
    written: list[str] = []
    async with aclosing(tokens):
        async for text in tokens:
            written.append(text)
            yield AnswerDelta(text)

    finish_reason = outcome.finish_reason or "stop"
    citation = _missing_citation("".join(written), read) if finish_reason == "stop" else None
    if citation is not None:
        yield AnswerDelta(citation)
    notice = ENDING_NOTICES.get(finish_reason)
    if notice is not None:
        yield notice
    if overrides.suggest_followup_questions and finish_reason != "content_filter":
        questions = await _followups(model, question, sources, usage)
        if questions is not None:
            yield FollowupQuestions(questions)
    yield Completed(finish_reason, results, thoughts, usage)

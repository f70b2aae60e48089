"""The RAG pipeline against SDK-boundary mocks: event order, and exactly what it sends upstream."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from pathlib import Path

import openai
import pytest
from azure.core.exceptions import HttpResponseError
from azure.search.documents.models import VectorizedQuery

from chat.errors import UpstreamError
from chat.events import AnswerDelta, ChatEvent, Completed, FollowupQuestions, Stage
from chat.pipeline import GATE_THOUGHT, answer
from chat.prompts import (
    ANSWER_PROMPT,
    ANSWERABLE_CHECK,
    DONT_KNOW,
    FOLLOWUP_PROMPT,
    GATED_ANSWER_PROMPT,
    NO_SOURCES_ANSWER,
    QUERY_PROMPT,
)
from chat.protocol import ChatRequest
from chat.services import get_services
from chat.settings import get_settings
from tests.sdk_fakes import ANSWER_PIECES, QUERY_TEXT, ChatScript, EmbeddingScript, SearchScript

QUESTION = "Can you suggest a pizza with mushroom and pineapple?"


def chat_request(*, followups: bool = False, **overrides: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "messages": [
                {"role": "user", "content": "What is a calzone?"},
                {"role": "assistant", "content": "A folded pizza."},
                {"role": "user", "content": QUESTION},
            ],
            "context": {"overrides": {"suggestFollowupQuestions": followups, **overrides}},
        }
    )


def pipeline(request: ChatRequest, *, relevance_gate: bool = False) -> AsyncGenerator[ChatEvent, None]:
    services = get_services()
    settings = services.settings
    return answer(request, services.openai.chat, services.retriever, settings.answering, relevance_gate=relevance_gate)


async def run(request: ChatRequest, *, relevance_gate: bool = False) -> list[ChatEvent]:
    return [event async for event in pipeline(request, relevance_gate=relevance_gate)]


def answer_text(events: list[ChatEvent]) -> str:
    return "".join(event.content for event in events if isinstance(event, AnswerDelta))


def stage_names(events: list[ChatEvent]) -> list[str]:
    return [f"{event.name}:{event.status}" for event in events if isinstance(event, Stage)]


async def test_stages_come_in_order_then_tokens_then_completion(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    events = await run(chat_request(followups=True))

    assert stage_names(events) == ["question:done", "query:done", "search:done", "answer:started"]
    assert isinstance(events[0], Stage)
    assert events[0].detail == {"question": QUESTION}
    assert events[1].detail == {"query": QUERY_TEXT, "rewritten": True}  # type: ignore[union-attr]
    deltas = [event.content for event in events if isinstance(event, AnswerDelta)]
    assert deltas == [piece for piece in ANSWER_PIECES if piece]
    first_delta = next(i for i, event in enumerate(events) if isinstance(event, AnswerDelta))
    assert first_delta > 3, "tokens come after the answer stage started"
    assert isinstance(events[-2], FollowupQuestions)
    assert events[-2].questions == ["What oven temperature works best?", "How long should the dough rest?"]
    done = events[-1]
    assert isinstance(done, Completed)
    assert done.finish_reason == "stop"
    assert {result.source for result in done.data_points} >= {"mushroom-pineapple.md"}
    # usage: rewrite (30+6) + streamed answer (120+8) + follow-ups (30+20)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (180, 34)
    elapsed = [event.elapsed_ms for event in events if isinstance(event, Stage)]
    assert elapsed == sorted(elapsed)


async def test_sends_the_exact_model_calls(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    events = await run(chat_request(followups=True, temperature=0.1))
    done = events[-1]
    assert isinstance(done, Completed)
    done_sources = done.data_points

    [rewrite] = chat_script.calls_with(QUERY_PROMPT)
    assert rewrite["model"] == get_settings().local_chat_model
    assert rewrite["stream"] is False
    assert rewrite["temperature"] == 0.0
    assert rewrite["messages"][5:] == [
        {"role": "user", "content": "What is a calzone?"},
        {"role": "assistant", "content": "A folded pizza."},
        {"role": "user", "content": QUESTION},
    ]
    [streamed] = chat_script.answer_calls
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}
    assert streamed["temperature"] == 0.1
    messages = streamed["messages"]
    assert messages[0] == {"role": "system", "content": ANSWER_PROMPT}
    assert messages[1:3] == rewrite["messages"][5:7], "the history goes to the answer call too"
    assert messages[-1]["role"] == "user"
    assert messages[-1]["content"].startswith("SOURCES:\n<<SOURCES ")
    # each source: its name and title at the margin, its lines indented; the best-ranked comes last,
    # next to the question
    content = messages[-1]["content"]
    assert "\n[mushroom-pineapple.md] Mushroom and pineapple pizza: Method\n  Brown the mushrooms in" in content
    best = done_sources[0]
    assert re.search(rf"\n\[{re.escape(best.source)}\] {re.escape(best.title)}\n(  [^\n]+\n)+<<END SOURCES", content)
    assert streamed["max_tokens"] == int(2048 * 0.8) // 4, "the local default's answer cap: a quarter of its window"
    assert messages[-1]["content"].endswith("\n\nQuestion: " + QUESTION)
    [followups] = chat_script.calls_with(FOLLOWUP_PROMPT)
    assert followups["stream"] is False
    # the local embedder is asked for a query embedding of the generated query, with E5's input type
    query_embedding = embedding_script.calls[-1]
    assert query_embedding["input"] == [QUERY_TEXT]
    assert query_embedding["extra_body"] == {"input_type": "query"}
    assert query_embedding["model"] == "multilingual-e5-small-q4"


async def test_no_followup_call_unless_asked(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    events = await run(chat_request(followups=False))
    assert not chat_script.calls_with(FOLLOWUP_PROMPT)
    assert not any(isinstance(event, FollowupQuestions) for event in events)


async def test_an_unusable_query_falls_back_to_the_question(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    chat_script.query_text = "   "
    events = await run(chat_request())
    assert events[1].detail == {"query": QUESTION, "rewritten": True}  # type: ignore[union-attr]


async def test_no_results_answers_without_calling_the_model(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    chat_script.query_text = "zzzz"
    events = await run(chat_request(retrievalMode="text"))
    assert [event.content for event in events if isinstance(event, AnswerDelta)] == [NO_SOURCES_ANSWER]
    assert not chat_script.answer_calls
    assert events[2].title == "Found 0 results"  # type: ignore[union-attr]
    done = events[-1]
    assert isinstance(done, Completed)
    assert [thought.description for thought in done.thoughts if thought.title == GATE_THOUGHT] == ["nothing was found"]


async def test_the_gate_asks_the_model_first_with_the_answer_calls_own_messages(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    events = await run(chat_request(), relevance_gate=True)

    [check] = chat_script.check_calls
    [streamed] = chat_script.answer_calls
    assert chat_script.calls.index(check) < chat_script.calls.index(streamed), "asked before the answer"
    assert (check["temperature"], check["max_tokens"], check["stream"]) == (0.0, 2, False)
    # the same messages but for one line after the question: a prompt cache serves the common prefix
    assert check["messages"][:-1] == streamed["messages"][:-1]
    assert check["messages"][-1]["content"] == streamed["messages"][-1]["content"] + "\n\n" + ANSWERABLE_CHECK
    assert streamed["messages"][0]["content"] == GATED_ANSWER_PROMPT, "let through, the model is not told to refuse"
    assert answer_text(events).startswith("Try the mushroom")
    done = events[-1]
    assert isinstance(done, Completed)
    assert all(thought.title != GATE_THOUGHT for thought in done.thoughts)
    assert done.usage.completion_tokens == 6 + 1 + len(ANSWER_PIECES), "rewrite, check and answer all counted"


@pytest.mark.parametrize("reply", ["No", " no.", "NO"])
async def test_the_gate_says_i_dont_know_without_an_answer_call_when_the_model_says_no(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript, reply: str
) -> None:
    chat_script.check_text = reply
    events = await run(chat_request(), relevance_gate=True)

    assert answer_text(events) == DONT_KNOW
    assert not chat_script.answer_calls
    done = events[-1]
    assert isinstance(done, Completed) and done.finish_reason == "stop"
    assert [thought.description for thought in done.thoughts if thought.title == GATE_THOUGHT] == [
        "the model found no answer in them"
    ]


@pytest.mark.parametrize(
    ("question", "earlier", "check_calls"),
    [
        ("Can I brown the mushrooms for the pineapple pizza?", [], 0),
        ("Can I grill the mushrooms for the pineapple pizza?", [], 1),  # "grill" is in no source
        ("How do I brown the mushrooms for the pineapple pizza?", [], 1),  # not a yes-or-no question
        ("Can I do that?", [], 1),  # no distinctive word to find in the sources
        # a follow-up: the yes-or-no form is the question's, the words those of the rewritten query
        ("Should I brown them?", ["What goes on the mushroom and pineapple pizza?", "Mushrooms."], 0),
    ],
)
async def test_a_yes_or_no_question_whose_every_word_is_in_the_sources_is_answered_without_the_check(
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    question: str,
    earlier: list[str],
    check_calls: int,
) -> None:
    chat_script.check_text = "No"  # the 1.5B model's reply when the answer to the question is "no"
    turns = [*earlier, question]
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": role, "content": text} for role, text in zip(roles, turns, strict=False)]
    events = await run(ChatRequest.model_validate({"messages": messages}), relevance_gate=True)

    assert len(chat_script.check_calls) == check_calls
    if check_calls:
        assert answer_text(events) == DONT_KNOW
    else:
        [streamed] = chat_script.answer_calls
        assert streamed["messages"][0]["content"] == GATED_ANSWER_PROMPT
        assert answer_text(events).startswith("Try the mushroom")


@pytest.mark.parametrize(
    ("pieces", "added"),
    [
        (["Brown the mushrooms", " and bake at 260 C for 9 minutes."], " [mushroom-pineapple.md]"),
        (["Use 500 g flour and 325 g water."], " [dough.md]"),
        (["Brown the mushrooms [mushroom-pineapple.md]."], ""),
        ([DONT_KNOW], ""),
    ],
    ids=["uncited", "uncited, another source", "cited", "refusal"],
)
async def test_an_answer_that_names_no_source_gets_the_one_its_words_came_from(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript, pieces: list[str], added: str
) -> None:
    chat_script.answer_pieces = pieces
    events = await run(chat_request())
    assert answer_text(events) == "".join(pieces) + added


async def test_azure_search_query_arguments(
    azure_environment: dict[str, str],
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    search_script: SearchScript,
) -> None:
    events = await run(chat_request(top=2, semanticRanker=True))

    [call] = search_script.calls
    assert call["search_text"] == QUERY_TEXT
    assert call["top"] == 2
    assert call["select"] == ["id", "title", "source", "content"]
    assert call["query_type"] == "semantic"
    assert call["semantic_configuration_name"] == "default"
    [vector_query] = call["vector_queries"]
    assert isinstance(vector_query, VectorizedQuery)
    assert vector_query.fields == "embedding"
    assert vector_query.k_nearest_neighbors == 50, "hybrid fuses 50 neighbours with the text ranking"
    assert embedding_script.calls[-1]["model"] == "embedding-deployment"
    assert "extra_body" not in embedding_script.calls[-1] or embedding_script.calls[-1]["extra_body"] is None
    assert [call["model"] for call in chat_script.calls] == ["chat-deployment", "chat-deployment"]
    search_stage = events[2]
    assert isinstance(search_stage, Stage) and search_stage.detail is not None
    results = search_stage.detail["results"]
    assert [result["source"] for result in results] == ["mushroom-pineapple.md", "dough.md"]


@pytest.mark.parametrize(("mode", "text", "vectors"), [("text", True, False), ("vectors", False, True)])
async def test_azure_search_modes(
    azure_environment: dict[str, str],
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    search_script: SearchScript,
    mode: str,
    text: bool,
    vectors: bool,
) -> None:
    await run(chat_request(retrievalMode=mode))
    [call] = search_script.calls
    assert (call["search_text"] is not None) == text
    assert ("vector_queries" in call) == vectors
    assert "query_type" not in call, "the semantic ranker is off unless the setting or the request turns it on"


async def test_search_failure_is_an_upstream_error(
    azure_environment: dict[str, str],
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    search_script: SearchScript,
) -> None:
    search_script.error = HttpResponseError(message="Service Unavailable")
    events: list[ChatEvent] = []
    with pytest.raises(UpstreamError) as raised:
        async for event in pipeline(chat_request()):
            events.append(event)
    assert raised.value.code == "search_unavailable"
    assert stage_names(events) == ["question:done", "query:done"], "the stages before the failure were delivered"


async def test_model_failure_mid_stream_is_an_upstream_error(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    chat_script.stream_error = openai.APIConnectionError(request=None)  # type: ignore[arg-type]
    chat_script.stream_error_after = 3
    events: list[ChatEvent] = []
    with pytest.raises(UpstreamError) as raised:
        async for event in pipeline(chat_request()):
            events.append(event)
    assert raised.value.code == "upstream_unavailable"
    assert [event.content for event in events if isinstance(event, AnswerDelta)] == ["Try", " the"]
    assert chat_script.streams[0].closed, "the upstream response is closed when the stream fails"


async def test_closing_the_stream_mid_answer_closes_the_upstream_response_at_once(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    """What the response's background task does when the client leaves while a line is being sent."""
    from chat.http.ndjson import ndjson_lines

    lines = ndjson_lines(pipeline(chat_request()), None)
    async for line in lines:
        if b'"content"' in line:
            break
    assert not chat_script.streams[0].closed
    await lines.aclose()
    assert chat_script.streams[0].closed, "aclose() reached the upstream response, not only the garbage collector"

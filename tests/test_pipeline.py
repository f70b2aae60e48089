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
from chat.pipeline import answer
from chat.prompts import ANSWER_PROMPT, FOLLOWUP_PROMPT, NO_SOURCES_ANSWER, QUERY_PROMPT
from chat.protocol import ChatRequest
from chat.services import get_services
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


def pipeline(request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
    services = get_services()
    return answer(request, services.openai.chat, services.retriever, services.settings.answering)


async def run(request: ChatRequest) -> list[ChatEvent]:
    return [event async for event in pipeline(request)]


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
    await run(chat_request(followups=True, temperature=0.1))

    [rewrite] = chat_script.calls_with(QUERY_PROMPT)
    assert rewrite["model"] == "SmolLM2-135M-Instruct"
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
    assert re.search(r"\n\[mushroom-pineapple\.md\]: Brown the mushrooms", messages[-1]["content"])
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
    from chat.streaming import ndjson_lines

    lines = ndjson_lines(pipeline(chat_request()), None)
    async for line in lines:
        if b'"content"' in line:
            break
    assert not chat_script.streams[0].closed
    await lines.aclose()
    assert chat_script.streams[0].closed, "aclose() reached the upstream response, not only the garbage collector"

"""Telemetry: off and untouched without a connection string; spans and metrics, never content, with one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chat import telemetry
from chat.errors import UpstreamError
from chat.events import Completed
from chat.pipeline import answer
from chat.protocol import ChatRequest
from chat.services import get_services
from chat.settings import get_settings
from tests.sdk_fakes import ANSWER_PIECES, ChatScript, EmbeddingScript

QUESTION = "Which pizza has mushroom and pineapple?"


def request() -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": QUESTION}]})


def test_off_without_a_connection_string() -> None:
    assert telemetry.configure(get_settings()) is False
    events = answer(request(), get_services().openai.chat, get_services().retriever, get_settings().answering)
    assert telemetry.observed(events) is events, "no wrapper, no cost"


@pytest.fixture
def instruments() -> tuple[telemetry.Instruments, InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    return telemetry.Instruments(tracer_provider, MeterProvider(metric_readers=[reader])), spans, reader


async def test_spans_per_stage_and_token_metrics_without_content(
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    instruments: tuple[telemetry.Instruments, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    tools, spans, reader = instruments
    services = get_services()
    events = [
        e
        async for e in telemetry.observed(
            answer(request(), services.openai.chat, services.retriever, services.settings.answering), tools
        )
    ]
    assert events

    finished = {span.name: span for span in spans.get_finished_spans()}
    assert set(finished) == {"chat.request", "chat.query", "chat.search", "chat.answer"}
    root = finished["chat.request"]
    for name in ("chat.query", "chat.search", "chat.answer"):
        span = finished[name]
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.end_time is not None and span.start_time is not None and span.end_time >= span.start_time
    done = events[-1]
    assert isinstance(done, Completed) and len(done.data_points) > 1
    searched = {"chat.elapsed_ms": pytest.approx(0, abs=1000), "chat.results": len(done.data_points)}
    assert finished["chat.search"].attributes == searched
    assert finished["chat.answer"].attributes["chat.time_to_first_token_ms"] > 0  # type: ignore[index,operator]
    assert root.attributes == {"chat.finish_reason": "stop"}
    recorded = " ".join(str(span.attributes) + str(span.events) for span in finished.values())
    for content in (QUESTION, "mushroom", *ANSWER_PIECES[1:3]):
        assert content not in recorded, "no message content in telemetry"

    metrics = {
        metric.name: metric
        for resource in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    tokens = {point.attributes["chat.token.kind"]: point.value for point in metrics["chat.tokens"].data.data_points}  # type: ignore[index,union-attr]
    assert tokens == {"prompt": 120, "completion": 8}, "a first question: one streamed answer, no rewrite call"
    [outcome] = metrics["chat.answers"].data.data_points
    assert outcome.attributes == {"chat.outcome": "completed"}


async def test_errors_are_recorded_on_the_request_span(
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    instruments: tuple[telemetry.Instruments, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    tools, spans, _ = instruments
    chat_script.error = UpstreamError("down")
    services = get_services()
    with pytest.raises(UpstreamError):
        async for _ in telemetry.observed(
            answer(request(), services.openai.chat, services.retriever, services.settings.answering), tools
        ):
            pass
    [root] = [span for span in spans.get_finished_spans() if span.name == "chat.request"]
    assert root.attributes == {"chat.error_code": "upstream_unavailable"}
    assert root.status.description == "upstream_unavailable"


async def test_a_refused_connection_string_leaves_telemetry_off(
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "not a connection string")
    get_settings.cache_clear()
    assert telemetry.configure(get_settings()) is False
    response = await client.post("/api/chat", json={"messages": [{"role": "user", "content": QUESTION}]})
    assert response.status_code == 200

"""OpenTelemetry to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set; nothing otherwise.

Spans and metrics are derived from the pipeline's events, so the pipeline itself stays free of
telemetry: a span per stage (query rewrite, search, answer) with its duration, token usage
and time to first token as metrics, error codes on the spans. No message content is recorded:
prompts, answers and sources never leave the process through telemetry.

Application Insights is provisioned with local authentication off, so the exporter signs in
with the function's managed identity (AZURE_CLIENT_ID) like every other client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from chat.errors import ChatError
from chat.events import AnswerDelta, ChatEvent, Completed, Stage
from chat.providers.identity import blocking_azure_credential
from chat.settings import Settings

logger = logging.getLogger(__name__)
# The process's instruments once telemetry is configured; None means off.
_instruments: Instruments | None = None


def configure(settings: Settings) -> bool:
    """Set up the Azure Monitor exporters once per process, if a connection string is configured.

    A connection string the exporter refuses is logged and leaves telemetry off: the chat works on.
    """
    global _instruments
    connection_string = settings.telemetry.applicationinsights_connection_string
    if _instruments is not None or not connection_string:
        return _instruments is not None
    from azure.monitor.opentelemetry import configure_azure_monitor

    credential = blocking_azure_credential(settings.identity)
    try:
        configure_azure_monitor(connection_string=connection_string, credential=credential, logger_name="chat")
    except ValueError:
        logger.exception("telemetry stays off: APPLICATIONINSIGHTS_CONNECTION_STRING was refused")
        return False
    _instruments = Instruments()
    logger.info("telemetry goes to Application Insights")
    return True


class Instruments:
    """The tracer and meters of the chat; the global (Azure Monitor) providers unless others are given."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
    ) -> None:
        self.tracer = trace.get_tracer("chat", tracer_provider=tracer_provider)
        meter = metrics.get_meter("chat", meter_provider=meter_provider)
        self.tokens = meter.create_counter("chat.tokens", unit="{token}", description="Tokens spent on model calls")
        self.first_token = meter.create_histogram(
            "chat.time_to_first_token", unit="ms", description="From the request to the answer's first token"
        )
        self.answers = meter.create_counter("chat.answers", description="Answers by outcome")


def observed(
    events: AsyncGenerator[ChatEvent, None], instruments: Instruments | None = None
) -> AsyncGenerator[ChatEvent, None]:
    """``events`` unchanged when telemetry is off; otherwise the same events, observed on the way."""
    instruments = instruments or _instruments
    return events if instruments is None else _observe(events, instruments)


async def _observe(
    events: AsyncGenerator[ChatEvent, None], instruments: Instruments
) -> AsyncGenerator[ChatEvent, None]:
    # Spans are started and ended explicitly (never made "current"), since a generator may be
    # finished from another context than the one it started in.
    tracer = instruments.tracer
    request = tracer.start_span("chat.request")
    parent = trace.set_span_in_context(request)
    started = step_started = time.time_ns()
    answer: Span | None = None
    first_token_seen = False
    outcome = "error"
    try:
        async with aclosing(events):
            async for event in events:
                if first_token_seen and type(event) is AnswerDelta:
                    yield event  # the hot path: nothing to observe on later tokens
                    continue
                now = time.time_ns()
                if isinstance(event, Stage) and event.name in ("query", "search"):
                    span = tracer.start_span(f"chat.{event.name}", context=parent, start_time=step_started)
                    span.set_attribute("chat.elapsed_ms", event.elapsed_ms)
                    if event.name == "search" and event.detail is not None:
                        span.set_attribute("chat.results", len(event.detail.get("results", [])))
                    span.end(end_time=now)
                    step_started = now
                elif isinstance(event, Stage) and event.name == "answer":
                    answer = tracer.start_span("chat.answer", context=parent, start_time=now)
                elif isinstance(event, AnswerDelta) and answer is not None and not first_token_seen:
                    first_token_seen = True
                    first_token_ms = (now - started) / 1e6
                    answer.set_attribute("chat.time_to_first_token_ms", first_token_ms)
                    instruments.first_token.record(first_token_ms)
                elif isinstance(event, Completed):
                    instruments.tokens.add(event.usage.prompt_tokens, {"chat.token.kind": "prompt"})
                    instruments.tokens.add(event.usage.completion_tokens, {"chat.token.kind": "completion"})
                    request.set_attribute("chat.finish_reason", event.finish_reason)
                    outcome = "completed"
                yield event
    except (asyncio.CancelledError, GeneratorExit):
        outcome = "cancelled"
        raise
    except ChatError as error:
        request.set_status(Status(StatusCode.ERROR, error.code))
        request.set_attribute("chat.error_code", error.code)
        raise
    except Exception as error:
        request.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        instruments.answers.add(1, {"chat.outcome": outcome})
        if answer is not None:
            answer.end()
        request.end()

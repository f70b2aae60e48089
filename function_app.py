"""The HTTP layer of the chat backend: routes, request parsing and response framing, nothing else.

Streaming goes through the azurefunctions-extensions-http-fastapi extension: once it is
imported, every HTTP function of the app receives its (starlette) Request and returns a
starlette Response. Handlers are annotated ``-> Response`` (the extension's base type)
because each returns either a stream or a JSON error. The RAG logic lives in chat/.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncGenerator

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

from chat import telemetry, tokens, web
from chat.errors import ChatError, InvalidRequest, NotConfigured
from chat.events import ChatEvent
from chat.pipeline import answer
from chat.protocol import ChatRequest, CompletionBuilder, error_body, parse_chat_request
from chat.services import Services, get_services
from chat.settings import ConfigurationError, LimitSettings
from chat.streaming import NdjsonStreamingResponse, ndjson_lines, report

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
logger = logging.getLogger(__name__)


def _error_response(error: ChatError) -> Response:
    return JSONResponse(error_body(error), status_code=error.status)


def _services() -> Services:
    try:
        return get_services()
    except ConfigurationError as error:
        raise NotConfigured(str(error)) from error
    except Exception as error:  # any other failure to build the clients is a broken deployment, not a 500
        logger.exception("could not build the app's clients")
        raise NotConfigured("The server could not set up its model and search clients; see its log.") from error


async def _read_chat_request(req: Request, limits: LimitSettings) -> ChatRequest:
    """The validated request, or InvalidRequest (400), 413 or 415 with a reason the client can act on."""
    media_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        message = "Send the request as JSON (Content-Type: application/json)."
        raise InvalidRequest(message, code="unsupported_media_type", status=415)
    too_large = InvalidRequest(
        f"The body is larger than {limits.chat_max_body_bytes} bytes.", code="body_too_large", status=413
    )
    declared = req.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.chat_max_body_bytes:
        raise too_large
    body = bytearray()
    async for chunk in req.stream():
        body += chunk
        if len(body) > limits.chat_max_body_bytes:
            raise too_large
    return parse_chat_request(bytes(body), limits)


def _answer(services: Services, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
    return answer(request, services.openai.chat, services.retriever, services.settings.answering)


async def _services_and_request(req: Request) -> tuple[Services, ChatRequest]:
    services = _services()
    return services, await _read_chat_request(req, services.settings.limits)


@app.route(route="api/chat/stream", methods=["POST"])
async def chat_stream(req: Request) -> Response:
    """The answer and the stages of its work as NDJSON lines, each sent as soon as it exists."""
    try:
        services, request = await _services_and_request(req)
    except ChatError as error:
        return _error_response(error)
    events = telemetry.observed(_answer(services, request))
    lines = ndjson_lines(events, request.session_state)
    return NdjsonStreamingResponse(lines, services.settings.limits.stream_heartbeat_seconds)


@app.route(route="api/chat", methods=["POST"])
async def chat(req: Request) -> Response:
    """The same pipeline, answered as one JSON object, for clients and hosts that cannot stream."""
    try:
        services, request = await _services_and_request(req)
    except ChatError as error:
        return _error_response(error)
    completion = CompletionBuilder(request.session_state)
    try:
        async for event in telemetry.observed(_answer(services, request)):
            completion.add(event)
    except Exception as error:
        return _error_response(report(error))
    return JSONResponse(completion.build())


@app.route(route="api/health", methods=["GET"])
async def health(req: Request) -> Response:
    """Readiness for a load balancer: 200 when every configured provider answers, 503 otherwise."""
    try:
        status = await _services().health()
    except ChatError as error:
        return JSONResponse({"status": "unavailable", **error_body(error)}, status_code=503)
    return JSONResponse(status, status_code=200 if status["status"] == "ok" else 503)


@app.route(route="/", methods=["GET"])
async def page(req: Request) -> Response:
    """The chat web page (AzureWebJobsDisableHomepage=true keeps the host's own page out of the way)."""
    return web.page()


@app.route(route="assets/{*path}", methods=["GET"])
async def assets(req: Request) -> Response:
    """The page's scripts and styles, from chat/web/."""
    return web.asset(req.path_params.get("path", ""))


# The tokenizer's tables take about half a second to load: at start-up, not in the first answer.
tokens.preload()

# Everything allocated so far (imports, the app) lives as long as the process: keep it out of the
# garbage collector's generations, or a fresh instance pauses 50-110 ms in its first full
# collections, and every open stream with it (measured with benchmarks/run.py).
gc.freeze()

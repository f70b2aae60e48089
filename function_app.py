"""The HTTP layer of the chat backend: routes, request parsing and response framing, nothing else.

Streaming goes through the azurefunctions-extensions-http-fastapi extension: once it is
imported, every HTTP function of the app receives its (starlette) Request and returns a
starlette Response. Handlers are annotated ``-> Response`` (the extension's base type)
because each returns either a stream or a JSON error. The RAG logic lives in chat/.
"""

from __future__ import annotations

import functools
import gc
import logging

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response
from pydantic import ValidationError

from chat import telemetry, tokens
from chat.client_limits import Slot, TooManyRequests
from chat.errors import ChatError, InvalidRequest, NotConfigured
from chat.http import web
from chat.http.access import (
    FORWARDED_FOR_HEADER,
    PRINCIPAL_ID_HEADER,
    PRINCIPAL_NAME_HEADER,
    Caller,
    Unauthenticated,
    identify,
    require_principal,
)
from chat.http.ndjson import API_HEADERS, NdjsonStreamingResponse, ndjson_lines, report
from chat.protocol import ChatRequest, CompletionBuilder, error_body, parse_chat_request
from chat.services import Services, get_services
from chat.settings import ConfigurationError, LimitSettings, SecuritySettings, describe_invalid, get_settings

logger = logging.getLogger(__name__)
JSON_MEDIA_TYPE = "application/json"


def chat_auth_level() -> func.AuthLevel:
    """The Functions auth level of the chat routes and /api/health/details, from CHAT_AUTH_MODE.

    Decided when the host indexes the functions. keys: a function key is needed. entra and
    anonymous: the host lets the request in (in entra mode the platform's authentication stands in
    front, and the app checks for a principal). An invalid security setting must not stop the
    functions from being indexed, nor leave them open: they then need the admin key until it is fixed.
    """
    try:
        mode = SecuritySettings().chat_auth_mode
    except ValidationError as error:
        message = "invalid security settings (%s): the chat routes need the admin key until fixed"
        logger.error(message, describe_invalid(error))
        return func.AuthLevel.ADMIN
    return func.AuthLevel.FUNCTION if mode == "keys" else func.AuthLevel.ANONYMOUS


CHAT_AUTH_LEVEL = chat_auth_level()
# Routes without their own auth_level are open: /api/health (status only), the page and its assets.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers={**API_HEADERS, **(headers or {})})


def _error_response(error: ChatError) -> Response:
    if isinstance(error, TooManyRequests):
        return _refusal(error.message, error.retry_after)
    return _json(error_body(error), error.status)


def _refusal(message: str, retry_after: int) -> Response:
    """A 429 like ``_json``'s, from a body and headers built once per (message, Retry-After): refusals
    come fastest when a client floods, and each costs the CPU the other clients' answers need."""
    body, headers = _refusal_parts(message, retry_after)
    return Response(body, TooManyRequests.status, headers, JSON_MEDIA_TYPE)


@functools.lru_cache(maxsize=256)  # the limiter's two messages times Retry-After's 1..60 seconds
def _refusal_parts(message: str, retry_after: int) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(error_body(TooManyRequests(message, retry_after)))
    return body, {**API_HEADERS, "Retry-After": str(retry_after)}


def _services() -> Services:
    try:
        return get_services()
    except ConfigurationError as error:
        raise NotConfigured(str(error)) from error
    except Exception as error:  # any other failure to build the clients is a broken deployment, not a 500
        logger.exception("could not build the app's clients")
        raise NotConfigured("The server could not set up its model and search clients; see its log.") from error


def _caller(req: Request, security: SecuritySettings) -> Caller:
    """Who is calling; in entra mode, Unauthenticated (401) when the platform vouches for no one."""
    caller = identify(
        principal_id=req.headers.get(PRINCIPAL_ID_HEADER),
        principal_name=req.headers.get(PRINCIPAL_NAME_HEADER),
        forwarded_for=req.headers.getlist(FORWARDED_FOR_HEADER),
        peer=req.client.host if req.client else None,
        security=security,
    )
    require_principal(caller, security)
    return caller


async def _read_chat_request(req: Request, services: Services) -> ChatRequest:
    """The validated request, or InvalidRequest (400), 413 or 415 with a reason the client can act on."""
    limits: LimitSettings = services.settings.limits
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
    return parse_chat_request(bytes(body), limits, services.settings.security)


async def _admit(req: Request) -> tuple[Services, ChatRequest, Slot]:
    """Who may call (401), how much they may (429), what they asked (400/413/415), in that order.

    The returned slot is the caller's place among its open answers: release it when the answer ends.
    """
    services = _services()
    caller = _caller(req, services.settings.security)
    slot = services.limiter.admit(caller.key)
    try:
        return services, await _read_chat_request(req, services), slot
    except BaseException:
        slot.release()
        raise


@app.route(route="api/chat/stream", methods=["POST"], auth_level=CHAT_AUTH_LEVEL)
async def chat_stream(req: Request) -> Response:
    """The answer and the stages of its work as NDJSON lines, each sent as soon as it exists."""
    try:
        services, request, slot = await _admit(req)
    except ChatError as error:
        return _error_response(error)
    events = telemetry.observed(services.answer(request))
    lines = ndjson_lines(events, request.session_state)
    return NdjsonStreamingResponse(lines, services.settings.limits.stream_heartbeat_seconds, on_close=slot.release)


@app.route(route="api/chat", methods=["POST"], auth_level=CHAT_AUTH_LEVEL)
async def chat(req: Request) -> Response:
    """The same pipeline, answered as one JSON object, for clients and hosts that cannot stream."""
    try:
        services, request, slot = await _admit(req)
    except ChatError as error:
        return _error_response(error)
    completion = CompletionBuilder(request.session_state)
    try:
        async for event in telemetry.observed(services.answer(request)):
            completion.add(event)
    except Exception as error:
        return _error_response(report(error))
    finally:
        slot.release()
    return _json(completion.build())


@app.route(route="api/health", methods=["GET"])
async def health(req: Request) -> Response:
    """Readiness for a load balancer, open to anyone: status only, 200 when every provider answers, else 503."""
    try:
        status = (await _services().health())["status"]
    except ChatError:
        status = "unavailable"
    return _json({"status": status}, 200 if status == "ok" else 503)


@app.route(route="api/health/details", methods=["GET"], auth_level=CHAT_AUTH_LEVEL)
async def health_details(req: Request) -> Response:
    """Which providers are configured and whether each answers, for the people who run the app."""
    try:
        services = _services()
        _caller(req, services.settings.security)
        details = await services.health()
    except Unauthenticated as error:
        return _error_response(error)
    except ChatError as error:
        return _json({"status": "unavailable", **error_body(error)}, 503)
    return _json(details, 200 if details["status"] == "ok" else 503)


def _page_security() -> SecuritySettings | None:
    """The security settings for the page's headers, or None when the configuration is broken
    (the page still loads, with the strictest policy, and its API calls report the problem)."""
    try:
        return get_settings().security
    except ConfigurationError:
        return None


def _page() -> Response:
    security = _page_security()
    if security is None:
        return web.page()
    return web.page(security.connect_origins, sign_in=security.chat_auth_mode == "entra")


@app.route(route="chat", methods=["GET"])
async def chat_page(req: Request) -> Response:
    """The chat web page at a named route, which every version of the Functions host matches."""
    return _page()


@app.route(route="/", methods=["GET"])
async def page(req: Request) -> Response:
    """The same page at the site's root (AzureWebJobsDisableHomepage=true keeps the host's own page
    out of the way). A root route with an empty routePrefix has a history of not matching on the
    real host (azure-functions-host #4638, Azure-Functions #2473), hence the named route beside it."""
    return _page()


@app.route(route="assets/{*path}", methods=["GET"])
async def assets(req: Request) -> Response:
    """The page's scripts and styles, from chat/http/web/."""
    security = _page_security()
    origins = security.connect_origins if security else ()
    return web.asset(req.path_params.get("path", ""), req.scope.get("raw_path"), origins)


# The tokenizer's tables take about half a second to load: at start-up, not in the first answer.
tokens.preload()

# Everything allocated so far (imports, the app) lives as long as the process: keep it out of the
# garbage collector's generations, or a fresh instance pauses 50-110 ms in its first full
# collections, and every open stream with it (measured with benchmarks/run.py).
gc.freeze()

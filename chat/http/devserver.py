"""Local host: serve function_app.py's functions with uvicorn, the way `func start` would.

For machines without Azure Functions Core Tools. It reads the function app's own route
table (``app.get_functions()``), so routes, methods and handlers are exactly those Azure
runs; it loads ``Values`` from local.settings.json (falling back to the example file) into
the environment like ``func start`` does, without overriding variables already set; and it
applies ``Host.CORS`` from the same file. Each request reaches the handler as the starlette
Request the http-fastapi extension gives it in Azure.

    python -m chat.http.devserver [--host 127.0.0.1] [--port 7071] [--settings local.settings.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat.settings import PROJECT_ROOT

SETTINGS_FILES = (PROJECT_ROOT / "local.settings.json", PROJECT_ROOT / "local.settings.example.json")
Handler = Callable[[Request], Awaitable[Response]]


def cors_origins(local_settings: dict[str, Any]) -> list[str]:
    """The origins of ``Host.CORS`` (comma-separated, as func reads them)."""
    return [origin for part in local_settings.get("Host", {}).get("CORS", "").split(",") if (origin := part.strip())]


def load_local_settings(path: Path | None = None) -> dict[str, Any]:
    """The first settings file that exists, applied to the environment; returns the whole file.

    The page's Content-Security-Policy lets it connect to the ``Host.CORS`` origins too
    (CHAT_CSP_CONNECT_ORIGINS, unless set). A ``*`` is left out: it lets any site call this API,
    and says nothing about where this page may connect.
    """
    candidates = (path,) if path else SETTINGS_FILES
    for candidate in candidates:
        if candidate.is_file():
            settings: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))
            values = dict(settings.get("Values", {}))
            if origins := ",".join(origin for origin in cors_origins(settings) if origin != "*"):
                values.setdefault("CHAT_CSP_CONNECT_ORIGINS", origins)
            for name, value in values.items():
                os.environ.setdefault(name, str(value))
            return settings
    return {}


def starlette_path(route: str) -> str:
    """A Functions route template as a starlette path: ``{*rest}`` catch-alls, constraints dropped."""
    path = "/" + route.strip("/")
    path = re.sub(r"\{\*(\w+)\}", r"{\1:path}", path)
    return re.sub(r"\{(\w+)(?::(?!path\})[^}]*)?\??\}", r"{\1}", path)


@dataclass(frozen=True, slots=True)
class HttpFunction:
    name: str
    route: str
    methods: tuple[str, ...]
    auth_level: str
    handler: Handler


@cache
def http_functions(function_app: Any) -> tuple[HttpFunction, ...]:
    """The HTTP-triggered functions of ``function_app``, read once: like the worker, the library
    only lets ``get_functions()`` index an app once per process."""
    functions = []
    for function in function_app.get_functions():
        trigger = next(binding for binding in function.get_bindings() if binding.type == "httpTrigger")
        methods = tuple(str(getattr(method, "value", method)) for method in trigger.methods or ["GET", "POST"])
        level = str(getattr(trigger.auth_level, "value", trigger.auth_level))
        functions.append(
            HttpFunction(function.get_function_name(), trigger.route, methods, level, function.get_user_function())
        )
    return tuple(functions)


def function_routes(function_app: Any) -> list[Route]:
    """One starlette Route per HTTP-triggered function of ``function_app``."""
    return [
        Route(starlette_path(function.route), function.handler, methods=list(function.methods))
        for function in http_functions(function_app)
    ]


@asynccontextmanager
async def _lifespan(_: Starlette) -> AsyncIterator[None]:
    yield
    from chat.services import close_services

    await close_services()


def create_app(settings_path: Path | None = None) -> Starlette:
    local_settings = load_local_settings(settings_path)
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    import function_app  # after the settings are in the environment, as in the Functions host

    middleware = []
    if cors := cors_origins(local_settings):
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors,
                allow_credentials=bool(local_settings.get("Host", {}).get("CORSCredentials", False)),
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
            )
        )
    return Starlette(routes=function_routes(function_app.app), middleware=middleware, lifespan=_lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path, help="settings file (default: local.settings.json, else the example)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()

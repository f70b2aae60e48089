"""The process's clients: created once on first use, shared by every request, closed at shutdown.

One chat client, one embedding client, one retriever and (in Azure mode) one async credential
per worker process, with the per-client limits and the last health check that go with them.
Construction does no I/O (connections open on first request), so it is safe to build lazily
from inside any request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from openai import AsyncOpenAI

from chat import pipeline, telemetry
from chat.client_limits import ClientLimiter
from chat.errors import ChatError
from chat.events import ChatEvent
from chat.protocol import ChatRequest
from chat.providers.azure_search import AzureSearchRetriever, search_client
from chat.providers.identity import azure_credential
from chat.providers.llm import OpenAIClients, build_openai_clients
from chat.providers.retriever import Retriever
from chat.settings import ConfigurationError, Settings, get_settings

HEALTH_TIMEOUT_SECONDS = 5.0


@dataclass
class _CachedHealth:
    checked_at: float
    report: dict[str, Any]


@dataclass
class Services:
    settings: Settings
    openai: OpenAIClients
    retriever: Retriever
    credential: AsyncTokenCredential | None = field(default=None)
    limiter: ClientLimiter = field(init=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _health: _CachedHealth | None = field(default=None, init=False, repr=False)
    _health_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        security = self.settings.security
        self.limiter = ClientLimiter(security.chat_max_streams_per_client, security.chat_requests_per_minute_per_client)

    def answer(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """The pipeline's events for ``request``, with this app's clients and settings: what the
        routes serve and what the answer evaluation measures."""
        settings = self.settings
        return pipeline.answer(
            request, self.openai.chat, self.retriever, settings.answering, relevance_gate=settings.relevance_gate
        )

    async def aclose(self) -> None:
        """Close every client, even when closing one of them fails."""
        async with AsyncExitStack() as stack:
            if self.credential is not None:
                stack.push_async_callback(self.credential.close)
            stack.push_async_callback(self.retriever.aclose)
            stack.push_async_callback(self.openai.aclose)

    async def health(self) -> dict[str, Any]:
        """The last provider check, if younger than CHAT_HEALTH_CACHE_SECONDS; else a new one.

        Load balancers and uptime probes call health every few seconds, from several places: they
        share one check at a time (the lock), so the model is not called on every hit.
        """
        max_age = self.settings.security.chat_health_cache_seconds
        async with self._health_lock:
            cached = self._health
            if cached is None or self.clock() - cached.checked_at >= max_age:
                cached = self._health = _CachedHealth(self.clock(), await self.check_providers())
        return cached.report

    async def check_providers(self) -> dict[str, Any]:
        """Which providers are configured and whether each answers; checked in parallel, bounded in time."""
        mode = self.settings.mode
        chat, embedder = self.openai.chat, self.openai.embedder
        checks: dict[str, tuple[dict[str, str], Callable[[], Awaitable[str]]]] = {
            "chat": ({"host": mode.openai_host, "model": chat.model}, partial(list_models, chat.client)),
            "search": ({"host": mode.search_host}, self.retriever.check),
        }
        if self.openai.separate_embeddings:
            about = {"host": mode.openai_host, "model": embedder.model}
            checks["embeddings"] = (about, partial(list_models, embedder.client))
        outcomes = await asyncio.gather(*(_timed(check) for _, check in checks.values()))
        providers = {
            name: {**about, **outcome} for (name, (about, _)), outcome in zip(checks.items(), outcomes, strict=True)
        }
        healthy = all(provider["ok"] for provider in providers.values())
        return {"status": "ok" if healthy else "unavailable", "providers": providers}


async def list_models(client: AsyncOpenAI) -> str:
    """Whether an OpenAI-compatible server answers: its model list, without retries."""
    page = await client.with_options(max_retries=0, timeout=HEALTH_TIMEOUT_SECONDS).models.list()
    return f"{len(page.data)} models"


async def _timed(check: Callable[[], Awaitable[str]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            detail = await check()
        ok = True
    except ChatError as error:
        ok, detail = False, error.message
    except Exception as error:  # a health probe reports every failure instead of raising it
        ok, detail = False, f"{type(error).__name__}"
    return {"ok": ok, "detail": detail, "latencyMs": int((time.perf_counter() - started) * 1000)}


def build_services(settings: Settings) -> Services:
    telemetry.configure(settings)
    credential = azure_credential(settings.identity) if settings.mode.uses_azure else None
    openai_clients = build_openai_clients(settings, credential)
    retriever: Retriever
    if credential is not None and settings.mode.search_host == "azure":
        azure = settings.azure_search
        retriever = AzureSearchRetriever(
            search_client(azure.azure_search_endpoint, azure.azure_search_index, credential),
            openai_clients.embedder,
            semantic_ranker=azure.azure_search_semantic_ranker,
            timeout_seconds=settings.limits.search_timeout_seconds,
        )
    else:
        try:
            from chat.providers.local_index import LocalIndexRetriever  # numpy: only installed for local mode
        except ImportError as error:
            message = "SEARCH_HOST=local needs requirements-local.txt (numpy); in Azure set SEARCH_HOST=azure"
            raise ConfigurationError(message) from error
        retriever = LocalIndexRetriever(settings.local_search.index_path, openai_clients.embedder)
    return Services(settings, openai_clients, retriever, credential)


_services: Services | None = None


def get_services() -> Services:
    """The process's services, built on first use (raises ConfigurationError if settings are invalid)."""
    global _services
    if _services is None:
        _services = build_services(get_settings())
    return _services


async def close_services() -> None:
    """Close every client; the local host calls this at shutdown (Azure's worker just exits)."""
    global _services
    if _services is not None:
        services, _services = _services, None
        await services.aclose()

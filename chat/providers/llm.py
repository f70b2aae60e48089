"""Chat and embedding models behind the OpenAI API: Azure OpenAI (keyless), openai.com, or a local server.

All three hosts speak the same API, so one ChatModel and one Embedder serve them; only the
client construction differs (``build_openai_clients``). Streaming reads the server-sent
events through the SDK's raw streaming response and decodes each line with orjson: the SDK
still owns auth, retries (429/5xx, honouring Retry-After) and timeouts, but the per-chunk
pydantic model construction, most of an SSE backend's CPU per token, is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
import openai
import orjson
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import get_bearer_token_provider
from openai import AsyncAzureOpenAI, AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletionMessageParam

from chat.errors import UpstreamError
from chat.events import Usage
from chat.providers.sse import MESSAGE, sse_events
from chat.settings import ModelKind, Settings

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# Local OpenAI-compatible servers ignore the key, but the SDK insists on one.
LOCAL_PLACEHOLDER_KEY = "no-key-needed"

EmbeddingKind = Literal["query", "passage"]
# Reasoning models spend hidden reasoning tokens out of max_completion_tokens before they write a
# word, so their caps get this allowance on top; "low" effort keeps it (and the wait) small.
REASONING_EFFORT = "low"
REASONING_ALLOWANCE_TOKENS = 1024
# Local servers tokenize with their own vocabularies (SmolLM2's counts run ~25% above cl100k's),
# so only this share of a local model's context window is planned with.
LOCAL_CONTEXT_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class StreamOutcome:
    """Filled in while a stream is read: why it finished and what it cost."""

    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)


@contextmanager
def upstream_errors(service: str, timeout_seconds: float) -> Iterator[None]:
    """Translate SDK and transport exceptions into UpstreamError with a message safe to show.

    The original exception stays chained (``__cause__``) for the server's log, never for the client.
    """
    try:
        yield
    except (openai.APITimeoutError, httpx2.TimeoutException) as error:
        # The aiohttp transport reports a refused connection as a connect timeout, hence "reached or".
        message = f"The {service} could not be reached or did not answer within {timeout_seconds:g} seconds."
        raise UpstreamError(message, code="upstream_timeout", status=504) from error
    except openai.RateLimitError as error:
        message = f"The {service} is busy (rate limited) and retries did not help. Try again shortly."
        raise UpstreamError(message, code="upstream_throttled", status=429) from error
    except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
        raise UpstreamError(f"The {service} refused this app's credentials.", code="upstream_auth") from error
    except openai.BadRequestError as error:
        if error.code == "content_filter":
            message = f"The {service}'s content filter blocked this question. Rephrase it and try again."
            raise UpstreamError(message, code="content_filtered", status=400) from error
        reason = f" ({error.code})" if isinstance(error.code, str) else ""
        raise UpstreamError(f"The {service} refused the request{reason}.", code="upstream_rejected") from error
    except openai.APIStatusError as error:
        raise UpstreamError(f"The {service} answered HTTP {error.status_code}.") from error
    except (openai.APIConnectionError, httpx2.TransportError) as error:
        raise UpstreamError(f"The connection to the {service} failed or broke off.") from error
    except orjson.JSONDecodeError as error:
        message = f"The {service} sent a chunk that is not valid JSON."
        raise UpstreamError(message, code="upstream_malformed") from error


class ChatModel:
    """One deployment or model of an OpenAI-compatible chat API, of a known kind and context window."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        timeout_seconds: float,
        *,
        kind: ModelKind = "chat",
        context_tokens: int = 128_000,
        sources_tokens: int | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.kind = kind
        self.context_tokens = context_tokens
        # How much retrieved text one answer may read, when less than the context allows.
        self.sources_tokens = sources_tokens
        self.timeout_seconds = timeout_seconds

    def _sampling(self, temperature: float, max_tokens: int) -> dict[str, Any]:
        """The cap and sampling arguments this kind of model accepts."""
        if self.kind == "reasoning":
            return {
                "max_completion_tokens": max_tokens + REASONING_ALLOWANCE_TOKENS,
                "reasoning_effort": REASONING_EFFORT,
            }
        return {"max_tokens": max_tokens, "temperature": temperature}

    async def complete(
        self, messages: list[ChatCompletionMessageParam], *, temperature: float, max_tokens: int
    ) -> Completion:
        """A whole (short) completion: query rewriting, follow-up questions."""
        with upstream_errors("model", self.timeout_seconds):
            response = await self.client.chat.completions.create(
                model=self.model, messages=messages, stream=False, **self._sampling(temperature, max_tokens)
            )
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        return Completion(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    async def stream(
        self,
        messages: list[ChatCompletionMessageParam],
        *,
        temperature: float,
        max_tokens: int,
        outcome: StreamOutcome,
    ) -> AsyncGenerator[str, None]:
        """Yield the answer's text as the model produces it; closing the generator closes the upstream call."""
        with upstream_errors("model", self.timeout_seconds):
            async with self.client.chat.completions.with_streaming_response.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **self._sampling(temperature, max_tokens),
            ) as response:
                async for event, data in sse_events(response.iter_bytes()):
                    if event != MESSAGE:
                        if event == b"error":
                            raise UpstreamError("The model reported an error in the middle of its answer.")
                        continue
                    if data == b"[DONE]":
                        break
                    text = _read_chunk(orjson.loads(data), outcome)
                    if text:
                        yield text
                else:  # no [DONE]: complete only if the model said why it stopped
                    if outcome.finish_reason is None:
                        raise UpstreamError("The model's stream ended before the answer was complete.")


def _read_chunk(chunk: Any, outcome: StreamOutcome) -> str | None:
    """The text of one chat.completion.chunk; records finish reason and usage when present."""
    if type(chunk) is not dict:
        raise UpstreamError("The model sent a chunk that is not a JSON object.", code="upstream_malformed")
    if "error" in chunk:
        raise UpstreamError("The model reported an error in the middle of its answer.")
    usage = chunk.get("usage")
    if usage:
        outcome.usage.add(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    choices = chunk.get("choices")
    if not choices:
        return None
    choice = choices[0]
    if choice.get("finish_reason"):
        outcome.finish_reason = choice["finish_reason"]
    delta = choice.get("delta")
    return delta.get("content") if delta else None


class Embedder:
    """Embeddings through the OpenAI API. ``input_type`` tells E5-style local models query from passage."""

    def __init__(self, client: AsyncOpenAI, model: str, *, send_input_type: bool, timeout_seconds: float) -> None:
        self.client = client
        self.model = model
        self._send_input_type = send_input_type
        self._timeout_seconds = timeout_seconds

    async def embed(self, texts: list[str], kind: EmbeddingKind) -> list[list[float]]:
        extra_body = {"input_type": kind} if self._send_input_type else None
        with upstream_errors("embedding model", self._timeout_seconds):
            response = await self.client.embeddings.create(model=self.model, input=texts, extra_body=extra_body)
        return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


@dataclass(frozen=True, slots=True)
class OpenAIClients:
    """The models of one process; chat and embeddings share one client unless a local server embeds."""

    chat: ChatModel
    embedder: Embedder

    @property
    def separate_embeddings(self) -> bool:
        return self.embedder.client is not self.chat.client

    async def aclose(self) -> None:
        await self.chat.client.close()
        if self.separate_embeddings:
            await self.embedder.client.close()


def build_openai_clients(settings: Settings, credential: AsyncTokenCredential | None) -> OpenAIClients:
    """Clients for OPENAI_HOST. Azure authenticates with ``credential`` only: there is no key path."""
    limits = settings.limits
    windows = settings.context_windows

    def make(cls: type[AsyncOpenAI], **options: Any) -> AsyncOpenAI:
        """A client on the aiohttp transport with the configured retries and timeout."""
        http = DefaultAioHttpClient()
        return cls(
            max_retries=limits.openai_max_retries, timeout=limits.openai_timeout_seconds, http_client=http, **options
        )

    host = settings.mode.openai_host
    if host == "azure":
        if credential is None:
            raise ValueError("OPENAI_HOST=azure needs an Azure credential")
        azure = settings.azure_openai
        client = make(
            AsyncAzureOpenAI,
            azure_endpoint=azure.azure_openai_endpoint,
            api_version=azure.azure_openai_api_version,
            azure_ad_token_provider=get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE),
        )
        chat_model, embedding_model = azure.azure_openai_chat_deployment, azure.azure_openai_embedding_deployment
        kind, context_tokens = azure.azure_openai_chat_model_kind, windows.azure_openai_chat_context_tokens
        sources_tokens = None
        embedding_client = client
    elif host == "openai":
        com = settings.openai_com
        client = make(AsyncOpenAI, api_key=com.openai_api_key.get_secret_value())
        chat_model, embedding_model = com.openai_chat_model, com.openai_embedding_model
        kind, context_tokens = com.openai_chat_model_kind, windows.openai_chat_context_tokens
        sources_tokens = None
        embedding_client = client
    else:
        local = settings.local_openai
        key = settings.openai_com.openai_api_key.get_secret_value() or LOCAL_PLACEHOLDER_KEY
        client = make(AsyncOpenAI, base_url=local.local_openai_endpoint, api_key=key)
        embedding_client = make(AsyncOpenAI, base_url=local.local_embedding_endpoint, api_key=key)
        chat_model, embedding_model = settings.local_chat_model, local.local_embedding_model
        kind = local.local_openai_chat_model_kind
        context_tokens = int(windows.local_openai_context_tokens * LOCAL_CONTEXT_SHARE)
        sources_tokens = windows.local_openai_sources_tokens
    chat = ChatModel(
        client,
        chat_model,
        limits.openai_timeout_seconds,
        kind=kind,
        context_tokens=context_tokens,
        sources_tokens=sources_tokens,
    )
    return OpenAIClients(
        chat=chat,
        embedder=Embedder(
            embedding_client,
            embedding_model,
            send_input_type=host == "local",
            timeout_seconds=limits.openai_timeout_seconds,
        ),
    )

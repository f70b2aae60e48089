"""chat.settings: defaults, validation with the variables named, and the Azure-mode variable set."""

from __future__ import annotations

import re

import pytest

from chat.settings import PROJECT_ROOT, ConfigurationError, all_variables, azure_mode_variables, get_settings


def test_defaults_are_the_embedded_local_mode() -> None:
    settings = get_settings()
    assert (settings.mode.openai_host, settings.mode.search_host) == ("local", "local")
    assert settings.azure_openai.azure_openai_api_version == "2025-04-01-preview"
    assert settings.limits.stream_heartbeat_seconds < 230, "well inside Azure's idle limit"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"OPENAI_HOST": "azure"}, "AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_CHAT_DEPLOYMENT"),
        ({"OPENAI_HOST": "openai"}, "OPENAI_API_KEY"),
        ({"SEARCH_HOST": "azure"}, "AZURE_SEARCH_ENDPOINT"),
        ({"OPENAI_HOST": "gpt"}, "openai_host"),
        ({"CHAT_MAX_MESSAGES": "0"}, "chat_max_messages"),
        ({"CHAT_AUTH_MODE": "open"}, "chat_auth_mode"),
        ({"CHAT_MAX_TOP": "0"}, "chat_max_top"),
        ({"CHAT_CSP_CONNECT_ORIGINS": "https://ok.example, 'unsafe-inline'"}, "chat_csp_connect_origins"),
    ],
)
def test_invalid_configuration_names_the_variables(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], named: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match=named):
        get_settings()


def test_azure_mode_variables() -> None:
    assert azure_mode_variables() == {
        "OPENAI_HOST",
        "SEARCH_HOST",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_CHAT_DEPLOYMENT",
        "AZURE_OPENAI_EMBEDDING_DEPLOYMENT",
        "AZURE_OPENAI_API_VERSION",
        "AZURE_OPENAI_CHAT_MODEL_KIND",
        "AZURE_SEARCH_ENDPOINT",
        "AZURE_SEARCH_INDEX",
        "AZURE_SEARCH_SEMANTIC_RANKER",
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
    }
    assert azure_mode_variables() < all_variables()
    assert "WEBSITE_AUTH_ENABLED" in all_variables() - azure_mode_variables(), "set by the platform, not by Bicep"


def test_only_settings_reads_the_environment() -> None:
    """One place reads the environment. The local host may only write it (local.settings.json, as func does)."""
    uses = []
    for path in [PROJECT_ROOT / "function_app.py", *sorted((PROJECT_ROOT / "chat").rglob("*.py"))]:
        if path.name == "settings.py":
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"\bos\.(environ|getenv)|\bgetenv\(|from os import", line):
                uses.append((path.relative_to(PROJECT_ROOT).as_posix(), line.strip()))
    assert uses == [("chat/http/devserver.py", "os.environ.setdefault(name, str(value))")]


@pytest.mark.parametrize(
    ("host", "gate", "enabled"),
    [
        ("local", "auto", True),
        ("azure", "auto", False),
        ("openai", "auto", False),
        ("azure", "on", True),
        ("local", "off", False),
        ("local:small", "auto", False),
        ("local:small", "on", True),
    ],
)
def test_the_relevance_gate_is_on_for_local_models_unless_set(
    azure_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, host: str, gate: str, enabled: bool
) -> None:
    host, _, model = host.partition(":")
    monkeypatch.delenv("LOCAL_OPENAI_CHAT_MODEL", raising=False)
    monkeypatch.delenv("LOCAL_MODEL_PATH", raising=False)
    monkeypatch.setenv("LOCAL_MODEL", model or "qwen2.5-coder-1.5b")
    monkeypatch.setenv("OPENAI_HOST", host)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("CHAT_RELEVANCE_GATE", gate)
    get_settings.cache_clear()
    assert get_settings().relevance_gate is enabled


@pytest.mark.parametrize(
    ("variables", "name"),
    [
        ({}, "qwen2.5-coder-1.5b"),
        ({"LOCAL_MODEL": "small"}, "small"),
        ({"LOCAL_MODEL_PATH": "/models/Llama-3.2-3B-Q4_K_M.gguf"}, "Llama-3.2-3B-Q4_K_M"),
        ({"LOCAL_MODEL": "small", "LOCAL_OPENAI_CHAT_MODEL": "llama3.2"}, "llama3.2"),
    ],
)
def test_the_local_chat_model_is_named_after_what_is_served(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], name: str
) -> None:
    for variable in ("LOCAL_MODEL", "LOCAL_MODEL_PATH", "LOCAL_OPENAI_CHAT_MODEL"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    assert get_settings().local_chat_model == name

"""The layering the folder names promise, read from every module's imports (ast, no code run).

Only function_app.py and chat/http/ import an HTTP framework; the pipeline knows nothing of
HTTP; providers know nothing of the pipeline; no module of chat/ imports a higher layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from chat.settings import PROJECT_ROOT

HTTP_FRAMEWORKS = ("starlette", "azure.functions", "azurefunctions", "fastapi", "uvicorn")
# Lowest first; a module may import its own layer and those below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("chat.settings", "chat.errors", "chat.events", "chat.tokens", "chat.prompts"),
    ("chat.protocol", "chat.providers", "chat.client_limits", "chat.relevance"),
    ("chat.budget", "chat.pipeline", "chat.services", "chat.telemetry"),
    ("chat.http", "chat.ingest"),
    ("chat.doctor", "chat.evaluate", "chat.answer_eval", "chat.localstack", "chat.localmodel"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] in ("__init__", "__main__") else parts)


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # "from chat import telemetry" imports the module chat.telemetry
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "chat")
    return found


# Every module of chat/ but the package's own __init__ (a docstring, no imports).
CHAT_MODULES = sorted(path for path in (PROJECT_ROOT / "chat").rglob("*.py") if module_name(path) != "chat")


@pytest.mark.parametrize("path", CHAT_MODULES, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    here = module_name(path)
    rank = layer_of(here)
    upward = [
        name
        for name in imports_of(path)
        if name.startswith("chat.") and not name.startswith(here) and layer_of(name) > rank
    ]
    assert not upward, f"{here} (layer {rank}) imports {upward}"


@pytest.mark.parametrize("path", CHAT_MODULES, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_only_the_http_layer_imports_an_http_framework(path: Path) -> None:
    if module_name(path).startswith("chat.http"):
        return
    frameworks = [name for name in imports_of(path) if name.startswith(HTTP_FRAMEWORKS)]
    assert not frameworks, f"{path.relative_to(PROJECT_ROOT)} imports {frameworks}"


def test_the_layer_table_names_real_modules() -> None:
    """A renamed module cannot leave a stale entry that silently matches nothing."""
    modules = {module_name(path) for path in CHAT_MODULES}
    for prefixes in LAYERS:
        for prefix in prefixes:
            assert any(m == prefix or m.startswith(prefix + ".") for m in modules), prefix

"""Shared fixtures: a clean environment per test, SDK-boundary mocks, a small local index, an ASGI client."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from azure.search.documents.aio import SearchClient
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.embeddings import AsyncEmbeddings

from benchmarks.stack import child_environment as child_environment  # tests import it from here
from chat import tokens
from chat.http.devserver import create_app
from chat.ingest.cli import chunk_documents, collect_files, ingest
from chat.localstack import Server, free_port, running
from chat.providers.llm import build_openai_clients
from chat.providers.local_index import LocalIndexWriter
from chat.services import close_services
from chat.settings import PROJECT_ROOT, all_variables, get_settings
from tests.sdk_fakes import ChatScript, EmbeddingScript, SearchScript

TEST_DOCUMENTS = {
    "mushroom-pineapple.md": (
        "# Mushroom and pineapple pizza\n\nA meat-free take on the Hawaiian.\n\n## Method\n"
        "Brown the mushrooms in a hot pan. Caramelise the pineapple. Bake at 260 C for 9 minutes.\n"
    ),
    "margherita.md": "# Margherita\n\nTomato, mozzarella and basil on a thin crust. Bake at 280 C for 7 minutes.\n",
    "dough.md": "# Pizza dough\n\n## Ingredients\n500 g flour, 325 g water, 10 g salt, 2 g yeast.\n",
    "oven.txt": "Oven notes\n==========\n\nPreheat a baking steel for 45 minutes. A stone needs an hour.\n",
}
# As function_app does at start-up, so that no test times the tokenizer's one-off load.
tokens.preload()

# CI sets REQUIRE_ALL_TESTS=1: a missing tool (node packages, chromium, the local model, pycep) then
# fails the test instead of skipping it, so nothing is silently left out of a CI run. Tests say what
# they need with require() and require_module(); the hooks below fail any other skip too.
REQUIRE_ALL_TESTS = os.environ.get("REQUIRE_ALL_TESTS") == "1"
# tests/test_worker.py drives the Functions worker library, which exists for Python 3.13+ only.
# Below 3.13 it skips with that reason; under REQUIRE_ALL_TESTS=1 (where every skip fails) it is
# left out instead, as it cannot run there. CI runs it on 3.13, where a missing package fails it.
collect_ignore = ["test_worker.py"] if REQUIRE_ALL_TESTS and sys.version_info < (3, 13) else []


def require(condition: bool, reason: str) -> None:
    """Skip the calling test when ``condition`` is false (fail instead under REQUIRE_ALL_TESTS=1)."""
    if condition:
        return
    if REQUIRE_ALL_TESTS:
        pytest.fail(f"REQUIRE_ALL_TESTS=1 but: {reason}")
    pytest.skip(reason)


def require_module(name: str, reason: str) -> ModuleType:
    """The module ``name`` for a test module's top level; without it the module is skipped, or fails in CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if REQUIRE_ALL_TESTS:
            pytest.fail(f"REQUIRE_ALL_TESTS=1 but: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def _skip_fails(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under REQUIRE_ALL_TESTS=1, a skipped test or module (not an expected failure) is reported failed."""
    if REQUIRE_ALL_TESTS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_ALL_TESTS=1 but it was skipped: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _skip_fails(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report() -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _skip_fails(report)
    return report


AZURE_ENVIRONMENT = {
    "OPENAI_HOST": "azure",
    "SEARCH_HOST": "azure",
    "AZURE_OPENAI_ENDPOINT": "https://test-openai.openai.azure.com",
    "AZURE_OPENAI_CHAT_DEPLOYMENT": "chat-deployment",
    "AZURE_OPENAI_EMBEDDING_DEPLOYMENT": "embedding-deployment",
    "AZURE_SEARCH_ENDPOINT": "https://test-search.search.windows.net",
    "AZURE_SEARCH_INDEX": "test-index",
}
SEARCH_DOCUMENTS = [
    {
        "id": "mushroom-pineapple_md-0000",
        "title": "Mushroom and pineapple pizza",
        "source": "mushroom-pineapple.md",
        "content": "Brown the mushrooms in a hot pan. Caramelise the pineapple.",
        "@search.score": 0.03,
        "@search.reranker_score": 2.9,
    },
    {
        "id": "dough_md-0000",
        "title": "Pizza dough",
        "source": "dough.md",
        "content": "500 g flour, 325 g water, 10 g salt, 2 g yeast.",
        "@search.score": 0.02,
        "@search.reranker_score": 1.1,
    },
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts from the defaults (local mode), with its own index path."""
    for name in all_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_INDEX_PATH", str(tmp_path / "index.sqlite"))
    # Nothing listens here: a test never reaches a model server that happens to run on this machine.
    closed = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("LOCAL_OPENAI_ENDPOINT", closed)
    monkeypatch.setenv("LOCAL_EMBEDDING_ENDPOINT", closed)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
async def fresh_services() -> AsyncIterator[None]:
    """Clients are per process; tests get their own and close them."""
    await close_services()
    yield
    await close_services()


@pytest.fixture
def azure_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in AZURE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return AZURE_ENVIRONMENT


@pytest.fixture
def chat_script(monkeypatch: pytest.MonkeyPatch) -> ChatScript:
    """The seed pattern: AsyncOpenAI's chat.completions.create, replaced at the SDK boundary."""
    script = ChatScript()

    async def create(self: AsyncCompletions, **kwargs: object) -> object:
        return await script.create(**kwargs)

    monkeypatch.setattr(AsyncCompletions, "create", create)
    return script


@pytest.fixture
def embedding_script(monkeypatch: pytest.MonkeyPatch) -> EmbeddingScript:
    script = EmbeddingScript()

    async def create(self: AsyncEmbeddings, **kwargs: object) -> object:
        return await script.create(**kwargs)

    monkeypatch.setattr(AsyncEmbeddings, "create", create)
    return script


@pytest.fixture
def search_script(monkeypatch: pytest.MonkeyPatch) -> SearchScript:
    script = SearchScript([dict(document) for document in SEARCH_DOCUMENTS])

    async def search(self: SearchClient, search_text: str | None = None, **kwargs: object) -> object:
        return await script.search(search_text, **kwargs)

    monkeypatch.setattr(SearchClient, "search", search)
    return script


def write_documents(folder: Path, documents: dict[str, str] = TEST_DOCUMENTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


async def build_index(folder: Path, index_path: Path, *, prune: bool = True) -> None:
    """Ingest ``folder`` into a local index with the embeddings the configuration names (mocked or real)."""
    clients = build_openai_clients(get_settings(), None)
    chunks = chunk_documents(collect_files([folder]), size=200, overlap=40)
    writer = LocalIndexWriter(index_path, clients.embedder.model)
    try:
        await ingest(chunks, writer, clients.embedder, prune=prune)
    finally:
        await writer.aclose()
        await clients.aclose()


@pytest.fixture
async def local_index(embedding_script: EmbeddingScript, tmp_path: Path) -> Path:
    """A small local index of TEST_DOCUMENTS, at the path the settings name."""
    index_path = get_settings().local_search.index_path
    await build_index(write_documents(tmp_path / "docs"), index_path)
    return index_path


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the local host's ASGI app (buffered: for everything but streaming timing)."""
    app = create_app(tmp_path / "no-local-settings.json")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        yield http


# --- Real servers on 127.0.0.1: the simulated upstream and the local host, one of each per session ---

HOST_LIMITS = {
    "OPENAI_TIMEOUT_SECONDS": "2",
    "OPENAI_MAX_RETRIES": "2",
    "STREAM_HEARTBEAT_SECONDS": "0.5",
    # Every test of the session is one client (127.0.0.1): the per-client limits are tested on their own.
    "CHAT_REQUESTS_PER_MINUTE_PER_CLIENT": "100000",
    "CHAT_MAX_STREAMS_PER_CLIENT": "1000",
    # The simulated upstream's embeddings are word hashes, and some tests ask about nothing in
    # particular (the doctor's probe): the relevance gate is tested on its own (tests/test_relevance.py).
    "CHAT_RELEVANCE_GATE": "off",
}


@dataclass(frozen=True)
class LocalStack:
    """A running local host whose model and embeddings come from the simulated upstream."""

    url: str
    upstream_url: str
    index_path: Path

    def upstream_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.upstream_url}/_stats").json()  # type: ignore[no-any-return]

    def environment(self, **values: str) -> dict[str, str]:
        """A child process's environment on this stack's upstream and index, plus (or instead) ``values``."""
        return child_environment(
            **{
                "LOCAL_OPENAI_ENDPOINT": f"{self.upstream_url}/v1",
                "LOCAL_EMBEDDING_ENDPOINT": f"{self.upstream_url}/v1",
                "LOCAL_INDEX_PATH": str(self.index_path),
                **values,
            }
        )


def host_server(root: Path, environment: dict[str, str], ready_path: str = "/api/health") -> tuple[Server, str]:
    """The local host as a child process on a free port, reading no local.settings.json; and its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "chat.http.devserver", "--port", str(port), "--settings", str(root / "none.json")]
    return Server("host", command, url + ready_path, env=environment, log_dir=root), url


INGEST_TIMEOUT_SECONDS = 300


def ingest_with(environment: dict[str, str], documents: Path) -> None:
    """Run the ingest CLI as a child process, the way a user does."""
    command = [sys.executable, "-m", "chat.ingest", str(documents)]
    subprocess.run(
        command, env=environment, check=True, cwd=PROJECT_ROOT, capture_output=True, timeout=INGEST_TIMEOUT_SECONDS
    )


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("stack")
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    values = {
        "LOCAL_OPENAI_ENDPOINT": f"{upstream_url}/v1",
        "LOCAL_EMBEDDING_ENDPOINT": f"{upstream_url}/v1",
        "LOCAL_INDEX_PATH": str(root / "index.sqlite"),
        **HOST_LIMITS,
    }
    environment = child_environment(**values)
    upstream = Server(
        "upstream",
        [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port), "--ttft", "0.3", "--tps", "20"],
        f"{upstream_url}/v1/models",
        env=environment,
        log_dir=root,
    )
    host, host_url = host_server(root, environment)
    with running([upstream]):
        ingest_with(environment, write_documents(root / "docs"))
        with running([host]):
            yield LocalStack(host_url, upstream_url, root / "index.sqlite")

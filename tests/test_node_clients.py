"""The official clients (@microsoft/ai-chat-protocol, ndjson-readablestream) run by node against the local host."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LocalStack, require

NODE_DIR = Path(__file__).parent / "node"
QUESTION = "Which pizza has mushroom and pineapple? [[upstream tokens=12]]"
FAILING = "Which pizza? [[upstream fail=drop after=3]]"

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def results(local_stack: LocalStack) -> dict[str, Any]:
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "@microsoft" / "ai-chat-protocol").is_dir()
    require(node is not None and installed, "needs node and `npm ci --prefix tests/node` (make test does both)")
    completed = subprocess.run(
        [str(node), "check_clients.mjs", local_stack.url, QUESTION, FAILING],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def test_streamed_completion_with_the_protocol_client(results: dict[str, Any]) -> None:
    chunks = results["streamed"]
    assert all("delta" in chunk for chunk in chunks)
    stages = [chunk["context"]["stage"]["name"] for chunk in chunks if "stage" in chunk.get("context", {})]
    assert stages == ["question", "query", "search", "answer"]
    assert chunks[0]["delta"]["role"] == "assistant"
    content = "".join(chunk["delta"].get("content", "") for chunk in chunks)
    assert content.startswith("Sure! Here's a pizza with mushroom")
    assert any("followupQuestions" in chunk.get("context", {}) for chunk in chunks)
    assert chunks[-1]["finishReason"] == "stop"
    assert chunks[-1]["sessionState"] == {"turn": 1}


def test_completion_with_the_protocol_client(results: dict[str, Any]) -> None:
    completion = results["completion"]
    assert completion["message"]["role"] == "assistant"
    assert completion["message"]["content"].startswith("Sure! Here's a pizza with mushroom")
    assert completion["finishReason"] == "stop"
    assert completion["sessionState"] == {"turn": 1}
    assert completion["context"]["dataPoints"]


def test_ndjson_readablestream_reads_every_line(results: dict[str, Any]) -> None:
    lines = results["readable"]
    assert lines[0]["context"]["stage"]["name"] == "question"
    assert "".join(line["delta"].get("content", "") for line in lines).startswith("Sure!")
    assert lines[-1]["finishReason"] == "stop"


def test_errors_reach_the_protocol_client_as_errors(results: dict[str, Any]) -> None:
    assert results["streamError"] == {
        "code": "upstream_unavailable",
        "message": "The connection to the model failed or broke off.",
    }
    assert "".join(chunk["delta"].get("content", "") for chunk in results["partial"]) == "Sure! Here"
    assert results["requestError"]["code"] == "invalid_request"
    assert "system" in results["requestError"]["message"]

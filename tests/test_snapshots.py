"""The whole NDJSON stream and the JSON answer for fixed mocks, compared with reviewed snapshots.

Volatile fields (elapsedMs) are normalised. After an intended change of the wire format, review
the diff and run `pytest tests/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from syrupy.assertion import SnapshotAssertion

from tests.sdk_fakes import ChatScript, EmbeddingScript

REQUEST = {
    "messages": [{"role": "user", "content": "Can you suggest a pizza with mushroom and pineapple?"}],
    "context": {"overrides": {"top": 2, "suggestFollowupQuestions": True}},
    "sessionState": {"id": "session-1"},
}


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: 0 if key == "elapsedMs" else normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalised(item) for item in value]
    return value


async def test_stream_snapshot(
    client: httpx.AsyncClient,
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    snapshot: SnapshotAssertion,
) -> None:
    response = await client.post("/api/chat/stream", json=REQUEST)
    lines = [normalised(orjson.loads(line)) for line in response.content.splitlines()]
    assert lines == snapshot


async def test_json_snapshot(
    client: httpx.AsyncClient,
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    snapshot: SnapshotAssertion,
) -> None:
    response = await client.post("/api/chat", json=REQUEST)
    assert normalised(response.json()) == snapshot

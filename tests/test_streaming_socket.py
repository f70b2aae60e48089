"""Streaming over a real socket: local host and simulated upstream as processes, a real HTTP client.

A buffered test cannot see streaming; these measure when each line arrives. The upstream's
delays are large and the assertions are orderings with wide margins, not speed limits.
"""

from __future__ import annotations

import orjson

from tests.conftest import LocalStack
from tests.ndjson_client import question, stream

# The query rewrite waits 0.8 s, the answer's first token 0.8 s more, then 10 tokens/s.
SLOW_UPSTREAM = "[[upstream delay=0.8 ttft=0.8 tps=10 tokens=12]]"


async def test_lines_arrive_as_they_are_produced(local_stack: LocalStack) -> None:
    """A follow-up question, so that the model is called (to rewrite it) before the search."""
    payload = question(f"mushroom and pineapple? {SLOW_UPSTREAM}")
    payload["messages"][:0] = [{"role": "user", "content": "A pizza?"}, {"role": "assistant", "content": "Yes."}]
    record = await stream(local_stack.url, payload)

    assert record.status == 200
    assert record.headers["content-type"] == "application/x-ndjson"
    assert record.headers["cache-control"] == "no-cache"
    assert "content-encoding" not in record.headers
    assert record.stages() == ["question", "query", "search", "answer"]
    first_line_at = record.lines[0][0] - record.started
    assert first_line_at < record.time_of_stage("query") - 0.5, "the first line did not wait for the model"
    contents = record.content_times()
    assert len(contents) == 12
    assert contents[0] > record.time_of_stage("answer") + 0.5, "the first token waited for the upstream's"
    assert contents[-1] - contents[0] > 0.5 * 11 / 10, "tokens arrive spread out as generated, not in one burst"
    assert record.objects[-1]["finishReason"] == "stop"
    assert record.objects[-1]["context"]["usage"]["completionTokens"] == 12 + 8  # answer + query rewrite


async def test_heartbeats_bridge_a_slow_model(local_stack: LocalStack) -> None:
    record = await stream(local_stack.url, question("mushroom? [[upstream ttft=1.6 tokens=3]]"))
    answer_started = record.time_of_stage("answer")
    heartbeats = [at - record.started for at, line in record.lines if line.get("context", {}).get("heartbeat")]
    assert heartbeats, "a heartbeat line is sent while the model is silent"
    assert all(at > answer_started for at in heartbeats)
    assert record.objects[-1]["finishReason"] == "stop"


async def test_json_route_over_the_socket(local_stack: LocalStack) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{local_stack.url}/api/chat", json=question(suggestFollowupQuestions=True))
    answer = response.json()
    assert response.status_code == 200
    assert answer["message"]["content"].startswith("Sure! Here's a pizza")
    assert answer["context"]["followupQuestions"] == [
        "What oven temperature should I use?",
        "Can I make the dough a day ahead?",
        "Which cheese melts best?",
    ]
    assert orjson.dumps(answer["sessionState"]) == b"null"

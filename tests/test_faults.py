"""Every fault ends the stream with one error line (or a retried answer), never a hang or a torn line.

Against the real local host and the simulated upstream over loopback. The upstream's
behaviour is chosen per request by a directive in the question (see benchmarks/upstream.py);
the host runs with OPENAI_TIMEOUT_SECONDS=2 and OPENAI_MAX_RETRIES=2 (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from chat.http.devserver import create_app
from chat.localstack import free_port, running
from chat.settings import get_settings
from tests.conftest import HOST_LIMITS, LocalStack, child_environment, host_server
from tests.ndjson_client import question, stream

TIMEOUT = float(HOST_LIMITS["OPENAI_TIMEOUT_SECONDS"])
KEEPALIVE_EXPIRY = 5.0  # httpx's default, which the openai SDK's connection limits keep


def unique(directive: str) -> str:
    """A question the upstream has not seen, so attempt counters start at zero."""
    return f"mushroom pizza {uuid.uuid4().hex[:8]} [[upstream {directive}]]"


async def test_throttled_then_answered_honours_retry_after(local_stack: LocalStack) -> None:
    text = unique("fail=status status=429 times=1 retry_after=1")
    record = await stream(local_stack.url, question(text))
    assert record.error is None
    assert record.objects[-1]["finishReason"] == "stop"
    assert record.content().startswith("Sure!")
    answer_started = record.time_of_stage("answer")
    assert record.content_times()[0] - answer_started >= 1.0, "the retry waited for Retry-After"
    assert local_stack.upstream_stats()["requests"]["answer"] >= 2


@pytest.mark.parametrize(("status", "code"), [(500, "upstream_unavailable"), (429, "upstream_throttled")])
async def test_persistent_failure_before_the_first_token_is_an_error_line(
    local_stack: LocalStack, status: int, code: str
) -> None:
    before = local_stack.upstream_stats()["requests"].get("answer", 0)
    record = await stream(local_stack.url, question(unique(f"fail=status status={status}")))
    assert record.status == 200
    assert record.stages() == ["question", "query", "search", "answer"]
    assert record.error is not None
    assert record.error["code"] == code
    assert record.content() == ""
    attempts = local_stack.upstream_stats()["requests"]["answer"] - before
    assert attempts == 1 + 2, "the SDK retried twice (OPENAI_MAX_RETRIES=2), then gave up"


async def test_failed_query_rewrite_after_the_first_line(local_stack: LocalStack) -> None:
    """A follow-up question (one with history) is rewritten into a search query first."""
    payload = question(unique("fail=status status=503 call=query"))
    payload["messages"][:0] = [{"role": "user", "content": "A pizza?"}, {"role": "assistant", "content": "Yes."}]
    record = await stream(local_stack.url, payload)
    assert record.stages() == ["question"]
    assert record.error == {"code": "upstream_unavailable", "message": "The model answered HTTP 503."}


@pytest.mark.parametrize(
    ("directive", "code", "tokens"),
    [
        ("ttft=6", "upstream_timeout", 0),
        ("fail=hang after=3", "upstream_timeout", 3),
        ("fail=drop after=3", "upstream_unavailable", 3),
        ("fail=malformed after=2", "upstream_malformed", 2),
        ("fail=error-event after=4", "upstream_unavailable", 4),
    ],
)
async def test_upstream_faults_end_the_stream_with_an_error_line(
    local_stack: LocalStack, directive: str, code: str, tokens: int
) -> None:
    record = await stream(local_stack.url, question(unique(directive)))
    assert record.status == 200
    assert record.error is not None, record.objects[-1]
    assert record.error["code"] == code
    assert len(record.content_times()) == tokens
    assert all("delta" in line for line in record.objects), "every line is a whole protocol line"
    if code == "upstream_timeout":
        waited = record.lines[-1][0] - record.started - record.time_of_stage("answer")
        assert waited < TIMEOUT + 1.5, f"the stream ended within the configured timeout ({waited:.1f} s)"
    # the next request is fine
    healthy = await stream(local_stack.url, question())
    assert healthy.error is None and healthy.content()


@pytest.fixture(scope="module")
def host_without_embeddings(tmp_path_factory: pytest.TempPathFactory, local_stack: LocalStack) -> Iterator[str]:
    """A second host whose embeddings server is down, so the search stage cannot run."""
    root = tmp_path_factory.mktemp("no-embeddings")
    environment = child_environment(
        LOCAL_OPENAI_ENDPOINT=f"{local_stack.upstream_url}/v1",
        LOCAL_EMBEDDING_ENDPOINT=f"http://127.0.0.1:{free_port()}/v1",
        LOCAL_INDEX_PATH=str(local_stack.index_path),
        **HOST_LIMITS,
    )
    host, url = host_server(root, environment, ready_path="/")  # its health is 503, by design
    with running([host]):
        yield url


async def test_search_unavailable_is_an_error_line(host_without_embeddings: str) -> None:
    """Decision: an answer without sources would be ungrounded, so the stream ends with an error line."""
    record = await stream(host_without_embeddings, question())
    assert record.stages() == ["question", "query"]
    assert record.error == {
        "code": "upstream_timeout",
        "message": "The embedding model could not be reached or did not answer within 2 seconds.",
    }
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{host_without_embeddings}/api/health/details")
    assert health.status_code == 503
    assert health.json()["providers"]["embeddings"]["ok"] is False


async def test_client_disconnect_closes_the_upstream_call(local_stack: LocalStack) -> None:
    """In a loop: the client hangs up mid-answer; the upstream sees its connection closed within 1 s."""
    trials = 15
    for trial in range(trials):
        before = len(local_stack.upstream_stats()["cancelled"])
        await stream(local_stack.url, question(unique("tps=20 tokens=400")), stop_after_content=3)
        hung_up = time.time()
        deadline = hung_up + 1.0
        while time.time() < deadline and len(local_stack.upstream_stats()["cancelled"]) == before:
            await asyncio.sleep(0.02)
        cancelled = local_stack.upstream_stats()["cancelled"]
        assert len(cancelled) == before + 1, f"trial {trial}: the upstream still streams after the client left"
        assert cancelled[-1] - hung_up < 1.0


class ThreadedHost:
    """The local host in a thread of this process, so its tasks and file descriptors can be counted."""

    def __init__(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(Path("/nonexistent")), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True)

    def __enter__(self) -> ThreadedHost:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def task_count(self) -> int:
        return asyncio.run_coroutine_threadsafe(_count_tasks(), self.loop).result(5)


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())


def open_descriptors() -> tuple[int, int]:
    """(file descriptors, of which sockets) of this process."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return len(names), sum(name.startswith("socket:") for name in names)


async def test_no_leaks_after_bursts_of_mixed_faults(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaks accumulate: after a first burst warms the host up, another must not grow the counts."""
    environment = {
        "LOCAL_OPENAI_ENDPOINT": f"{local_stack.upstream_url}/v1",
        "LOCAL_EMBEDDING_ENDPOINT": f"{local_stack.upstream_url}/v1",
        "LOCAL_INDEX_PATH": str(local_stack.index_path),
        **HOST_LIMITS,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    faults = ["fail=drop after=2", "fail=malformed after=1", "fail=hang after=2", "fail=status status=500", "tokens=5"]

    with ThreadedHost() as host:

        async def burst() -> None:
            streams = [stream(host.url, question(unique(faults[i % len(faults)]))) for i in range(15)]
            streams += [stream(host.url, question(unique("tokens=400")), stop_after_content=2) for _ in range(3)]
            records = await asyncio.gather(*streams)
            assert all(record.lines for record in records)
            # Idle keep-alive connections leave the SDK's pool after 5 s; what stays after that is a leak.
            await asyncio.sleep(KEEPALIVE_EXPIRY + 1)

        await burst()
        baseline_tasks, (baseline_fds, baseline_sockets) = host.task_count(), open_descriptors()
        await burst()
        after_tasks, (after_fds, after_sockets) = host.task_count(), open_descriptors()

    assert after_tasks <= baseline_tasks, f"tasks grew from {baseline_tasks} to {after_tasks}"
    assert after_sockets <= baseline_sockets + 2, f"sockets grew from {baseline_sockets} to {after_sockets}"
    assert after_fds <= baseline_fds + 2, f"descriptors grew from {baseline_fds} to {after_fds}"

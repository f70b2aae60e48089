"""function_app.py through the real Python worker (azure-functions-runtime), driven as the Functions host drives it.

The test plays the host: it runs the gRPC server of the host's protocol (tests/protos, the
published contract), starts a worker process that connects to it (tests/functions_worker.py, in
place of the worker's front end that ships with the host), and then, as the host does:
WorkerInitRequest with the host's capabilities (the worker answers with its own, among them
HttpUri: the HTTP server it started because the app uses the streaming extension), a
FunctionsMetadataRequest (the worker indexes function_app.py), a FunctionLoadRequest per function,
and for each call the HTTP request to the worker's server carrying x-ms-invocation-id, sent
before the InvocationRequest, as the host's proxy does. Model and embeddings come from the
simulated upstream (benchmarks/upstream.py), the index from the local stack's ingest.

What the real host does that this test does not reproduce:
- It is a .NET process (the Functions host v4). Its gRPC server, process management and the
  worker's front end are stood in for; the library doing the work is the real one.
- ASP.NET Core routing: the host matches a request to a function by route template and method
  and answers 404/405 itself. Here the test names the function of each request.
- The HTTP proxy (YARP): the host forwards the client's request to HttpUri (path, query and
  headers, with x-ms-invocation-id added; 240 s activity timeout). Here the test's HTTP client is
  that proxy and connects to the worker's server directly; a client disconnect here is the
  proxy cancelling the forwarded request, which is what a disconnecting client causes there.
- Function keys (the host checks AuthLevel.FUNCTION before invoking), App Service
  authentication (EasyAuth, in front of the host), the platform's CORS, the front end's 230 s
  idle limit, host.json (routePrefix, functionTimeout), RpcLog forwarding and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from chat.settings import PROJECT_ROOT
from tests.conftest import HOST_LIMITS, LocalStack, child_environment, require
from tests.ndjson_client import question

# The worker library exists for Python 3.13+ only; CI runs this file on 3.13 (see .ci/run). Below
# 3.13 it skips with that reason, or, under REQUIRE_ALL_TESTS=1, is not collected (tests/conftest.py).
pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 13), reason="azure-functions-runtime (the worker) needs Python 3.13+"),
    pytest.mark.asyncio(loop_scope="module"),
]

# The query rewrite waits 0.8 s, the answer's first token 0.8 s more, then 10 tokens/s.
SLOW_UPSTREAM = "[[upstream delay=0.8 ttft=0.8 tps=10 tokens=12]]"
ANSWER_TIMEOUT_SECONDS = 60.0
EXPECTED_ROUTES = {
    "chat_stream": ("api/chat/stream", ["POST"]),
    "chat": ("api/chat", ["POST"]),
    "health": ("api/health", ["GET"]),
    "health_details": ("api/health/details", ["GET"]),
    "chat_page": ("chat", ["GET"]),
    "page": ("/", ["GET"]),
    "assets": ("assets/{*path}", ["GET"]),
}


@dataclass
class Function:
    """A function as the worker indexed it: id, its trigger's parameter name and raw binding."""

    function_id: str
    trigger_parameter: str
    trigger: dict[str, Any]


@dataclass
class FunctionsHost:
    """The host's end of the EventStream: sends requests, hands each answer to whoever awaits it."""

    messages: Any
    outbound: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    waiting: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    started: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def EventStream(self, inbound: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        reader = asyncio.create_task(self._read(inbound))
        try:
            while (message := await self.outbound.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def _read(self, inbound: AsyncIterator[Any]) -> None:
        async for message in inbound:
            kind = message.WhichOneof("content")
            if kind == "start_stream":
                self.started.set_result(message.start_stream)
                continue
            key = message.invocation_response.invocation_id if kind == "invocation_response" else message.request_id
            future = self.waiting.pop(key, None)
            if future is not None:
                future.set_result(getattr(message, kind))

    async def request(self, key: str | None = None, **content: Any) -> Any:
        """Send one StreamingMessage; its answer (matched by request id, or ``key``) when it comes."""
        request_id = str(uuid.uuid4())
        answer = asyncio.get_running_loop().create_future()
        self.waiting[key or request_id] = answer
        message = self.messages.StreamingMessage(request_id="" if key else request_id, **content)
        await self.outbound.put(message)
        return await asyncio.wait_for(answer, ANSWER_TIMEOUT_SECONDS)


@dataclass
class Worker:
    """A worker process, initialised and with the app's functions indexed and loaded."""

    host: FunctionsHost
    init: Any
    functions: dict[str, Function]
    http_uri: str
    http: httpx.AsyncClient

    async def call(
        self, function: str, method: str, path: str, *, params: dict[str, str] | None = None, **request: Any
    ) -> tuple[httpx.Response, Any]:
        """The HTTP request forwarded to the worker's server, then the invocation (the host's order).

        Returns the response (headers read, body still streaming) and the InvocationResponse.
        """
        invocation_id = str(uuid.uuid4())
        headers = {"x-ms-invocation-id": invocation_id, **request.pop("headers", {})}
        forwarded = self.http.build_request(method, f"{self.http_uri}{path}", headers=headers, **request)
        response = asyncio.create_task(self.http.send(forwarded, stream=True))
        target = self.functions[function]
        m = self.host.messages
        http = m.TypedData(http=m.RpcHttp(params=params or {}))
        invocation = m.InvocationRequest(
            invocation_id=invocation_id,
            function_id=target.function_id,
            input_data=[m.ParameterBinding(name=target.trigger_parameter, data=http)],
        )
        answered = await self.host.request(key=invocation_id, invocation_request=invocation)
        return await response, answered


@contextlib.asynccontextmanager
async def running_worker(local_stack: LocalStack, folder: Path, **settings: str) -> AsyncIterator[Worker]:
    """A host's gRPC server and a worker process connected to it, initialised, indexed and loaded."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("azure_functions_runtime", "grpc_tools")}
    require(all(found.values()), f"needs requirements-dev.txt on Python 3.13 (installed: {found})")
    import grpc

    from tests.functions_rpc import compile_protocol, load_protocol

    protocol = compile_protocol(folder)
    messages, service = load_protocol(protocol)
    host = FunctionsHost(messages)
    server = grpc.aio.server()
    service.add_FunctionRpcServicer_to_server(host, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    upstream = f"{local_stack.upstream_url}/v1"
    environment = child_environment(
        LOCAL_OPENAI_ENDPOINT=upstream,
        LOCAL_EMBEDDING_ENDPOINT=upstream,
        LOCAL_INDEX_PATH=str(local_stack.index_path),
        FUNCTIONS_WORKER_RUNTIME="python",
        **HOST_LIMITS,
        **settings,
    )
    worker_id = str(uuid.uuid4())
    command = [sys.executable, "-m", "tests.functions_worker", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--functions-worker-id", worker_id, "--functions-request-id", str(uuid.uuid4())]
    command += ["--protocol", str(protocol)]
    process = start(command, environment, folder / "worker.log")
    try:
        started = await asyncio.wait_for(host.started, ANSWER_TIMEOUT_SECONDS)
        assert started.worker_id == worker_id
        init = await host.request(
            worker_init_request=messages.WorkerInitRequest(
                host_version="4.1040.300.0",
                function_app_directory=str(PROJECT_ROOT),
                worker_directory=str(PROJECT_ROOT),
                capabilities={"MultiStream": "10"},  # what host v4 sends (FunctionDataCache only when enabled)
            )
        )
        assert init.result.status == messages.StatusResult.Success, init.result.exception.message
        functions = await index_and_load(host, messages)
        async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT_SECONDS) as http:
            yield Worker(host, init, functions, init.capabilities["HttpUri"], http)
    finally:
        await host.outbound.put(None)
        await server.stop(grace=1)
        process.terminate()
        process.wait(10)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    async with running_worker(local_stack, tmp_path_factory.mktemp("worker")) as started:
        yield started


def start(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as output:
        return subprocess.Popen(command, env=environment, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT)


async def index_and_load(host: FunctionsHost, messages: Any) -> dict[str, Function]:
    metadata = await host.request(
        functions_metadata_request=messages.FunctionsMetadataRequest(function_app_directory=str(PROJECT_ROOT))
    )
    functions: dict[str, Function] = {}
    for indexed in metadata.function_metadata_results:
        loaded = await host.request(
            function_load_request=messages.FunctionLoadRequest(function_id=indexed.function_id, metadata=indexed)
        )
        assert loaded.result.status == messages.StatusResult.Success, loaded.result.exception.message
        raw = [json.loads(binding) for binding in indexed.raw_bindings]
        [trigger] = [binding for binding in raw if binding["type"] == "httpTrigger"]
        functions[indexed.name] = Function(indexed.function_id, trigger["name"], trigger)
    return functions


# --- what the host learns at start-up ---------------------------------------------------------------


async def test_the_worker_starts_its_http_server_and_indexes_every_function(worker: Worker) -> None:
    capabilities = dict(worker.init.capabilities)
    assert capabilities["HttpUri"].startswith("http://127.0.0.1:"), "streaming needs the worker's own HTTP server"
    assert capabilities["RequiresRouteParameters"] == "true"
    assert worker.init.worker_metadata.runtime_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    routes = {name: (f.trigger["route"], sorted(f.trigger["methods"])) for name, f in worker.functions.items()}
    assert routes == EXPECTED_ROUTES
    assert all(f.trigger["authLevel"] == "ANONYMOUS" for f in worker.functions.values())  # CHAT_AUTH_MODE default


async def test_in_keys_mode_the_host_is_told_to_require_a_function_key(local_stack: LocalStack, tmp_path: Path) -> None:
    """The host, not the app, checks function keys: the worker must report FUNCTION for the chat routes."""
    async with running_worker(local_stack, tmp_path, CHAT_AUTH_MODE="keys") as keyed:
        levels = {name: function.trigger["authLevel"] for name, function in keyed.functions.items()}
    protected = dict.fromkeys(("chat_stream", "chat", "health_details"), "FUNCTION")
    assert levels == {
        **protected,
        "health": "ANONYMOUS",
        "chat_page": "ANONYMOUS",
        "page": "ANONYMOUS",
        "assets": "ANONYMOUS",
    }


# --- each route: invocation over gRPC plus the forwarded HTTP request --------------------------------


async def read(worker: Worker, function: str, method: str, path: str, **request: Any) -> tuple[httpx.Response, Any]:
    response, invocation = await worker.call(function, method, path, **request)
    await response.aread()
    return response, invocation


async def test_health_page_and_assets_answer(worker: Worker) -> None:
    success = worker.host.messages.StatusResult.Success
    health, invoked = await read(worker, "health", "GET", "/api/health")
    assert invoked.result.status == success
    assert (health.status_code, health.json()["status"]) == (200, "ok")

    page, invoked = await read(worker, "page", "GET", "/")
    assert invoked.result.status == success
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")

    # The route parameter travels in the invocation's RpcHttp params (the worker asked for them with
    # RequiresRouteParameters): the worker's own server does not parse the route template.
    css, invoked = await read(worker, "assets", "GET", "/assets/chat.css", params={"path": "chat.css"})
    assert invoked.result.status == success
    assert css.status_code == 200
    assert css.content == (PROJECT_ROOT / "chat" / "http" / "web" / "static" / "chat.css").read_bytes()
    unrouted, _ = await read(worker, "assets", "GET", "/assets/chat.css")
    assert unrouted.status_code == 404


async def test_the_json_route_answers(worker: Worker) -> None:
    response, invoked = await read(worker, "chat", "POST", "/api/chat", json=question())
    assert invoked.result.status == worker.host.messages.StatusResult.Success
    assert response.status_code == 200
    assert response.json()["message"]["content"].startswith("Sure! Here's a pizza")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b'{"messages": []}', "application/json", 400, "invalid_request"),
        (b'{"messages": []}', "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_a_bad_body_gets_its_4xx(worker: Worker, body: bytes, content_type: str, status: int, code: str) -> None:
    headers = {"content-type": content_type}
    response, invoked = await read(worker, "chat_stream", "POST", "/api/chat/stream", content=body, headers=headers)
    assert invoked.result.status == worker.host.messages.StatusResult.Success
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_the_stream_arrives_line_by_line(worker: Worker) -> None:
    payload = question(f"mushroom and pineapple? {SLOW_UPSTREAM}")
    # A follow-up question, so that the model is called (to rewrite it) before the search.
    payload["messages"][:0] = [{"role": "user", "content": "A pizza?"}, {"role": "assistant", "content": "Yes."}]
    started = time.perf_counter()
    response, invoked = await worker.call("chat_stream", "POST", "/api/chat/stream", json=payload)
    # The worker reports success once the function returned its StreamingResponse, before the stream ends.
    assert invoked.result.status == worker.host.messages.StatusResult.Success
    lines: list[tuple[float, dict[str, Any]]] = []
    async for raw in response.aiter_lines():
        if raw:
            lines.append((time.perf_counter() - started, orjson.loads(raw)))
    await response.aclose()

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "content-encoding" not in response.headers
    stages = {line["context"]["stage"]["name"]: at for at, line in lines if "stage" in line.get("context", {})}
    assert list(stages) == ["question", "query", "search", "answer"]
    assert lines[0][0] < stages["query"] - 0.5, "the first line did not wait for the model"
    contents = [at for at, line in lines if line["delta"].get("content")]
    assert len(contents) == 12
    assert contents[0] > stages["answer"] + 0.5, "the first token waited for the upstream's"
    assert contents[-1] - contents[0] > 0.5 * 11 / 10, "tokens arrive spread out as generated, not in one burst"
    assert lines[-1][1]["finishReason"] == "stop"


async def test_a_client_disconnect_reaches_the_upstream(worker: Worker, local_stack: LocalStack) -> None:
    cancelled_before = len(local_stack.upstream_stats()["cancelled"])
    payload = question("mushroom? [[upstream ttft=0.2 tps=10 tokens=100]]")
    response, invoked = await worker.call("chat_stream", "POST", "/api/chat/stream", json=payload)
    assert invoked.result.status == worker.host.messages.StatusResult.Success
    contents = 0
    async for raw in response.aiter_lines():
        contents += bool(raw and orjson.loads(raw)["delta"].get("content"))
        if contents == 2:
            break
    await response.aclose()  # what the host's proxy does when its client goes away
    deadline = time.monotonic() + 10
    while len(local_stack.upstream_stats()["cancelled"]) == cancelled_before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(local_stack.upstream_stats()["cancelled"]) == cancelled_before + 1, "the upstream stream was not closed"

"""A stand-in for the Python worker's gRPC front end: the host's messages, handed to azure-functions-runtime.

On Python 3.13+ the Functions host starts the worker's front end (it ships with the host, not on
PyPI) with the host's address and ids. The front end connects to the host's gRPC server, opens
the EventStream, announces itself with StartStream, and passes every request to the
azure_functions_runtime library along with the properties "host" (its address) and "protos" (the
message types); the library does the work: indexing, loading, invoking, and the HTTP server that
streaming responses go through. This module plays that front end and nothing more, so that
tests/test_worker.py can drive the real library the way the host does.

    python -m tests.functions_worker --host 127.0.0.1 --port 5000 --functions-worker-id W \
        --functions-request-id R --protocol <folder with the compiled protocol>
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime
import grpc

from tests.functions_rpc import load_protocol

# The request kinds the library answers, and the field of StreamingMessage its answer goes in.
ANSWERS = {
    "worker_init_request": (runtime.worker_init_request, "worker_init_response"),
    "functions_metadata_request": (runtime.functions_metadata_request, "function_metadata_response"),
    "function_load_request": (runtime.function_load_request, "function_load_response"),
    "invocation_request": (runtime.invocation_request, "invocation_response"),
}
logger = logging.getLogger("functions_worker")


@dataclass(frozen=True)
class Envelope:
    """What the library's handlers read: ``request`` (the StreamingMessage) and ``properties``."""

    request: Any
    properties: dict[str, Any]


async def serve(host: str, port: int, worker_id: str, request_id: str, protocol: Path) -> None:
    messages, service = load_protocol(protocol)
    outbound: asyncio.Queue[Any] = asyncio.Queue()
    start = messages.StartStream(worker_id=worker_id)
    outbound.put_nowait(messages.StreamingMessage(request_id=request_id, start_stream=start))

    async def outgoing() -> AsyncIterator[Any]:
        while True:
            yield await outbound.get()

    async def answer(message: Any, kind: str) -> None:
        handler, field = ANSWERS[kind]
        response = await handler(Envelope(message, {"host": host, "protos": messages}))
        outbound.put_nowait(messages.StreamingMessage(request_id=message.request_id, **{field: response}))

    running: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        async for message in service.FunctionRpcStub(channel).EventStream(outgoing()):
            kind = message.WhichOneof("content")
            if kind == "worker_terminate":
                break
            if kind not in ANSWERS:
                logger.warning("no handler for %s", kind)
                continue
            # Invocations run concurrently: a streamed answer holds its invocation open.
            task = asyncio.create_task(answer(message, kind))
            running.add(task)
            task.add_done_callback(running.discard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--functions-worker-id", required=True)
    parser.add_argument("--functions-request-id", required=True)
    parser.add_argument("--protocol", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(serve(args.host, args.port, args.functions_worker_id, args.functions_request_id, args.protocol))


if __name__ == "__main__":
    main()

"""The CPU of one model call, three ways, against the simulated upstream: where the SDK's cost is.

    python -m benchmarks.sdk_call_cpu     # about 1 minute; JSON in benchmarks/results/sdk-calls-<time>.json

The query rewrite's call (the pipeline's prompt and examples) is made, interleaved round by
round, through ``chat.completions.create`` (what chat/providers/llm.py calls today), through
the SDK's generic ``client.post`` with a raw response decoded by orjson (the same auth,
retries and timeouts, without the request-parameter transform and the response models), and
with a bare aiohttp request (no SDK: the floor). Each is measured back to back (the upstream
answers at once) and after the upstream's 300 ms wait, as in the app (after a wait the process
resumes with colder caches, which costs CPU of its own on a shared machine). This process is
the only client, pinned to the app's core; the upstream runs on the other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import orjson
from openai import AsyncOpenAI, DefaultAioHttpClient

from benchmarks.stack import APP_CORE, HARNESS_CORE, READY_TIMEOUT_SECONDS, detect_pinning
from chat.localstack import Server, free_port
from chat.pipeline import QUERY_MAX_TOKENS
from chat.prompts import QUERY_EXAMPLES, QUERY_PROMPT
from chat.settings import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
QUESTION = "Can you suggest a pizza with mushroom and pineapple?"
Call = Callable[[], Awaitable[str]]


def _calls(client: AsyncOpenAI, session: aiohttp.ClientSession, base: str, wait: float) -> dict[str, Call]:
    directive = f"[[upstream ttft={wait:g} delay={wait:g}]]"
    messages: list[Any] = [
        {"role": "system", "content": QUERY_PROMPT},
        *QUERY_EXAMPLES,
        {"role": "user", "content": f"{QUESTION} {directive}"},
    ]
    body = {"model": "simulated", "messages": messages, "temperature": 0.0, "max_tokens": QUERY_MAX_TOKENS}
    headers = {"Authorization": "Bearer no-key-needed", "Content-Type": "application/json"}

    async def create() -> str:
        response = await client.chat.completions.create(
            model="simulated", messages=messages, temperature=0.0, max_tokens=QUERY_MAX_TOKENS
        )
        return response.choices[0].message.content or ""

    async def post() -> str:
        response = await client.post("/chat/completions", cast_to=httpx2.Response, body=body)
        return str(orjson.loads(response.content)["choices"][0]["message"]["content"])

    async def bare() -> str:
        async with session.post(f"{base}/chat/completions", data=orjson.dumps(body), headers=headers) as response:
            return str(orjson.loads(await response.read())["choices"][0]["message"]["content"])

    return {"SDK chat.completions.create": create, "SDK client.post, raw response": post, "bare aiohttp": bare}


async def measure(base: str, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    client = AsyncOpenAI(base_url=base, api_key="no-key-needed", http_client=DefaultAioHttpClient(), max_retries=2)
    results: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession() as session:
        for wait in (0.0, 0.3):
            calls = _calls(client, session, base, wait)
            times: dict[str, list[float]] = {name: [] for name in calls}
            for call in calls.values():  # warm every path
                for _ in range(3):
                    await call()
            for _ in range(rounds):
                for name, call in calls.items():
                    for _ in range(per_round):
                        started = time.process_time()
                        await call()
                        times[name].append(time.process_time() - started)
            for name, values in times.items():
                results[f"{name}, upstream wait {wait * 1000:.0f} ms"] = {
                    "median_ms": statistics.median(values) * 1000,
                    "min_ms": min(values) * 1000,
                    "calls": len(values),
                }
    await client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=12)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    pinning = detect_pinning()
    port = free_port()
    command = [*pinning.prefix(HARNESS_CORE), sys.executable, "-m", "benchmarks.upstream", "--port", str(port)]
    with tempfile.TemporaryDirectory(prefix="bench-sdk-") as workdir:
        upstream = Server("upstream", command, f"http://127.0.0.1:{port}/v1/models", log_dir=Path(workdir))
        upstream.start(READY_TIMEOUT_SECONDS)
        try:
            if pinning.active:
                os.sched_setaffinity(0, {APP_CORE})
            load = os.getloadavg()[0]
            results = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.rounds, args.per_round))
        finally:
            upstream.stop()
    for name, figures in results.items():
        print(f"{name:<55} median {figures['median_ms']:.2f} ms, min {figures['min_ms']:.2f} ms")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"sdk-calls-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    report = {"load_1m_start": load, "load_1m_end": os.getloadavg()[0], "pinning": pinning.note, "calls": results}
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real HTTP client of the streaming route that timestamps each NDJSON line as it arrives."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class StreamRecord:
    status: int
    headers: httpx.Headers
    started: float
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [line for _, line in self.lines]

    def stages(self) -> list[str]:
        return [line["context"]["stage"]["name"] for line in self.objects if "stage" in line.get("context", {})]

    def content(self) -> str:
        return "".join(line["delta"].get("content", "") for line in self.objects)

    def content_times(self) -> list[float]:
        return [at - self.started for at, line in self.lines if line["delta"].get("content")]

    def time_of_stage(self, name: str) -> float:
        return next(
            at - self.started for at, line in self.lines if line.get("context", {}).get("stage", {}).get("name") == name
        )

    @property
    def error(self) -> dict[str, Any] | None:
        last = self.objects[-1] if self.lines else {}
        return last.get("error")


def question(text: str = "Which pizza has mushroom and pineapple?", **overrides: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "context": {"overrides": overrides}}


async def stream(
    base_url: str, payload: dict[str, Any], *, timeout: float = 30.0, stop_after_content: int | None = None
) -> StreamRecord:
    """POST ``payload`` to /api/chat/stream; with ``stop_after_content`` the client hangs up mid-answer."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        started = time.perf_counter()
        async with http.stream("POST", f"{base_url}/api/chat/stream", json=payload) as response:
            record = StreamRecord(response.status_code, response.headers, started)
            contents = 0
            async for raw in response.aiter_lines():
                if not raw:
                    continue
                line = orjson.loads(raw)
                record.lines.append((time.perf_counter(), line))
                contents += bool(line["delta"].get("content"))
                if stop_after_content is not None and contents >= stop_after_content:
                    break
    return record

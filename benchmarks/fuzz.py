"""Send thousands of bad (and some good) request bodies to the local host; no answer may be a 5xx.

    python -m benchmarks.fuzz --count 5000 [--seed 7] [--concurrency 8]

Bodies come from a seeded generator, so a run is repeatable: random JSON, valid requests with
one field given a wrong type or value, huge strings and bodies (with and without a declared
length), deep nesting (also where a value is echoed back, like sessionState), invalid UTF-8,
garbage and truncated JSON, odd numbers, and wrong or odd content types. Both chat routes are
hit, over loopback, with the simulated upstream answering quickly, so valid bodies get answers.

Every response must be 2xx, or 4xx with {"error": {"code": str, "message": str}} that neither
echoes a planted secret nor shows a trace; a 200 stream must end with its final line (an
error line with a known failure is tallied, ``internal_error`` is a violation). Any 5xx,
hang (per-request timeout), broken connection or other status is a violation: the run prints
them and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.stack import Stack, detect_pinning, pin_this_process
from chat.localstack import StartupError

ROUTES = ("/api/chat", "/api/chat/stream")
SECRET = "sk-fuzz-secret-do-not-echo-0123456789"
# The host's defaults (chat/settings.py LimitSettings).
MAX_BODY_BYTES = 262_144
MAX_MESSAGE_CHARS = 16_000
# The upstream answers at once, so the valid bodies among the bad ones finish quickly.
UPSTREAM_ARGS = ["--ttft", "0", "--tps", "5000", "--tokens", "8"]
TEXT_ALPHABET = "abc xyz ?!.,'\"\\/é中文🍕\u0000\u200f\t\n"


@dataclass(frozen=True)
class Case:
    category: str
    route: str
    body: bytes
    content_type: str | None = "application/json"
    chunked: bool = False  # sent without Content-Length, so the host must count bytes itself

    def describe(self) -> str:
        shown = self.body[:160]
        more = f"... ({len(self.body)} bytes)" if len(self.body) > 160 else ""
        kind = f"{self.content_type!r}{', chunked' if self.chunked else ''}"
        return f"[{self.category}] POST {self.route} {kind}: {shown!r}{more}"


class Generator:
    """Request bodies from one seeded random source; each category is a method returning a Case."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        categories: list[tuple[Callable[[], Case], int]] = [
            (self.random_json, 10),
            (self.wrong_field, 25),
            (self.valid, 8),
            (self.huge, 6),
            (self.deep, 8),
            (self.invalid_utf8, 8),
            (self.garbage, 8),
            (self.odd_numbers, 5),
            (self.odd_strings, 8),
            (self.content_type, 10),
        ]
        self.makers = [maker for maker, _ in categories]
        self.weights = [weight for _, weight in categories]

    def case(self) -> Case:
        maker: Callable[[], Case] = self.random.choices(self.makers, self.weights)[0]
        return maker()

    # --- building blocks ---

    def route(self) -> str:
        return self.random.choice(ROUTES)

    def text(self, low: int = 0, high: int = 40) -> str:
        return "".join(self.random.choices(TEXT_ALPHABET, k=self.random.randint(low, high)))

    def scalar(self) -> Any:
        return self.random.choice(
            [None, True, False, 0, -1, 2**63, -(2**63), 3.5, -1e300, "", SECRET, self.text(), self.random.random()]
        )

    def value(self, depth: int = 0) -> Any:
        """Any JSON value, nested a few levels."""
        roll = self.random.random()
        if depth >= 4 or roll < 0.5:
            return self.scalar()
        if roll < 0.75:
            return [self.value(depth + 1) for _ in range(self.random.randint(0, 4))]
        keys = ["messages", "context", "sessionState", "role", "content", "overrides", SECRET, self.text(1, 8)]
        return {self.random.choice(keys): self.value(depth + 1) for _ in range(self.random.randint(0, 4))}

    def valid_body(self) -> dict[str, Any]:
        history = [
            {"role": self.random.choice(["user", "assistant"]), "content": self.text(1, 30) or "hi"}
            for _ in range(self.random.randint(0, 4))
        ]
        overrides = {
            "top": self.random.randint(1, 20),
            "retrievalMode": self.random.choice(["hybrid", "text", "vectors"]),
            "temperature": round(self.random.uniform(0, 2), 2),
            "suggestFollowupQuestions": self.random.random() < 0.3,
        }
        overrides = {key: value for key, value in overrides.items() if self.random.random() < 0.6}
        body: dict[str, Any] = {"messages": [*history, {"role": "user", "content": "Which pizza has mushroom?"}]}
        if self.random.random() < 0.7:
            body["context"] = {"overrides": overrides}
        if self.random.random() < 0.5:
            body["sessionState"] = self.value(2)
        if self.random.random() < 0.2:
            body[self.text(1, 6)] = self.value(2)  # unknown keys are ignored, not refused
        return body

    def json_case(self, category: str, body: Any) -> Case:
        return Case(category, self.route(), orjson.dumps(body))

    # --- categories ---

    def random_json(self) -> Case:
        return self.json_case("random-json", self.value())

    def wrong_field(self) -> Case:
        """A valid body with one field replaced by a random value (or removed)."""
        body = self.valid_body()
        target = self.random.choice(["messages", "message", "role", "content", "context", "overrides", "option"])
        replacement = self.value(1)
        last = body["messages"][-1]
        if target == "messages":
            body["messages"] = replacement
        elif target == "message":
            body["messages"][self.random.randrange(len(body["messages"]))] = replacement
        elif target in ("role", "content"):
            if self.random.random() < 0.2:
                last.pop(target)
            else:
                last[target] = (
                    self.random.choice([replacement, "system", "tool", ""]) if target == "role" else replacement
                )
        elif target == "context":
            body["context"] = replacement
        elif target == "overrides":
            body["context"] = {"overrides": replacement}
        else:
            name = self.random.choice(
                ["top", "retrievalMode", "temperature", "suggestFollowupQuestions", "semanticRanker"]
            )
            odd = self.random.choice([replacement, -1, 0, 21, 1e9, 2.5, -0.1, "3", "many", SECRET])
            body["context"] = {"overrides": {name: odd}}
        return self.json_case("wrong-field", body)

    def valid(self) -> Case:
        return self.json_case("valid", self.valid_body())

    def huge(self) -> Case:
        body = self.valid_body()
        kind = self.random.choice(["long-message", "huge-body", "huge-body-chunked", "many-messages"])
        if kind == "long-message":
            body["messages"][-1]["content"] = "x" * self.random.randint(MAX_MESSAGE_CHARS - 5, MAX_MESSAGE_CHARS + 5)
        elif kind == "many-messages":
            body["messages"] = [{"role": "user", "content": "hi"}] * self.random.randint(49, 400)
        else:
            body["sessionState"] = "y" * self.random.randint(MAX_BODY_BYTES - 200, MAX_BODY_BYTES * 3)
        return Case(f"huge:{kind}", self.route(), orjson.dumps(body), chunked=kind == "huge-body-chunked")

    def deep(self) -> Case:
        """Nesting around orjson's limits: 1024 levels to parse, 254 to encode an echoed sessionState."""
        depth = self.random.choice([50, 253, 254, 255, 300, 1000, 1023, 1024, 1025, 5000, 100_000])
        where = self.random.choice(["whole", "sessionState", "content", "overrides"])
        opening, closing = (b"[", b"]") if self.random.random() < 0.5 else (b'{"a":', b"}")
        nested = opening * depth + b"1" + closing * depth
        if where == "whole":
            return Case("deep:whole", self.route(), nested)
        shell = self.valid_body()
        shell.pop("sessionState", None)
        marker = "__NESTED__"
        if where == "sessionState":
            shell["sessionState"] = marker
        elif where == "content":
            shell["messages"][-1]["content"] = marker
        else:
            shell["context"] = {"overrides": marker}
        return Case(f"deep:{where}", self.route(), orjson.dumps(shell).replace(b'"__NESTED__"', nested))

    def invalid_utf8(self) -> Case:
        body = orjson.dumps(self.valid_body())
        bad = self.random.choice([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        at = body.index(b"Which")
        return Case("invalid-utf8", self.route(), body[:at] + bad + body[at:])

    def garbage(self) -> Case:
        kind = self.random.choice(["bytes", "truncated", "empty", "trailing", "single-quotes"])
        body = orjson.dumps(self.valid_body())
        data = {
            "bytes": self.random.randbytes(self.random.randint(1, 300)),
            "truncated": body[: self.random.randint(0, len(body) - 1)],
            "empty": b"",
            "trailing": body + b" {}",
            "single-quotes": body.replace(b'"', b"'"),
        }[kind]
        return Case(f"garbage:{kind}", self.route(), data)

    def odd_numbers(self) -> Case:
        number = self.random.choice(
            [b"1e400", b"-1e400", b"NaN", b"Infinity", b"123456789012345678901234567890", b"-0", b"0x10"]
        )
        body = b'{"messages":[{"role":"user","content":"hi"}],"context":{"overrides":{"top":' + number + b"}}}"
        return Case("odd-number", self.route(), body)

    def odd_strings(self) -> Case:
        """Strings that are valid JSON but awkward: escaped lone surrogates, NUL, control and RTL characters."""
        text = self.random.choice(
            ["\\ud800", "\\udfff x", "\\u0000", "a\\u0000b", "\\u202e\\u200f", "\\ufeff", "\\t\\n"]
        )
        field = self.random.choice(["content", "role"])
        body = '{"messages":[{"role":"user","content":"hi ' + (text if field == "content" else "") + '"}]}'
        if field == "role":
            body = '{"messages":[{"role":"' + text + '","content":"hi"}]}'
        return Case(f"odd-string:{field}", self.route(), body.encode())

    def content_type(self) -> Case:
        content_type = self.random.choice(
            [
                None,
                "",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
                "application/json; charset=utf-8",
                "APPLICATION/JSON",
                "application/json;charset=latin-1",
                "application/x-ndjson",
                "*/*",
            ]
        )
        return Case(f"content-type:{content_type}", self.route(), orjson.dumps(self.valid_body()), content_type)


@dataclass
class Outcome:
    tried: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


def _error_shape(data: bytes) -> tuple[str | None, str]:
    """The error code of a 4xx body, or None and what is wrong with it."""
    try:
        body = orjson.loads(data)
        error = body["error"]
        code, message = error["code"], error["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None, "not the {'error': {'code', 'message'}} shape"
    if not isinstance(code, str) or not isinstance(message, str):
        return None, "code or message is not a string"
    if SECRET in message or "Traceback" in message:
        return None, "message echoes the request or shows a trace"
    return code, ""


def _stream_end(data: bytes) -> tuple[str | None, str]:
    """The error code a 200 stream ended with ("ok" for a normal end), or None and what is wrong."""
    lines = data.rstrip(b"\n").split(b"\n")
    try:
        last = orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        return None, "the last line is not JSON"
    if "error" in last:
        code = last["error"].get("code", "?")
        return (None, "stream ended with internal_error") if code == "internal_error" else (f"stream:{code}", "")
    return ("ok", "") if "finishReason" in last else (None, "stream ended without its final line")


async def _chunks(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _post(session: aiohttp.ClientSession, base_url: str, case: Case) -> tuple[int, bytes]:
    headers = {"Content-Type": case.content_type} if case.content_type is not None else {}
    skip = ("Content-Type",) if case.content_type is None else ()
    payload: bytes | AsyncIterator[bytes] = _chunks(case.body) if case.chunked else case.body
    async with session.post(base_url + case.route, data=payload, headers=headers, skip_auto_headers=skip) as response:
        return response.status, await response.read()


async def send(session: aiohttp.ClientSession, base_url: str, case: Case, outcome: Outcome) -> None:
    outcome.tried += 1
    outcome.categories[case.category.split(":")[0]] += 1
    try:
        try:
            status, data = await _post(session, base_url, case)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            # A kept-alive connection the host closed after an earlier answer (after a 5xx, say):
            # not this body's fault, so it is sent once more on a new connection.
            outcome.statuses["reconnected"] += 1
            status, data = await _post(session, base_url, case)
    except (aiohttp.ClientError, TimeoutError) as error:
        outcome.statuses["no answer"] += 1
        outcome.violations.append(f"{type(error).__name__} ({error}): {case.describe()}")
        return
    outcome.statuses[str(status)] += 1
    if 400 <= status < 500:
        code, problem = _error_shape(data)
    elif status == 200:
        code, problem = _stream_end(data) if case.route.endswith("/stream") else ("ok", "")
    else:
        code, problem = None, f"status {status}"
    if code is None:
        outcome.violations.append(f"{status} {problem}: {case.describe()} -> {data[:200]!r}")
    else:
        outcome.codes[f"{status} {code}"] += 1


async def fuzz(base_url: str, count: int, seed: int, concurrency: int, request_timeout: float) -> Outcome:
    generator, outcome = Generator(seed), Outcome()
    cases = [generator.case() for _ in range(count)]
    queue: asyncio.Queue[Case] = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            while not queue.empty():
                await send(session, base_url, queue.get_nowait(), outcome)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcome


def print_outcome(outcome: Outcome, seed: int) -> None:
    print(f"tried {outcome.tried} request bodies (seed {seed})")
    for title, tally in (
        ("by category", outcome.categories),
        ("by status", outcome.statuses),
        ("by status and code", outcome.codes),
    ):
        print(f"\n{title}:")
        for key, number in sorted(tally.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {number:6d}  {key}")
    print(f"\nviolations: {len(outcome.violations)}")
    for violation in outcome.violations[:20]:
        print(f"  {violation}")


def _exceptions(log: str) -> list[str]:
    """The exception line that ends each traceback in a log (the first unindented line after it)."""
    found, inside = [], False
    for line in log.splitlines():
        if line.startswith("Traceback"):
            inside = True
        elif inside and line and not line.startswith(" "):
            found.append(line[:200])
            inside = False
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="request bodies to send")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="longest wait for one answer, seconds")
    args = parser.parse_args(argv)
    pinning = detect_pinning()
    pin_this_process(pinning)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir:
        stack = Stack(Path(workdir), pinning, UPSTREAM_ARGS)
        try:
            with stack:
                outcome = asyncio.run(fuzz(stack.app_url, args.count, args.seed, args.concurrency, args.timeout))
                log = stack.log_tail("app", 10_000)
        except StartupError as error:
            print(f"fuzz: {error}\n{stack.log_tail('app')}", file=sys.stderr)
            return 1
    print_outcome(outcome, args.seed)
    traces = log.count("Traceback")
    print(f"tracebacks in the app's log: {traces}")
    for exception in sorted(set(_exceptions(log)))[:10]:
        print(f"  {exception}")
    return 1 if outcome.violations or traces else 0


if __name__ == "__main__":
    sys.exit(main())

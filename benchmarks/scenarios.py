"""The measured scenarios: one run of each, reduced to a flat dict of figures.

A run through an app (the product, or the SDK baseline of benchmarks/baselines/) starts a
fresh process on the app's core, warms it with a few short requests, then reads every
process's and core's CPU time before and after a fixed, bounded workload and samples the
app's RSS throughout. A "direct" run sends the same upstream calls (query rewrite,
embedding, streamed answer) straight to the simulated upstream. Nothing here subtracts a
configured interval: what an app adds is its run minus the direct run of the same repeat
(benchmarks/report.py pairs them).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import orjson

from benchmarks.client import Bodies, LoadClient, Peak, Request, Shape, Timing, closed_loop
from benchmarks.stack import APP_CORE, HARNESS_CORE, AppKind, ProcessProbe, Stack, core_busy_seconds, this_process
from benchmarks.stats import ms, percentile
from chat.settings import PROJECT_ROOT

# Pause between the warm-up and the measured load, so the warm-up's connections settle.
SETTLE_SECONDS = 0.3
QUANTILES = (50, 95, 99)
# Warm-up requests: the whole pipeline, quickly.
WARM_UP = Shape(ttft=0.01, tps=1000, tokens=10)
VICTIM_ADDRESS = "198.51.100.{}"  # TEST-NET-2: one address per well-behaved simulated client
FLOODER_ADDRESS = "203.0.113.66"  # TEST-NET-3: the one client that floods
FLOODER_NICENESS = 19
FLOODER_READY_SECONDS = 30.0


@dataclass(frozen=True)
class FloodLoad:
    """What the flooder does: ``rate`` requests a second in open loop, or (``rate`` 0) closed loops that
    each ask again at once, or ``pause`` seconds after a refusal."""

    rate: float
    pause: float = 0.0

    @property
    def label(self) -> str:
        """How results name it: "300/s", "closed loop, 10 ms pause", "closed loop, no pause"."""
        if self.rate:
            return f"{self.rate:g}/s"
        return f"closed loop, {self.pause * 1000:g} ms pause" if self.pause else "closed loop, no pause"


@dataclass(frozen=True)
class Flood:
    """Issue 10's scenario: ``victims`` well-behaved clients alone, then beside one client (far above 4
    streams and 20 requests a minute) sending ``rates`` requests a second on at most ``connections``
    connections, then in ``connections`` closed loops with each of ``pauses`` after a refusal."""

    victims: int
    connections: int
    rates: tuple[float, ...]
    pauses: tuple[float, ...]

    def loads(self) -> tuple[FloodLoad | None, ...]:
        """The flooder's loads in the order they run: none (victims alone), each rate, each closed loop."""
        return (None, *(FloodLoad(rate) for rate in self.rates), *(FloodLoad(0.0, pause) for pause in self.pauses))


def flood_label(load: FloodLoad | None) -> str:
    return "alone" if load is None else load.label


@dataclass(frozen=True)
class Config:
    points: tuple[int, ...]
    baseline_points: tuple[int, ...]
    repeats: int
    lone_requests: int
    lone: Shape
    sweep: Shape
    embed_delay: float
    rounds: int
    ramp: float
    burst: int
    flood: Flood
    nonstream_workers: int
    timeout: float
    warmup: int

    @property
    def deadline(self) -> float:
        """The bound on one load: generous, so only a stuck or overloaded run reaches it."""
        return self.ramp + self.rounds * self.sweep.duration(self.embed_delay) * 3 + 30


class Meter:
    """CPU seconds used by each probed process and by each core, wall time and the machine's load
    average, between ``__init__`` and ``stop``.

    A core's busy time minus that of the processes placed on it is other work on the shared
    machine: the noise a figure was measured under.
    """

    def __init__(self, probes: dict[str, ProcessProbe]) -> None:
        self._probes = probes
        self._load = os.getloadavg()
        self._before = {name: probe.cpu_seconds() for name, probe in probes.items()}
        self._cores = core_busy_seconds()
        self._started = perf_counter()

    def stop(self) -> dict[str, float]:
        used = {name: probe.cpu_seconds() - self._before[name] for name, probe in self._probes.items()}
        cores = core_busy_seconds()
        for core in (APP_CORE, HARNESS_CORE):
            used[f"core{core}"] = cores.get(core, 0.0) - self._cores.get(core, 0.0)
        load = os.getloadavg()
        return {
            **used,
            "wall": perf_counter() - self._started,
            "load_1m_start": self._load[0],
            "load_1m_end": load[0],
            "load_5m_end": load[1],
        }


def _errors(timings: list[Timing]) -> tuple[int, dict[str, int]]:
    kinds = Counter(timing.error for timing in timings if timing.error is not None)
    return sum(kinds.values()), dict(kinds)


def _quantiles(name: str, values: list[float], quantiles: tuple[int, ...] = QUANTILES) -> dict[str, float]:
    return {f"{name}_p{q}_ms": percentile(values, q) for q in quantiles}


def stream_figures(timings: list[Timing]) -> dict[str, Any]:
    """Latency figures of one load: first line, first and last content, and the gaps between content lines.

    Times run from the request's start as the client saw it; for a direct run, from the start of
    its sequence of upstream calls, so they compare with an app's one to one.
    """
    errors, kinds = _errors(timings)
    gaps = [gap * 1000 for timing in timings for gap in timing.gaps()]
    return {
        "requests": len(timings),
        "errors": errors,
        "error_kinds": kinds,
        "content_lines": sum(len(timing.content) for timing in timings),
        **_quantiles("gap", gaps, (50, 99)),
        **_quantiles("first_line", [ms(t.to_first_line) for t in timings if t.first_line is not None]),
        **_quantiles("first_content", [ms(t.to_first_content) for t in timings if t.content]),
        **_quantiles("last_content", [ms(t.to_last_content) for t in timings if t.content], (50, 99)),
    }


def cpu_figures(used: dict[str, float], tokens: int, requests: int) -> dict[str, float]:
    """CPU per token and per request of each process (every upstream call of a request counted), how
    busy each core was with our processes and with others' (CPU seconds per wall second), and the load."""
    wall = used["wall"]
    app, harness = used.get("app", 0.0), used["client"] + used["upstream"]
    figures = {
        f"{name}_cpu_us_per_token": used[name] / max(tokens, 1) * 1e6
        for name in ("app", "client", "upstream")
        if name in used
    }
    if "app" in used:
        figures["app_cpu_ms_per_request"] = app / max(requests, 1) * 1000
    return {
        **figures,
        "app_core_busy": app / wall,
        "harness_core_busy": harness / wall,
        "other_load_core0": max(used[f"core{APP_CORE}"] - app, 0.0) / wall,
        "other_load_core1": max(used[f"core{HARNESS_CORE}"] - harness - used.get("flooder", 0.0), 0.0) / wall,
        "wall_s": wall,
        "load_1m_start": used["load_1m_start"],
        "load_1m_end": used["load_1m_end"],
        "load_5m_end": used["load_5m_end"],
    }


def memory_figures(idle_kib: int, peak: Peak) -> dict[str, float]:
    """RSS above idle at its peak, per stream open at the peak of open streams (as the client counted them)."""
    return {
        "rss_idle_mib": idle_kib / 1024,
        "rss_peak_mib": peak.rss_kib / 1024,
        "rss_per_stream_kib": (peak.rss_kib - idle_kib) / max(peak.open_requests, 1),
        "peak_open": peak.open_requests,
    }


async def _sequential(request: Request, count: int) -> list[Timing]:
    timings = []
    for number in range(count):
        timing = Timing()
        await request(timing, number)
        timings.append(timing)
    return timings


async def warm_up(client: LoadClient, stack: Stack, count: int) -> None:
    """A few short requests, so first-use costs (imports, connections, caches) stay out of the figures."""
    url, body = f"{stack.app_url}/api/chat/stream", Bodies.for_shape(WARM_UP).chat
    await _sequential(lambda t, _: client.stream(t, url, body, WARM_UP.content_lines), count)


def app_request(stack: Stack, shape: Shape, client: LoadClient) -> Request:
    """One streamed chat request to whatever answers on the app's port, from its own client address."""
    body, url, expected = Bodies.for_shape(shape).chat, f"{stack.app_url}/api/chat/stream", shape.content_lines
    return lambda timing, user: client.stream(timing, url, body, expected, client=VICTIM_ADDRESS.format(user % 250))


def direct_request(stack: Stack, shape: Shape, client: LoadClient) -> Request:
    bodies, expected = Bodies.for_shape(shape), shape.content_lines
    return lambda timing, _: client.direct_sequence(timing, stack.upstream_url, bodies, expected)


# --- 1. A lone request: its first token, and the CPU it costs ---------------------------------------


async def lone_run(stack: Stack, config: Config, kind: AppKind | None) -> dict[str, Any]:
    """``lone_requests`` sequential requests with 1-token answers through a fresh ``kind`` process (None:
    straight at the upstream). The app's CPU per request is then the cost of a request up to and with
    its first token: setup, not streaming."""
    probes = {"upstream": stack.upstream_probe, "client": this_process()}
    async with LoadClient(config.timeout) as client:
        if kind is None:
            request = direct_request(stack, config.lone, client)
            await _sequential(request, 2)
        else:
            probes["app"] = stack.start_app(kind)
            await warm_up(client, stack, config.warmup)
            request = app_request(stack, config.lone, client)
        meter = Meter(probes)
        timings = await _sequential(request, config.lone_requests)
        used = meter.stop()
    figures = stream_figures(timings)
    figures.update(cpu_figures(used, figures["content_lines"], len(timings)))
    return figures


# --- 2. Concurrency: a sweep of steady loads, and a burst arriving at once ----------------------------


async def _loaded_point(
    stack: Stack,
    config: Config,
    workers: int,
    kind: AppKind | None,
    *,
    ramp: float,
    rounds: int,
    fresh: bool,
    shape: Shape,
) -> tuple[list[Timing], Peak, dict[str, float], int]:
    """Run one closed-loop load through a ``kind`` process, fresh or the running one (None: straight at
    the upstream)."""
    probes = {"upstream": stack.upstream_probe, "client": this_process()}
    app_probe = None if kind is None else stack.start_app(kind) if fresh else stack.app_probe
    async with LoadClient(config.timeout) as client:
        if app_probe is not None:
            probes["app"] = app_probe
            await warm_up(client, stack, config.warmup)
            request = app_request(stack, shape, client)
        else:
            request = direct_request(stack, shape, client)
        await asyncio.sleep(SETTLE_SECONDS)
        idle = app_probe.rss_kib() if app_probe is not None else 0
        meter = Meter(probes)
        timings, peak = await closed_loop(
            client, request, workers=workers, rounds=rounds, ramp=ramp, deadline=config.deadline, probe=app_probe
        )
        used = meter.stop()
    return timings, peak, used, idle


async def stream_run(
    stack: Stack,
    config: Config,
    workers: int,
    kind: AppKind | None,
    *,
    burst: bool = False,
    fresh: bool = True,
    shape: Shape | None = None,
) -> dict[str, Any]:
    """``workers`` concurrent users streaming answers: started over ``config.ramp`` with ``config.rounds``
    streams each (a steady load), or with ``burst`` all at once with one stream each. ``fresh=False``
    measures the running app process (a profiler is attached to it); ``shape`` replaces the sweep's
    answers (1-token answers measure a request's setup under load)."""
    ramp, rounds = (0.0, 1) if burst else (config.ramp, config.rounds)
    timings, peak, used, idle = await _loaded_point(
        stack, config, workers, kind, ramp=ramp, rounds=rounds, fresh=fresh, shape=shape or config.sweep
    )
    figures = stream_figures(timings)
    figures.update(cpu_figures(used, figures["content_lines"], len(timings)))
    if kind is not None:
        figures.update(memory_figures(idle, peak))
    figures["offered_tokens_per_s"] = workers * config.sweep.tps
    return figures


# --- 3. One client floods the API (issue 10): do the others notice? ----------------------------------


async def _start_flooder(
    stack: Stack, config: Config, load: FloodLoad
) -> tuple[asyncio.subprocess.Process, ProcessProbe]:
    """benchmarks/flooder.py in a process of its own on the harness core, at the lowest priority (nice 19):
    the simulated upstream and the victims' client go first there, as they would if the flooder were
    another machine. Returns once its first answer came back."""
    flood, shape = config.flood, config.sweep
    command = [sys.executable, "-m", "benchmarks.flooder", "--url", f"{stack.app_url}/api/chat/stream"]
    command += ["--rate", str(load.rate), "--connections", str(flood.connections), "--pause", str(load.pause)]
    command += ["--seconds", str(config.deadline + 60), "--client", FLOODER_ADDRESS]
    command += ["--ttft", str(shape.ttft), "--tps", str(shape.tps), "--tokens", str(shape.tokens)]
    prefix = [*stack.pinning.prefix(HARNESS_CORE), "nice", "-n", str(FLOODER_NICENESS)]
    process = await asyncio.create_subprocess_exec(
        *prefix, *command, stdout=asyncio.subprocess.PIPE, env=stack.environment, cwd=PROJECT_ROOT
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(FLOODER_READY_SECONDS):
            line = await process.stdout.readline()
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        process.kill()
        await process.wait()
        raise RuntimeError(f"the flooder did not start ({load.label}): {line[-300:]!r}")
    return process, ProcessProbe(process.pid)  # taskset and nice exec: the pid is the flooder's own


async def _stop_flooder(process: asyncio.subprocess.Process) -> dict[str, Any]:
    """Stop the flooder (SIGTERM) and read what it sent and got."""
    if process.returncode is None:
        process.terminate()
    async with asyncio.timeout(FLOODER_READY_SECONDS):
        output, _ = await process.communicate()
    lines = output.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the flooder failed ({process.returncode}): {output[-300:]!r}")
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result


async def flood_run(stack: Stack, config: Config, load: FloodLoad | None) -> dict[str, Any]:
    """``config.flood.victims`` clients (one X-Forwarded-For address each) streaming through a fresh app,
    alone (``load`` None) or beside one flooding client doing ``load`` in its own process; the figures are
    the victims' only, plus what the flooder sent and got."""
    probe = stack.start_app("app")
    probes = {"app": probe, "upstream": stack.upstream_probe, "client": this_process()}
    flooder = None
    async with LoadClient(config.timeout) as victims:
        await warm_up(victims, stack, config.warmup)
        if load is not None:
            flooder, probes["flooder"] = await _start_flooder(stack, config, load)
        try:
            # With a flooder: one request's duration, so its admitted streams are under way.
            await asyncio.sleep(config.sweep.duration(config.embed_delay) if flooder else SETTLE_SECONDS)
            meter = Meter(probes)
            timings, _ = await closed_loop(
                victims,
                app_request(stack, config.sweep, victims),
                workers=config.flood.victims,
                rounds=config.rounds,
                ramp=config.ramp,
                deadline=config.deadline,
            )
            used = meter.stop()
        finally:
            flooded = await _stop_flooder(flooder) if flooder else None
    figures = stream_figures(timings)
    figures.update(cpu_figures(used, figures["content_lines"], len(timings)))
    if flooded is not None:
        figures["flooder"] = flooded
        figures["flooder_core_busy"] = used["flooder"] / used["wall"]
    return figures


# --- 4. The non-streaming endpoint ----------------------------------------------------------------


async def whole_run(stack: Stack, config: Config, workers: int) -> dict[str, Any]:
    """``workers`` concurrent POST /api/chat through a fresh app: latency to the full answer, CPU per token."""
    probe = stack.start_app("app")
    body, url = Bodies.for_shape(config.sweep).chat, f"{stack.app_url}/api/chat"
    async with LoadClient(config.timeout) as client:
        await warm_up(client, stack, config.warmup)
        await asyncio.sleep(SETTLE_SECONDS)
        idle = probe.rss_kib()
        meter = Meter({"app": probe, "upstream": stack.upstream_probe, "client": this_process()})

        def request(timing: Timing, user: int) -> Awaitable[None]:
            return client.whole(timing, url, body, b'"finishReason"', client=VICTIM_ADDRESS.format(user % 250))

        timings, peak = await closed_loop(
            client,
            request,
            workers=workers,
            rounds=config.rounds,
            ramp=config.ramp,
            deadline=config.deadline,
            probe=probe,
        )
        used = meter.stop()
    errors, kinds = _errors(timings)
    tokens = (len(timings) - errors) * config.sweep.content_lines
    figures: dict[str, Any] = {
        "requests": len(timings),
        "errors": errors,
        "error_kinds": kinds,
        **_quantiles("answer", [ms(t.to_end) for t in timings if t.error is None], (50, 99)),
    }
    figures.update(cpu_figures(used, tokens, len(timings)))
    figures.update(memory_figures(idle, peak))
    return figures


# --- 5. A request's CPU by stage, and its profile ---------------------------------------------------


async def stages_run(stack: Stack, config: Config) -> dict[str, Any]:
    """Sequential 1-token requests through the instrumented app (benchmarks/request_cpu.py): CPU per stage,
    then as many again under cProfile (its statistics at ``stack.profile_path``)."""
    stack.start_app("stages")
    base = stack.app_url
    async with LoadClient(config.timeout) as client:
        await warm_up(client, stack, config.warmup)
        request = app_request(stack, config.lone, client)
        await client.session.post(f"{base}/_profile", json={"on": True})
        timings = await _sequential(request, config.lone_requests)
        async with client.session.get(f"{base}/_stages") as response:
            figures: dict[str, Any] = await response.json()
        await client.session.post(f"{base}/_profile", json={"on": True, "profile": True})
        await _sequential(request, config.lone_requests)
        await client.session.post(f"{base}/_profile", json={"on": False})
    figures["errors"], _ = _errors(timings)
    return figures

"""The measured scenarios: one run of each point, reduced to a flat dict of figures.

A point's run starts a fresh app process (so idle memory and CPU are a clean baseline),
warms it with a few short requests, then reads the app's, the upstream's and this client's
CPU time before and after a fixed closed-loop workload and samples the app's RSS throughout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from benchmarks.client import Bodies, LoadClient, Peak, Request, Shape, Timing, closed_loop
from benchmarks.stack import APP_CORE, HARNESS_CORE, ProcessProbe, Stack, core_busy_seconds, this_process
from benchmarks.stats import ms, percentile

# Pause between the warm-up and the measured load, so the warm-up's connections settle.
SETTLE_SECONDS = 0.3
QUANTILES = (50, 95, 99)
# Warm-up requests: the whole pipeline, quickly.
WARM_UP = Shape(ttft=0.01, tps=1000, tokens=10)


@dataclass(frozen=True)
class Config:
    points: tuple[int, ...]
    direct_points: tuple[int, ...]
    repeats: int
    lone_requests: int
    lone: Shape
    sweep: Shape
    rounds: int
    ramp: float
    nonstream_workers: int
    timeout: float
    warmup: int

    @property
    def deadline(self) -> float:
        """The bound on one point's load: generous, so only a stuck run reaches it."""
        return self.ramp + self.rounds * self.sweep.duration * 3 + 30


class Meter:
    """CPU seconds used by each probed process and by each core, and wall time, between ``__init__`` and ``stop``.

    A core's busy time minus that of the processes placed on it is other work on the shared
    machine: the noise a figure was measured under.
    """

    def __init__(self, probes: dict[str, ProcessProbe]) -> None:
        self._probes = probes
        self._before = {name: probe.cpu_seconds() for name, probe in probes.items()}
        self._cores = core_busy_seconds()
        self._started = perf_counter()

    def stop(self) -> dict[str, float]:
        used = {name: probe.cpu_seconds() - self._before[name] for name, probe in self._probes.items()}
        cores = core_busy_seconds()
        for core in (APP_CORE, HARNESS_CORE):
            used[f"core{core}"] = cores.get(core, 0.0) - self._cores.get(core, 0.0)
        return {**used, "wall": perf_counter() - self._started}


def _errors(timings: list[Timing]) -> tuple[int, dict[str, int]]:
    kinds = Counter(timing.error for timing in timings if timing.error is not None)
    return sum(kinds.values()), dict(kinds)


def _quantiles(name: str, values: list[float], quantiles: tuple[int, ...] = QUANTILES) -> dict[str, float]:
    return {f"{name}_p{q}_ms": percentile(values, q) for q in quantiles}


def stream_figures(timings: list[Timing], shape: Shape) -> dict[str, Any]:
    """Latency figures of one load: first line, first and last content, and the gaps between content lines."""
    errors, kinds = _errors(timings)
    gaps = [gap * 1000 for timing in timings for gap in timing.gaps()]
    figures: dict[str, Any] = {
        "requests": len(timings),
        "errors": errors,
        "error_kinds": kinds,
        "content_lines": sum(len(timing.content) for timing in timings),
        **_quantiles("gap", gaps, (50, 99)),
        **_quantiles("first_line", [ms(t.to_first_line) for t in timings if t.first_line is not None], (50, 99)),
        **_quantiles("first_content", [ms(t.to_first_content) for t in timings if t.content], (50, 99)),
        **_quantiles("last_content", [ms(t.to_last_content) for t in timings if t.content], (50, 99)),
    }
    interval_ms = shape.interval * 1000
    figures["added_gap_p50_ms"] = figures["gap_p50_ms"] - interval_ms
    figures["added_gap_p99_ms"] = figures["gap_p99_ms"] - interval_ms
    return figures


def cpu_figures(used: dict[str, float], tokens: int) -> dict[str, float]:
    """CPU µs per token of each process, how busy each core was with our processes and with others'
    (CPU seconds per wall second; meaningful when pinned)."""
    wall, app, harness = used["wall"], used.get("app", 0.0), used["client"] + used["upstream"]
    processes = ("app", "client", "upstream")
    per_token = {f"{name}_cpu_us_per_token": used[name] / max(tokens, 1) * 1e6 for name in processes if name in used}
    return {
        **per_token,
        "app_core_busy": app / wall,
        "harness_core_busy": harness / wall,
        "other_load_core0": max(used[f"core{APP_CORE}"] - app, 0.0) / wall,
        "other_load_core1": max(used[f"core{HARNESS_CORE}"] - harness, 0.0) / wall,
        "wall_s": wall,
    }


def memory_figures(idle_kib: int, peak: Peak, open_streams: int) -> dict[str, float]:
    return {
        "rss_idle_mib": idle_kib / 1024,
        "rss_peak_mib": peak.rss_kib / 1024,
        "rss_per_stream_kib": (peak.rss_kib - idle_kib) / open_streams,
        "peak_open": peak.open_requests,
    }


async def _sequential(request: Request, count: int) -> list[Timing]:
    timings = []
    for _ in range(count):
        timing = Timing()
        await request(timing)
        timings.append(timing)
    return timings


async def warm_up(client: LoadClient, stack: Stack, count: int) -> None:
    """A few short requests, so first-use costs (imports, connections, caches) stay out of the figures."""
    url, body = f"{stack.app_url}/api/chat/stream", Bodies.for_shape(WARM_UP).chat
    await _sequential(lambda t: client.stream(t, url, body, WARM_UP.content_lines), count)


# --- 1. A lone request, through the app and straight at the upstream --------------------------------


async def lone_run(stack: Stack, config: Config) -> dict[str, Any]:
    """``lone_requests`` sequential requests through the app, then the same number of direct sequences."""
    shape, bodies = config.lone, Bodies.for_shape(config.lone)
    url = f"{stack.app_url}/api/chat/stream"
    async with LoadClient(config.timeout) as client:
        await warm_up(client, stack, config.warmup)
        await _sequential(lambda t: client.direct_sequence(t, stack.upstream_url, bodies, shape.content_lines), 2)
        meter = Meter({"app": stack.app_probe, "upstream": stack.upstream_probe, "client": this_process()})
        app = await _sequential(lambda t: client.stream(t, url, bodies.chat, shape.content_lines), config.lone_requests)
        used = meter.stop()
        direct = await _sequential(
            lambda t: client.direct_sequence(t, stack.upstream_url, bodies, shape.content_lines), config.lone_requests
        )
    figures = lone_figures(app, direct)
    # A lone request's answer is short, so this is mostly the fixed cost of a request (pipeline, calls, search).
    figures["app_cpu_ms_per_request"] = used["app"] / len(app) * 1000
    figures["lone_tokens_per_request"] = shape.content_lines
    return figures


def lone_figures(app: list[Timing], direct: list[Timing]) -> dict[str, Any]:
    app_errors, app_kinds = _errors(app)
    direct_errors, direct_kinds = _errors(direct)
    ok_direct = [t for t in direct if t.content]
    figures: dict[str, Any] = {
        "app_errors": app_errors,
        "direct_errors": direct_errors,
        "error_kinds": {**app_kinds, **{f"direct:{kind}": n for kind, n in direct_kinds.items()}},
        **_quantiles("app_first_line", [ms(t.to_first_line) for t in app if t.first_line is not None]),
        **_quantiles("app_first_content", [ms(t.to_first_content) for t in app if t.content]),
        **_quantiles("direct_waits", [ms(t.prelude) for t in ok_direct]),
        **_quantiles("direct_stream_first_content", [ms(t.to_first_content) - ms(t.prelude) for t in ok_direct]),
        **_quantiles("direct_first_line", [ms(t.to_first_line) for t in ok_direct]),
        **_quantiles("direct_first_content", [ms(t.to_first_content) for t in ok_direct]),
    }
    for q in QUANTILES:
        figures[f"added_first_content_p{q}_ms"] = (
            figures[f"app_first_content_p{q}_ms"] - figures[f"direct_first_content_p{q}_ms"]
        )
    return figures


# --- 2. Concurrency sweep -------------------------------------------------------------------------


async def _loaded_point(
    stack: Stack,
    config: Config,
    workers: int,
    make_request: Callable[[LoadClient], Request],
    app_probe: ProcessProbe | None,
) -> tuple[list[Timing], Peak, dict[str, float], int]:
    """Run one closed-loop load; the app's CPU and memory are read when ``app_probe`` is given."""
    probes = {"upstream": stack.upstream_probe, "client": this_process()}
    if app_probe is not None:
        probes["app"] = app_probe
    async with LoadClient(config.timeout) as client:
        if app_probe is not None:
            await warm_up(client, stack, config.warmup)
        await asyncio.sleep(SETTLE_SECONDS)
        idle = app_probe.rss_kib() if app_probe is not None else 0
        meter = Meter(probes)
        timings, peak = await closed_loop(
            client,
            make_request(client),
            workers=workers,
            rounds=config.rounds,
            ramp=config.ramp,
            deadline=config.deadline,
            probe=app_probe,
        )
        used = meter.stop()
    return timings, peak, used, idle


async def app_stream_run(stack: Stack, config: Config, workers: int, *, fresh: bool = True) -> dict[str, Any]:
    """``workers`` concurrent streams through a fresh app process (or the running one, for a profiler)."""
    probe = stack.start_app() if fresh else stack.app_probe
    bodies, url = Bodies.for_shape(config.sweep), f"{stack.app_url}/api/chat/stream"
    expected = config.sweep.content_lines

    def make_request(client: LoadClient) -> Request:
        return lambda timing: client.stream(timing, url, bodies.chat, expected)

    timings, peak, used, idle = await _loaded_point(stack, config, workers, make_request, probe)
    figures = stream_figures(timings, config.sweep)
    figures.update(cpu_figures(used, figures["content_lines"]))
    figures.update(memory_figures(idle, peak, workers))
    figures["app_cpu_ms_per_request"] = used["app"] / len(timings) * 1000
    figures["offered_tokens_per_s"] = workers * config.sweep.tps
    return figures


async def direct_stream_run(stack: Stack, config: Config, workers: int) -> dict[str, Any]:
    """The same load straight at the upstream (rewrite, embedding, stream): the harness's own cost and jitter."""
    bodies, expected = Bodies.for_shape(config.sweep), config.sweep.content_lines

    def make_request(client: LoadClient) -> Request:
        return lambda timing: client.direct_sequence(timing, stack.upstream_url, bodies, expected)

    timings, _, used, _ = await _loaded_point(stack, config, workers, make_request, None)
    figures = stream_figures(timings, config.sweep)
    figures.update(cpu_figures(used, figures["content_lines"]))
    return figures


# --- 3. The non-streaming endpoint ----------------------------------------------------------------


async def app_whole_run(stack: Stack, config: Config, workers: int) -> dict[str, Any]:
    """``workers`` concurrent POST /api/chat through a fresh app: latency to the full answer, CPU per token."""
    probe = stack.start_app()
    bodies, url = Bodies.for_shape(config.sweep), f"{stack.app_url}/api/chat"

    def make_request(client: LoadClient) -> Request:
        return lambda timing: client.whole(timing, url, bodies.chat, b'"finishReason"')

    timings, peak, used, idle = await _loaded_point(stack, config, workers, make_request, probe)
    errors, kinds = _errors(timings)
    tokens = (len(timings) - errors) * config.sweep.content_lines
    figures: dict[str, Any] = {
        "requests": len(timings),
        "errors": errors,
        "error_kinds": kinds,
        **_quantiles("answer", [ms(t.to_end) for t in timings if t.error is None], (50, 99)),
    }
    figures.update(cpu_figures(used, tokens))
    figures.update(memory_figures(idle, peak, workers))
    return figures

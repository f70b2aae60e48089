"""Measure the app against the simulated upstream and a typical SDK-based backend, side by side.

    python -m benchmarks.run --publish   # the full run (20-25 minutes on 2 cores), then the
                                         # README and docs/performance.md tables and plot from it
    python -m benchmarks.run             # the full run; JSON in benchmarks/results/
    python -m benchmarks.run --quick     # smoke check of the harness: about 3 minutes, not figures
    python -m benchmarks.run --profile 200   # py-spy on the app at 200 streams: its top frames
    python -m benchmarks.run --scenarios flood --publish   # only some scenarios; publishes only their tables
    python -m benchmarks.report [FILE]   # the tables again from a results file (--write: into the docs)

The app (python -m chat.http.devserver), or the baseline (benchmarks/baselines/sdk_app.py), runs
alone on core 0; the simulated upstream (python -m benchmarks.upstream) and this load client
share core 1 (../shared/benchmarking.md), with the flood scenario's flooder (its own process,
at nice 19, so the other two go first). The upstream takes its time for every call: the
query rewrite and the answer's first token wait ``--ttft``, the embedding ``--embed-delay``.
Every scenario runs, in each repeat, through the app, through the baseline and straight at
the upstream (the same three calls in order), so what each backend adds is its figure minus
the direct one of the same repeat. Repeats interleave, so a noisy minute spreads over all.

1. lone: sequential requests with 1-token answers: first token, CPU per request (setup);
   setup: 1-token answers at 100 concurrent users (setup under load; the base of CPU per extra token);
2. sweep: N users over one request's duration, 2 streams each: gaps, first token, CPU, RSS;
3. burst: N requests arriving at once: first token;
4. flood (issue 10): well-behaved clients alone, then beside one client flooding the API (its own
   process, benchmarks/flooder.py) at fixed request rates and as fast as its connections go;
5. POST /api/chat (non-streaming);
6. stages: a request's CPU before its first token by stage, and its cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from benchmarks import report
from benchmarks.client import Shape
from benchmarks.profiling import Sampler, print_top, pstats_summary, top_frames
from benchmarks.scenarios import Config, Flood, flood_label, flood_run, lone_run, stages_run, stream_run, whole_run
from benchmarks.stack import HARNESS_CORE, AppKind, Pinning, Stack, detect_pinning, pin_this_process
from chat.localstack import StartupError
from chat.settings import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# Issue 13's conditions: the model answers every call after 300 ms, then 60 one-token chunks at
# 20 tokens/s; the embedding takes 50 ms. Lone requests get 1-token answers: only their setup counts.
TTFT, TPS, TOKENS, EMBED_DELAY = 0.3, 20.0, 60, 0.05
FULL = {
    "points": "10,50,100,200,400",
    "baseline_points": "10,50,100,200,400",
    "repeats": 3,
    "requests": 30,
    "rounds": 2,
    "burst": 100,
    "victims": 20,
    "flood_connections": 100,
    "flood_rates": "100,300,1000,3000,6000",
    "nonstream": 50,
    "tokens": TOKENS,
    "warmup": 5,
}
QUICK = {
    "points": "20",
    "baseline_points": "20",
    "repeats": 1,
    "requests": 8,
    "rounds": 1,
    "burst": 20,
    "victims": 5,
    "flood_connections": 20,
    "flood_rates": "100,1000",
    "nonstream": 10,
    "tokens": 10,
    "warmup": 2,
}


SCENARIOS = ("lone", "setup", "sweep", "burst", "flood", "nonstream", "stages")
# The concurrency at which a request's setup is measured with 1-token answers (scenario "setup").
SETUP_STREAMS = 100


def _counts(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(sorted({float(part) for part in text.split(",") if part.strip()}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke check: fewer, shorter points, one repeat")
    parser.add_argument("--publish", action="store_true", help="then write the tables and plot into the docs")
    parser.add_argument("--points", help="concurrent streams per sweep point (default 10,50,100,200,400)")
    parser.add_argument("--baseline-points", help="sweep points also run through the baseline (default: all)")
    parser.add_argument("--repeats", type=int, help="runs of every scenario (default 3)")
    parser.add_argument("--requests", type=int, help="sequential lone requests per run (default 30)")
    parser.add_argument("--rounds", type=int, help="streams each concurrent user opens one after another (default 2)")
    parser.add_argument("--ramp", type=float, help="seconds over which users start (default: one request's duration)")
    parser.add_argument("--burst", type=int, help="requests arriving at once (default 100)")
    parser.add_argument("--victims", type=int, help="flood scenario: well-behaved clients (default 20)")
    parser.add_argument(
        "--flood-connections", type=int, help="flood scenario: the flooder's connections, at most 100 (default 100)"
    )
    parser.add_argument(
        "--flood-rates", help="flood scenario: the flooder's open-loop requests/s (default 100,300,1000,3000,6000)"
    )
    parser.add_argument(
        "--flood-pauses",
        default="0.01,0",
        help="flood scenario: closed loops' wait after a refusal, s, one load each (default 0.01,0)",
    )
    parser.add_argument("--nonstream", type=int, help="concurrent requests to POST /api/chat (default 50)")
    parser.add_argument("--ttft", type=float, default=TTFT, help="upstream latency of every chat call, seconds")
    parser.add_argument("--embed-delay", type=float, default=EMBED_DELAY, help="upstream embedding latency, seconds")
    parser.add_argument("--tps", type=float, default=TPS, help="upstream tokens per second per stream")
    parser.add_argument("--tokens", type=int, help="tokens per answer (default 60)")
    parser.add_argument("--warmup", type=int, help="short requests to a fresh app before it is measured (default 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on one request, seconds")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"which to run, of {','.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--profile", type=int, metavar="STREAMS", help="only profile the app (py-spy) at this load")
    parser.add_argument("--output-dir", type=Path, help="default: benchmarks/results/ (a temporary one with --quick)")
    args = parser.parse_args(argv)
    args.scenarios = tuple(name.strip() for name in args.scenarios.split(",") if name.strip())
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def build_config(args: argparse.Namespace) -> Config:
    sweep = Shape(ttft=args.ttft, tps=args.tps, tokens=args.tokens)
    return Config(
        points=_counts(args.points),
        baseline_points=_counts(args.baseline_points),
        repeats=args.repeats,
        lone_requests=args.requests,
        lone=Shape(ttft=args.ttft, tps=args.tps, tokens=1),
        sweep=sweep,
        embed_delay=args.embed_delay,
        rounds=args.rounds,
        ramp=args.ramp if args.ramp is not None else sweep.duration(args.embed_delay),
        burst=args.burst,
        flood=Flood(
            victims=args.victims,
            connections=args.flood_connections,
            rates=_numbers(args.flood_rates),
            pauses=_numbers(args.flood_pauses)[::-1],  # the gentlest closed loop first
        ),
        nonstream_workers=args.nonstream,
        timeout=args.timeout,
        warmup=args.warmup,
    )


_PROGRESS_KEYS = (
    "first_content_p50_ms",
    "first_content_p99_ms",
    "gap_p99_ms",
    "answer_p50_ms",
    "app_cpu_ms_per_request",
    "app_cpu_us_per_token",
    "rss_per_stream_kib",
    "other_load_core0",
    "load_1m_end",
)
KINDS: tuple[AppKind | None, ...] = ("app", "baseline", None)


def _name(kind: AppKind | None) -> str:
    return kind or "direct"


async def _timed(label: str, run: Awaitable[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    started = time.perf_counter()
    figures = await run
    runs.append(figures)
    shown = [f"{key} {figures[key]:.1f}" for key in _PROGRESS_KEYS if key in figures]
    errors = figures.get("errors", 0)
    print(f"  {label:<28} {', '.join(shown)}, errors {errors} ({time.perf_counter() - started:.1f} s)", flush=True)


async def measure(stack: Stack, config: Config, scenarios: tuple[str, ...]) -> dict[str, Any]:
    """The chosen scenarios, repeat by repeat, each through the app, the baseline and straight at the upstream."""
    # Only the chosen scenarios' keys: the report leaves a scenario without one out, rather than show it empty.
    runs: dict[str, Any] = {name: [] if name == "nonstream" else {} for name in scenarios if name != "stages"}
    setup = min(SETUP_STREAMS, max(config.points))
    for repeat in range(1, config.repeats + 1):
        print(f"repeat {repeat}/{config.repeats}", flush=True)
        for kind in KINDS if "lone" in scenarios else ():
            run = lone_run(stack, config, kind)
            await _timed(f"lone, {_name(kind)}", run, runs["lone"].setdefault(_name(kind), []))
        for kind in ("app", "baseline") if "setup" in scenarios else ():
            run = stream_run(stack, config, setup, kind, shape=config.lone)
            await _timed(f"setup, {setup} streams, {kind}", run, runs["setup"].setdefault(kind, []))
        for n in config.points if "sweep" in scenarios else ():
            for kind in KINDS:
                if kind == "baseline" and n not in config.baseline_points:
                    continue
                sweep = runs["sweep"].setdefault(_name(kind), {}).setdefault(str(n), [])
                await _timed(f"{n} streams, {_name(kind)}", stream_run(stack, config, n, kind), sweep)
        for kind in KINDS if "burst" in scenarios else ():
            run = stream_run(stack, config, config.burst, kind, burst=True)
            await _timed(f"burst of {config.burst}, {_name(kind)}", run, runs["burst"].setdefault(_name(kind), []))
        for load in config.flood.loads() if "flood" in scenarios else ():
            label = flood_label(load)
            run = flood_run(stack, config, load)
            await _timed(f"flood: victims, flooder {label}", run, runs["flood"].setdefault(label, []))
        if "nonstream" in scenarios:
            await _timed("POST /api/chat", whole_run(stack, config, config.nonstream_workers), runs["nonstream"])
    if "stages" in scenarios:
        print("request CPU by stage", flush=True)
        stages = await stages_run(stack, config)
        stages["profile"] = pstats_summary(stack.profile_path, config.lone_requests)
        runs["stages"] = stages
    return runs


async def profile(stack: Stack, config: Config, streams: int, pinning: Pinning, output_dir: Path) -> None:
    """One sweep point with py-spy attached to the app; prints the app's top frames."""
    output = output_dir / f"profile-{streams}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
    stack.start_app("app")
    sampler = Sampler(stack.app_probe.pid, output, pinning.prefix(HARNESS_CORE))
    try:
        figures = await stream_run(stack, config, streams, "app", fresh=False)
    finally:
        sampler.stop()
    shown = ", ".join(f"{key} {figures[key]:.1f}" for key in _PROGRESS_KEYS if key in figures)
    print(f"\nprofiled {streams} streams: errors {figures['errors']}, {shown}")
    print_top(*top_frames(output))
    print(f"\ncollapsed stacks: {output} (e.g. flamegraph.pl or speedscope.app)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    command = "python -m benchmarks.run " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    pinning = detect_pinning()
    pin_this_process(pinning)
    facts = report.machine_facts()
    report.print_machine(facts, pinning.note, command.strip())
    if args.quick:
        print("quick mode: a smoke check of the harness, not figures to publish")
    output_dir = args.output_dir or (Path(tempfile.mkdtemp(prefix="bench-results-")) if args.quick else RESULTS_DIR)
    started = time.perf_counter()
    upstream_args = ["--ttft", str(args.ttft), "--tps", str(args.tps), "--embed-delay", str(args.embed_delay)]
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        stack = Stack(Path(workdir), pinning, upstream_args)
        try:
            with stack:
                if args.profile:
                    output_dir.mkdir(parents=True, exist_ok=True)
                    asyncio.run(profile(stack, config, args.profile, pinning, output_dir))
                    return 0
                runs = asyncio.run(measure(stack, config, args.scenarios))
        except StartupError as error:
            print(f"benchmark: {error}\n{stack.log_tail('app')}\n{stack.log_tail('upstream')}", file=sys.stderr)
            return 1
        except RuntimeError as error:  # the profiler is missing or wrote nothing
            print(f"benchmark: {error}", file=sys.stderr)
            return 1
    results = {
        "command": command.strip(),
        "quick": args.quick,
        "scenarios": list(args.scenarios),
        "partial": set(args.scenarios) != set(SCENARIOS),
        "machine": {**facts, "load_average_at_end": list(report.load_average())},
        "pinning": pinning.note,
        "duration_s": round(time.perf_counter() - started),
        "config": asdict(config),
        "runs": runs,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY))
    print(report.render(results))
    print(f"\nwrote {path} ({path.stat().st_size // 1024} KiB) in {results['duration_s']} s")
    if args.publish:
        report.publish(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

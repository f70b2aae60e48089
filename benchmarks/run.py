"""Measure the app's streaming overhead, concurrency and memory against the simulated upstream.

    python -m benchmarks.run            # the full run: a few minutes
    python -m benchmarks.run --quick    # smoke check: well under a minute
    python -m benchmarks.run --profile 200   # py-spy on the app at 200 streams: its top frames

The app (python -m chat.devserver) runs alone on core 0; the simulated upstream
(python -m benchmarks.upstream) and this load client share core 1 (../shared/benchmarking.md).
Every point is repeated (--repeats, at least 3 for figures) and reported as the median with
the lowest and highest repeat, and the same load is also sent straight to the upstream in
the same run, so that what the app adds is a difference measured side by side:

1. lone request: time to the first NDJSON line and first content line, p50/p95/p99 over
   sequential requests, beside the upstream's own sequence (query rewrite, embedding,
   streamed answer) made directly;
2. concurrency sweep: added p99 gap between content lines, errors, first line and first
   token, app CPU µs per streamed token, RSS per open stream, highest sustained tokens/s;
3. POST /api/chat for comparison.

Results go to benchmarks/results/<timestamp>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson

from benchmarks import report
from benchmarks.client import Shape
from benchmarks.profiling import Sampler, print_top, top_frames
from benchmarks.scenarios import Config, app_stream_run, app_whole_run, direct_stream_run, lone_run
from benchmarks.stack import HARNESS_CORE, Pinning, Stack, detect_pinning, pin_this_process
from benchmarks.stats import Spread, summarise
from chat.localstack import StartupError
from chat.settings import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# The upstream's settings for the sweep and the non-streaming endpoint (issue 7): first token after
# 300 ms, then 60 one-token chunks at 20 tokens/s. Lone requests use a short answer: only its start counts.
SWEEP = Shape(ttft=0.3, tps=20, tokens=60, chunk=1)
LONE = Shape(ttft=0.3, tps=1000, tokens=10, chunk=1)
FULL = {
    "points": "10,50,100,200,300,400",
    "direct_points": "100,400",
    "repeats": 3,
    "requests": 30,
    "rounds": 2,
    "nonstream": 50,
    "tokens": SWEEP.tokens,
    "lone_ttft": LONE.ttft,
    "warmup": 5,
}
QUICK = {
    "points": "50",
    "direct_points": "50",
    "repeats": 3,
    "requests": 10,
    "rounds": 1,
    "nonstream": 10,
    "tokens": 10,
    "lone_ttft": 0.05,
    "warmup": 2,
}


def _counts(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke check: fewer, shorter points")
    parser.add_argument("--points", help="concurrent streams per sweep point (default 10,50,100,200,300,400)")
    parser.add_argument("--direct-points", help="sweep points also sent straight to the upstream (default 100,400)")
    parser.add_argument("--repeats", type=int, help="runs of every point (default 3)")
    parser.add_argument("--requests", type=int, help="sequential lone requests per repeat (default 30)")
    parser.add_argument("--rounds", type=int, help="streams each concurrent user opens one after another (default 2)")
    parser.add_argument("--ramp", type=float, help="seconds over which users start (default: one answer's duration)")
    parser.add_argument("--nonstream", type=int, help="concurrent requests to POST /api/chat (default 50)")
    parser.add_argument("--ttft", type=float, default=SWEEP.ttft, help="sweep: upstream's first token, seconds")
    parser.add_argument("--tps", type=float, default=SWEEP.tps, help="sweep: upstream tokens per second per stream")
    parser.add_argument("--tokens", type=int, help="sweep: tokens per answer (default 60)")
    parser.add_argument("--chunk", type=int, default=SWEEP.chunk, help="sweep: tokens per upstream chunk")
    parser.add_argument("--lone-ttft", type=float, help="lone requests: upstream's first token, seconds (default 0.3)")
    parser.add_argument("--warmup", type=int, help="short requests to a fresh app before it is measured (default 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on one request, seconds")
    parser.add_argument("--profile", type=int, metavar="STREAMS", help="only profile the app (py-spy) at this load")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def build_config(args: argparse.Namespace) -> Config:
    sweep = Shape(ttft=args.ttft, tps=args.tps, tokens=args.tokens, chunk=args.chunk)
    lone = replace(LONE, ttft=args.lone_ttft)
    return Config(
        points=_counts(args.points),
        direct_points=_counts(args.direct_points),
        repeats=args.repeats,
        lone_requests=args.requests,
        lone=lone,
        sweep=sweep,
        rounds=args.rounds,
        ramp=args.ramp if args.ramp is not None else sweep.duration,
        nonstream_workers=args.nonstream,
        timeout=args.timeout,
        warmup=args.warmup,
    )


Runs = dict[str, list[dict[str, Any]]]


async def _timed(label: str, run: Awaitable[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    started = time.perf_counter()
    figures = await run
    runs.append(figures)
    shown = [f"{key} {figures[key]:.1f}" for key in _PROGRESS_KEYS if key in figures]
    errors = figures.get("errors", figures.get("app_errors", 0))
    print(f"  {label:<26} {', '.join(shown)}, errors {errors} ({time.perf_counter() - started:.1f} s)", flush=True)


_PROGRESS_KEYS = (
    "app_first_line_p50_ms",
    "added_first_content_p50_ms",
    "added_gap_p99_ms",
    "first_content_p50_ms",
    "answer_p50_ms",
    "app_cpu_us_per_token",
    "client_cpu_us_per_token",
    "rss_per_stream_kib",
    "harness_core_busy",
    "other_load_core0",
    "other_load_core1",
)


async def measure(stack: Stack, config: Config) -> Runs:
    """Every scenario, repeat by repeat: repeats interleave, so a noisy minute spreads over all points."""
    runs: Runs = {}
    whole = config.nonstream_workers
    for repeat in range(1, config.repeats + 1):
        print(f"repeat {repeat}/{config.repeats}", flush=True)
        await _timed("lone requests", lone_run(stack, config), runs.setdefault("lone", []))
        for n in config.points:
            await _timed(f"app, {n} streams", app_stream_run(stack, config, n), runs.setdefault(f"app:{n}", []))
        for n in config.direct_points:
            run = direct_stream_run(stack, config, n)
            await _timed(f"upstream direct, {n} streams", run, runs.setdefault(f"direct:{n}", []))
        await _timed(
            f"POST /api/chat, {whole}", app_whole_run(stack, config, whole), runs.setdefault(f"whole:{whole}", [])
        )
    return runs


def summaries(runs: Runs, prefix: str) -> dict[int, dict[str, Spread]]:
    """The summary of each point whose key starts with ``prefix``, by concurrency, in ascending order."""
    points = {int(key.split(":")[1]): summarise(value) for key, value in runs.items() if key.startswith(prefix)}
    return dict(sorted(points.items()))


def present(runs: Runs, config: Config) -> dict[str, Any]:
    lone = summarise(runs["lone"])
    app, direct = summaries(runs, "app:"), summaries(runs, "direct:")
    whole = summaries(runs, "whole:")[config.nonstream_workers]
    report.print_lone(lone, config.lone_requests, config.repeats)
    report.print_sweep(app, direct, config.sweep.tps)
    report.print_nonstream(whole, config.nonstream_workers, app.get(config.nonstream_workers))
    headline = report.headline(app, config.sweep.tps)
    report.print_headline(headline)

    def spreads(table: dict[str, Spread]) -> dict[str, dict[str, float]]:
        return {key: spread.as_dict() for key, spread in table.items()}

    return {
        "headline": headline,
        "lone": {"summary": spreads(lone), "runs": runs["lone"]},
        "sweep": {
            "app": {n: {"summary": spreads(s), "runs": runs[f"app:{n}"]} for n, s in app.items()},
            "direct": {n: {"summary": spreads(s), "runs": runs[f"direct:{n}"]} for n, s in direct.items()},
        },
        "nonstream": {"summary": spreads(whole), "runs": runs[f"whole:{config.nonstream_workers}"]},
        "_plot": (app, direct),
    }


def write_results(results: dict[str, Any], output_dir: Path, title: str) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path, png_path = output_dir / f"{stamp}.json", output_dir / f"{stamp}.png"
    app, direct = results.pop("_plot")
    report.plot(app, direct, png_path, title)
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return json_path, png_path


async def profile(stack: Stack, config: Config, streams: int, pinning: Pinning, output_dir: Path) -> None:
    """One sweep point with py-spy attached to the app; prints the app's top frames."""
    output = output_dir / f"profile-{streams}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
    sampler = Sampler(stack.app_probe.pid, output, pinning.prefix(HARNESS_CORE))
    try:
        figures = await app_stream_run(stack, config, streams, fresh=False)
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
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        stack = Stack(Path(workdir), pinning)
        try:
            with stack:
                if args.profile:
                    args.output_dir.mkdir(parents=True, exist_ok=True)
                    asyncio.run(profile(stack, config, args.profile, pinning, args.output_dir))
                    return 0
                runs = asyncio.run(measure(stack, config))
        except StartupError as error:
            print(f"benchmark: {error}\n{stack.log_tail('app')}\n{stack.log_tail('upstream')}", file=sys.stderr)
            return 1
        except RuntimeError as error:  # the profiler is missing or wrote nothing
            print(f"benchmark: {error}", file=sys.stderr)
            return 1
    results = present(runs, config)
    results = {
        "command": command.strip(),
        "machine": facts,
        "pinning": pinning.note,
        "config": asdict(config),
        **results,
    }
    title = f"{facts['cpu_model']}, {pinning.note}; {config.sweep.directive}"
    json_path, png_path = write_results(results, args.output_dir, title)
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a run prints and writes: machine facts, one table per scenario, the JSON file and the plot."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.stats import Spread
from chat.settings import PROJECT_ROOT

PACKAGES = (
    "openai",
    "uvicorn",
    "httptools",
    "uvloop",
    "aiohttp",
    "httpx",
    "orjson",
    "starlette",
    "pydantic",
    "azurefunctions-extensions-http-fastapi",
)
GAP_BUDGET_MS = 50.0
TARGET_CPU_US_PER_TOKEN = 150.0
TARGET_RSS_PER_STREAM_KIB = 64.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine_facts() -> dict[str, Any]:
    with open("/proc/loadavg", encoding="utf-8") as loadavg:
        load = loadavg.read().split()[:3]
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {package: _version(package) for package in PACKAGES},
        "load_average_at_start": [float(value) for value in load],
        "git_commit": _git("rev-parse", "--short", "HEAD") or f"not a git checkout: {PROJECT_ROOT}",
        # The app's code as measured: uncommitted changes in it are listed, since figures depend on them.
        "uncommitted_app_changes": _git("status", "--short", "--", "chat", "function_app.py").splitlines(),
    }


def print_machine(facts: dict[str, Any], pinning_note: str, command: str) -> None:
    packages = ", ".join(f"{name} {version}" for name, version in facts["packages"].items())
    print(f"command : {command}")
    print(f"machine : {facts['cpu_model']}, {facts['cores']} cores, Linux {facts['kernel']}, Python {facts['python']}")
    print(f"packages: {packages}")
    print(f"load avg: {' '.join(map(str, facts['load_average_at_start']))} (at start; the machine is shared)")
    print(f"code    : {facts['git_commit']}, uncommitted app changes: {len(facts['uncommitted_app_changes'])} files")
    print(f"pinning : {pinning_note}")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], note: str = "") -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    if note:
        print(note)
    print("  ".join(str(cell).rjust(width) for cell, width in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))


def _cell(summary: dict[str, Spread], key: str, digits: int = 1) -> str:
    return summary[key].show(digits) if key in summary else "-"


def print_lone(summary: dict[str, Spread], requests: int, repeats: int) -> None:
    rows = []
    labels = (
        ("app: first NDJSON line", "app_first_line"),
        ("app: first content line", "app_first_content"),
        ("upstream direct: rewrite + embedding waits", "direct_waits"),
        ("upstream direct: stream call to first chunk", "direct_stream_first_content"),
        ("upstream direct: whole sequence to first content", "direct_first_content"),
        ("added by the app to the first content line", "added_first_content"),
    )
    for label, key in labels:
        rows.append([label, *(_cell(summary, f"{key}_p{q}_ms") for q in (50, 95, 99))])
    note = f"{requests} sequential requests per repeat, {repeats} repeats; ms, median [min..max] over repeats"
    table("1. Lone request: time to first line and first token", ["", "p50", "p95", "p99"], rows, note)
    tokens = summary["lone_tokens_per_request"].median
    print(f"app CPU per lone request ({tokens:.0f} tokens): {_cell(summary, 'app_cpu_ms_per_request', 2)} ms")


def print_sweep(app: dict[int, dict[str, Spread]], direct: dict[int, dict[str, Spread]], tps: float) -> None:
    note = "median [min..max] over repeats; gaps and times in ms; added gap = client gap - upstream interval"
    latency = [
        [
            str(n),
            _cell(s, "errors", 0),
            _cell(s, "added_gap_p99_ms"),
            _cell(s, "first_line_p50_ms"),
            _cell(s, "first_line_p99_ms"),
            _cell(s, "first_content_p50_ms", 0),
            _cell(s, "first_content_p99_ms", 0),
        ]
        for n, s in app.items()
    ]
    header = ["streams", "errors", "added p99 gap", "1st line p50", "1st line p99", "1st token p50", "1st token p99"]
    table(f"2a. Concurrency sweep through the app ({tps:g} tokens/s per stream)", header, latency, note)
    resources = [
        [
            str(n),
            f"{n * tps:,.0f}",
            _cell(s, "app_cpu_us_per_token", 0),
            _cell(s, "app_cpu_ms_per_request"),
            _cell(s, "app_core_busy", 2),
            _cell(s, "rss_peak_mib"),
            _cell(s, "rss_per_stream_kib"),
            _cell(s, "harness_core_busy", 2),
            _cell(s, "other_load_core0", 2),
        ]
        for n, s in app.items()
    ]
    header = ["streams", "tokens/s", "app CPU us/token", "ms/request", "app core busy", "RSS peak MiB", "KiB/stream"]
    header.append("core-1 busy")
    note = "core-1 busy: upstream + load client; other load: CPU/s of other processes on core 0 (noise)"
    table("2b. Concurrency sweep: app CPU and memory", [*header, "other load"], resources, note)
    baseline = [
        [
            str(n),
            _cell(s, "errors", 0),
            _cell(s, "added_gap_p99_ms"),
            _cell(s, "first_content_p50_ms", 0),
            _cell(s, "first_content_p99_ms", 0),
            _cell(s, "client_cpu_us_per_token", 0),
            _cell(s, "upstream_cpu_us_per_token", 0),
            _cell(s, "harness_core_busy", 2),
            _cell(s, "other_load_core1", 2),
        ]
        for n, s in direct.items()
    ]
    header = [
        "streams",
        "errors",
        "added p99 gap",
        "1st token p50",
        "1st token p99",
        "client us/tok",
        "upstream us/tok",
    ]
    header = [*header, "core-1 busy", "other load"]
    note = "median [min..max] over repeats; ms; other load: CPU/s of other processes on core 1 (noise)"
    table("2c. Same load straight at the upstream (harness baseline)", header, baseline, note)


def print_nonstream(summary: dict[str, Spread], workers: int, streamed: dict[str, Spread] | None) -> None:
    rows = [
        [
            "POST /api/chat",
            _cell(summary, "errors", 0),
            _cell(summary, "answer_p50_ms", 0),
            _cell(summary, "answer_p99_ms", 0),
            _cell(summary, "app_cpu_us_per_token", 0),
            _cell(summary, "rss_per_stream_kib"),
        ]
    ]
    if streamed:
        rows.append(
            [
                "POST /api/chat/stream (last token)",
                _cell(streamed, "errors", 0),
                _cell(streamed, "last_content_p50_ms", 0),
                _cell(streamed, "last_content_p99_ms", 0),
                _cell(streamed, "app_cpu_us_per_token", 0),
                _cell(streamed, "rss_per_stream_kib"),
            ]
        )
    header = ["", "errors", "full answer p50", "p99", "app CPU us/token", "KiB/request"]
    table(f"3. Non-streaming endpoint, {workers} concurrent requests", header, rows, "ms; median [min..max]")


def headline(app: dict[int, dict[str, Spread]], tps: float) -> dict[str, Any]:
    """The highest offered load whose added p99 gap stays within budget with no errors in any repeat."""
    sustained = [n for n, s in app.items() if s["errors"].high == 0 and s["added_gap_p99_ms"].median <= GAP_BUDGET_MS]
    best = max(sustained, default=0)
    top = max(app) if app else 0
    cpu = app[top]["app_cpu_us_per_token"].median if top else math.nan
    return {
        "gap_budget_ms": GAP_BUDGET_MS,
        "highest_sustained_streams": best,
        "highest_sustained_tokens_per_s_per_core": best * tps,
        "cpu_bound_tokens_per_s_per_core": 1e6 / cpu if cpu and not math.isnan(cpu) else math.nan,
    }


def print_headline(figures: dict[str, Any]) -> None:
    print(
        f"\nHighest sustained load on one core with added p99 gap <= {figures['gap_budget_ms']:g} ms and no errors: "
        f"{figures['highest_sustained_streams']} streams = {figures['highest_sustained_tokens_per_s_per_core']:,.0f}"
        " tokens/s"
    )
    print(
        "CPU-bound ceiling at the largest point (1 s / app CPU per token): "
        f"{figures['cpu_bound_tokens_per_s_per_core']:,.0f} tokens/s per core"
    )


def plot(app: dict[int, dict[str, Spread]], direct: dict[int, dict[str, Spread]], path: Path, title: str) -> None:
    """Four panels against concurrency: added p99 gap, CPU per token, time to first token, RSS per stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    panels = (
        (axes[0][0], [("added_gap_p99_ms", "app")], "added p99 gap between content lines (ms)", GAP_BUDGET_MS),
        (axes[0][1], [("app_cpu_us_per_token", "app")], "app CPU per streamed token (µs)", TARGET_CPU_US_PER_TOKEN),
        (
            axes[1][0],
            [("first_content_p50_ms", "app p50"), ("first_content_p99_ms", "app p99")],
            "time to first token (ms)",
            None,
        ),
        (axes[1][1], [("rss_per_stream_kib", "app")], "RSS per open stream (KiB)", TARGET_RSS_PER_STREAM_KIB),
    )
    for axis, series, label, target in panels:
        for key, name in series:
            _errorbar(axis, app, key, name)
            if key in ("added_gap_p99_ms", "first_content_p50_ms", "first_content_p99_ms") and direct:
                _errorbar(axis, direct, key, f"upstream direct {name.removeprefix('app').strip()}".strip(), "s--")
        if target is not None:
            axis.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _errorbar(axis: Any, points: dict[int, dict[str, Spread]], key: str, name: str, style: str = "o-") -> None:
    xs = [n for n in points if key in points[n]]
    medians = [points[n][key].median for n in xs]
    below = [points[n][key].median - points[n][key].low for n in xs]
    above = [points[n][key].high - points[n][key].median for n in xs]
    axis.errorbar(xs, medians, yerr=[below, above], fmt=style, capsize=3, label=name)

"""Tables and the plot from a results file: what a run prints, and what the README and docs show.

    python -m benchmarks.report                    # the newest full run in benchmarks/results/
    python -m benchmarks.report FILE.json          # that run's tables, as markdown
    python -m benchmarks.report FILE.json --write  # ...written into README.md and docs/performance.md
                                                   # (between <!-- results:NAME --> markers) and the plot

Every figure is the median over the run's repeats with [lowest..highest] beside it. An "added"
figure is, repeat by repeat, a backend's measurement minus the direct measurement of the same
upstream in the same repeat; the median of those differences is shown.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks.stats import Spread
from chat.settings import PROJECT_ROOT, SecuritySettings

PACKAGES = ("openai", "uvicorn", "httptools", "aiohttp", "httpx", "orjson", "starlette", "pydantic")
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
DOCUMENTS = (PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "performance.md")
PLOT = PROJECT_ROOT / "docs" / "performance.png"
# Issue 13's targets.
TARGET_REQUEST_CPU_MS = 3.0
TARGET_TOKEN_CPU_US = 100.0
TARGET_BURST_ADDED_MS = (150.0, 400.0)
TARGET_RSS_PER_STREAM_KIB = 64.0
FLOOD_TOLERANCE = 1.10
BACKENDS = (("app", "this app"), ("baseline", "SDK baseline"))
Run = dict[str, Any]


# --- machine facts --------------------------------------------------------------------------------


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


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_facts() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {package: _version(package) for package in PACKAGES},
        "load_average_at_start": list(load_average()),
        "git_commit": _git("rev-parse", "--short", "HEAD") or f"not a git checkout: {PROJECT_ROOT}",
        # The app's code as measured: uncommitted changes in it are listed, since figures depend on them.
        "uncommitted_app_changes": _git("status", "--short", "--", "chat", "function_app.py").splitlines(),
    }


def print_machine(facts: dict[str, Any], pinning_note: str, command: str) -> None:
    print(f"command : {command}")
    print(f"machine : {_machine_line(facts)}")
    print(f"load avg: {' '.join(f'{value:.2f}' for value in facts['load_average_at_start'])} (at start; shared)")
    print(f"code    : {facts['git_commit']}, uncommitted app changes: {len(facts['uncommitted_app_changes'])} files")
    print(f"pinning : {pinning_note}")


def _machine_line(facts: dict[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in facts["packages"].items())
    head = f"{facts['cpu_model']}, {facts['cores']} cores, Linux {facts['kernel']}, Python {facts['python']}"
    return f"{head}; {packages}"


# --- reducing runs --------------------------------------------------------------------------------


def spread(runs: Sequence[Run], key: str) -> Spread:
    return Spread.of(float(run[key]) for run in runs if key in run)


def added(runs: Sequence[Run], direct: Sequence[Run], key: str) -> Spread:
    """Repeat by repeat, a backend's figure minus the direct one of the same repeat."""
    return Spread.of(float(a[key]) - float(d[key]) for a, d in zip(runs, direct, strict=False))


def _setup_streams(results: dict[str, Any]) -> int:
    """The load of scenario "setup": 100 streams, or the largest sweep point below that."""
    return min(100, max(_sweep(results, "app")))


def ratio(runs: Sequence[Run], alone: Sequence[Run], key: str) -> Spread:
    return Spread.of(float(a[key]) / float(b[key]) for a, b in zip(runs, alone, strict=False) if b[key])


def per_token_marginal(sweep: Sequence[Run], setup: Sequence[Run], tokens: int) -> Spread:
    """CPU µs per extra token: (all-in ms per request - ms per request of 1-token answers at the same load)
    / (tokens - 1), by repeat."""
    pairs = zip(sweep, setup, strict=False)
    return Spread.of(
        (s["app_cpu_ms_per_request"] - one["app_cpu_ms_per_request"]) * 1000 / max(tokens - 1, 1) for s, one in pairs
    )


def _load_range(runs: Sequence[Run]) -> str:
    loads = [run[key] for run in runs for key in ("load_1m_start", "load_1m_end") if key in run]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "-"


def _all_runs(results: dict[str, Any]) -> list[Run]:
    runs = results["runs"]
    every: list[Run] = [run for group in runs["lone"].values() for run in group]
    every += [run for kind in runs["sweep"].values() for group in kind.values() for run in group]
    every += [run for group in runs["burst"].values() for run in group]
    every += [run for group in runs["flood"].values() for run in group]
    return every + list(runs["nonstream"])


# --- markdown -------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _show(value: Spread, digits: int = 1) -> str:
    return value.show(digits)


def _sweep(results: dict[str, Any], kind: str) -> dict[int, list[Run]]:
    return {int(n): runs for n, runs in results["runs"]["sweep"].get(kind, {}).items()}


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def headline(results: dict[str, Any]) -> str:
    """The README's table: the issue's targets against this app and the SDK baseline, measured side by side."""
    runs = results["runs"]
    tokens = results["config"]["sweep"]["tokens"]
    lone, burst = runs["lone"], runs["burst"]
    rows: list[list[str]] = []

    def row(label: str, target: str, figure: Callable[[str], Spread], digits: int = 1, check: float | None = None):
        cells = [label, target]
        for kind, _ in BACKENDS:
            try:
                value = figure(kind)
            except (KeyError, ZeroDivisionError):
                cells.append("-")
                continue
            mark = "" if check is None or kind != "app" else f" ({_verdict(value.median <= check)})"
            cells.append(_show(value, digits) + mark)
        rows.append(cells)

    row(
        "CPU per request before its first token (1-token answers, ms)",
        f"≤ {TARGET_REQUEST_CPU_MS:g}",
        lambda k: spread(lone[k], "app_cpu_ms_per_request"),
        2,
        TARGET_REQUEST_CPU_MS,
    )
    for n in (100, 400):
        if n in _sweep(results, "app"):

            def token_cpu(kind: str, n: int = n) -> Spread:
                return spread(_sweep(results, kind)[n], "app_cpu_us_per_token")

            row(
                f"CPU per streamed token, all-in, {n} streams (µs)",
                f"≤ {TARGET_TOKEN_CPU_US:g}",
                token_cpu,
                0,
                TARGET_TOKEN_CPU_US,
            )
    n_mid = _setup_streams(results)
    setup = results["runs"].get("setup", {})
    row(
        f"CPU per request before its first token, {n_mid} concurrent, 1-token answers (ms)",
        "",
        lambda k: spread(setup[k], "app_cpu_ms_per_request"),
        2,
    )
    row(
        f"CPU per extra token, {n_mid} streams (µs)",
        "",
        lambda k: per_token_marginal(_sweep(results, k)[n_mid], setup[k], tokens),
        0,
    )
    for q, target in zip((50, 99), TARGET_BURST_ADDED_MS, strict=True):

        def burst_added(kind: str, q: int = q) -> Spread:
            return added(burst[kind], burst["direct"], f"first_content_p{q}_ms")

        label = f"added to the first token, {results['config']['burst']} arriving at once, p{q} (ms)"
        row(label, f"≤ {target:g}", burst_added, 0, target)
    row(
        "added to the first token, lone request, p50 (ms)",
        "",
        lambda k: added(lone[k], lone["direct"], "first_content_p50_ms"),
    )
    n_top = max(_sweep(results, "app"))
    row(
        f"added p99 gap between tokens, {n_top} streams (ms)",
        "",
        lambda k: added(_sweep(results, k)[n_top], _sweep(results, "direct")[n_top], "gap_p99_ms"),
    )
    row(
        f"RSS per open stream, {n_top} streams (KiB)",
        f"≤ {TARGET_RSS_PER_STREAM_KIB:g}",
        lambda k: spread(_sweep(results, k)[n_top], "rss_per_stream_kib"),
        0,
        TARGET_RSS_PER_STREAM_KIB,
    )
    header = ["", "target", *(name for _, name in BACKENDS)]
    return _table(header, rows)


def lone_table(results: dict[str, Any]) -> str:
    lone = results["runs"]["lone"]
    rows = []
    for kind, name in (*BACKENDS, ("direct", "upstream direct")):
        if kind not in lone:
            continue
        runs = lone[kind]
        cells = [name, *(_show(spread(runs, f"first_content_p{q}_ms")) for q in (50, 95, 99))]
        if kind == "direct":
            cells += ["", "-"]
        else:
            cells.append(" / ".join(_show(added(runs, lone["direct"], f"first_content_p{q}_ms")) for q in (50, 99)))
            cells.append(_show(spread(runs, "app_cpu_ms_per_request"), 2))
        rows.append([*cells, _load_range(runs)])
    header = ["", "first token p50", "p95", "p99", "added p50 / p99", "CPU ms per request", "load (1 min)"]
    return _table(header, rows)


def sweep_table(results: dict[str, Any]) -> str:
    direct = _sweep(results, "direct")
    tokens = results["config"]["sweep"]["tokens"]
    setup, n_setup = results["runs"].get("setup", {}), _setup_streams(results)
    rows = []
    for kind, name in BACKENDS:
        for n, runs in _sweep(results, kind).items():
            base = direct.get(n, [])
            at_setup = n == n_setup and kind in setup
            marginal = _show(per_token_marginal(runs, setup[kind], tokens), 0) if at_setup else ""
            rows.append(
                [
                    f"{name}, {n}",
                    _show(spread(runs, "errors"), 0),
                    " / ".join(_show(added(runs, base, f"first_content_p{q}_ms"), 0) for q in (50, 99)),
                    _show(added(runs, base, "gap_p99_ms")),
                    _show(spread(runs, "app_cpu_us_per_token"), 0),
                    marginal,
                    _show(spread(runs, "app_cpu_ms_per_request"), 1),
                    _show(spread(runs, "app_core_busy"), 2),
                    _show(spread(runs, "rss_per_stream_kib"), 0),
                    _show(spread(runs, "peak_open"), 0),
                    _load_range(runs),
                ]
            )
    for n, runs in direct.items():
        rows.append(
            [
                f"upstream direct, {n}",
                _show(spread(runs, "errors"), 0),
                " / ".join(_show(spread(runs, f"first_content_p{q}_ms"), 0) for q in (50, 99)),
                _show(spread(runs, "gap_p99_ms")),
                *["-"] * 6,
                _load_range(runs),
            ]
        )
    header = [
        "backend, streams",
        "errors",
        "added 1st token p50 / p99 ms",
        "added p99 gap ms",
        "CPU µs/token all-in",
        "µs/extra token",
        "CPU ms/request",
        "app core busy",
        "KiB/stream",
        "peak open",
        "load",
    ]
    return _table(header, rows) + (
        "\n\nUpstream direct rows: its own first token p50 / p99 and p99 gap (not added). µs/extra token: at "
        f"{n_setup} streams, against the same load with 1-token answers (scenario setup)."
    )


def burst_table(results: dict[str, Any]) -> str:
    burst = results["runs"]["burst"]
    rows = []
    for kind, name in (*BACKENDS, ("direct", "upstream direct")):
        if kind not in burst:
            continue
        runs = burst[kind]
        own = " / ".join(_show(spread(runs, f"first_content_p{q}_ms"), 0) for q in (50, 99))
        extra = (
            "-"
            if kind == "direct"
            else " / ".join(_show(added(runs, burst["direct"], f"first_content_p{q}_ms"), 0) for q in (50, 99))
        )
        cpu = "-" if kind == "direct" else _show(spread(runs, "app_cpu_ms_per_request"), 1)
        rows.append([name, _show(spread(runs, "errors"), 0), own, extra, cpu, _load_range(runs)])
    header = ["", "errors", "first token p50 / p99 ms", "added p50 / p99 ms", "CPU ms/request", "load"]
    return _table(header, rows)


# How the flood table names a flooder outcome that is neither "ok" nor "http-429".
FLOODER_OUTCOMES = {"unfinished": "cut off at the end"}
FLOOD_FIGURES = (
    ("first_content_p50_ms", "first token p50"),
    ("first_content_p99_ms", "first token p99"),
    ("gap_p99_ms", "p99 gap"),
)


def _flood_loads(results: dict[str, Any]) -> tuple[list[Run], dict[str, list[Run]]]:
    """The victims alone, and beside the flooder at each load (by label, in the order they ran)."""
    flood = dict(results["runs"]["flood"])
    alone = flood.pop("alone")
    if not flood or not all("flooder" in run for runs in flood.values() for run in runs):
        raise KeyError("flood")  # no flooded run, or one from before the flooder had its own process
    return alone, flood


def _flood_ratios(alone: Sequence[Run], flooded: Sequence[Run]) -> list[Spread]:
    return [ratio(flooded, alone, key) for key, _ in FLOOD_FIGURES]


CLOSED_LOOP = "closed loop"


def _flood_held(results: dict[str, Any]) -> str | None:
    """The highest open-loop load up to which (it and every lower one) all three ratios stay within
    FLOOD_TOLERANCE; None if the lowest does not."""
    alone, flood = _flood_loads(results)
    highest = None
    for label, runs in flood.items():
        if label.startswith(CLOSED_LOOP):
            continue
        if not all(change.median <= FLOOD_TOLERANCE for change in _flood_ratios(alone, runs)):
            break
        highest = label
    return highest


def _flooder_outcomes(runs: Sequence[Run]) -> Counter[str]:
    """What the flooder's requests got, summed over the repeats."""
    total: Counter[str] = Counter()
    for run in runs:
        total.update(run["flooder"]["outcomes"])
    return total


def _flood_request_cpu(alone: Sequence[Run], flooded: Sequence[Run]) -> Spread:
    """The app's CPU per flooder request (µs): its busy share beside the flooder minus alone, per request sent."""
    pairs = zip(flooded, alone, strict=False)
    return Spread.of(
        (run["app_core_busy"] - base["app_core_busy"]) / run["flooder"]["sent_per_s"] * 1e6 for run, base in pairs
    )


def flood_table(results: dict[str, Any]) -> str:
    """Per flooder load: what it sent and got (all repeats), and the victims' figures as a ratio of alone."""
    alone, flood = _flood_loads(results)
    config = results["config"]["flood"]
    ms_cells = [_show(spread(alone, key), 0) + " ms" for key, _ in FLOOD_FIGURES]
    rows = [["none (victims alone)", "-", "-", "-", *ms_cells, _show(spread(alone, "app_core_busy"), 2), "-", "-"]]
    rows[0] += [_show(spread(alone, "other_load_core0"), 2), _load_range(alone)]
    for label, runs in flood.items():
        outcomes = _flooder_outcomes(runs)
        refused, answered = outcomes.pop("http-429", 0), outcomes.pop("ok", 0)
        others = ", ".join(f"{FLOODER_OUTCOMES.get(name, name)} {n}" for name, n in sorted(outcomes.items()))
        changes = [f"{_show(c, 3)} ({_verdict(c.median <= FLOOD_TOLERANCE)})" for c in _flood_ratios(alone, runs)]
        rows.append(
            [
                label if label.startswith(CLOSED_LOOP) else f"open loop, {label}",
                _show(spread([run["flooder"] for run in runs], "sent_per_s"), 0),
                f"{refused:,}",
                f"{answered}" + (f"; {others}" if others else ""),
                *changes,
                _show(spread(runs, "app_core_busy"), 2),
                _show(_flood_request_cpu(alone, runs), 0),
                _show(spread(runs, "flooder_core_busy"), 2),
                _show(spread(runs, "other_load_core0"), 2),
                _load_range(runs),
            ]
        )
    header = [
        "flooder",
        "sent/s",
        "429 (all repeats)",
        "ok; other",
        *(f"victims' {name}" for _, name in FLOOD_FIGURES),
        "app core busy",
        "app µs per flood request",
        "flooder CPU",
        "others on the app's core",
        "load",
    ]
    rates = ", ".join(f"{rate:g}" for rate in config["rates"])
    pauses = " or ".join(f"{pause * 1000:g} ms" if pause else "at once" for pause in config["pauses"])
    return (
        f"Run `{results['command']}` at commit {results['machine']['git_commit']}; "
        f"{config['victims']} victims; flooder loads: open loop at {rates} requests/s on at most "
        f"{config['connections']} connections, then {config['connections']} closed loops (each asking again "
        f"{pauses} after a refusal). Victims' columns are their figure beside the "
        f"flooder over alone, repeat by repeat ({results['config']['repeats']} repeats, median [min..max]; "
        f"target ≤ {FLOOD_TOLERANCE:.2f}). App µs per flood request: the app's added busy time per request the "
        "flooder sent (at low rates mostly its few admitted answers). Flooder CPU: its process's share of the "
        "harness core. Others on the app's core: that core's busy time not spent by the app (other work on "
        "the shared machine, and kernel work such as loopback TCP not charged to the app).\n\n"
        + _table(header, rows)
        + f"\n\nIn this run {flood_summary(results)}."
    )


def flood_summary(results: dict[str, Any]) -> str:
    """Up to which rate the others do not notice the flood, and what the closed loops do to them."""
    alone, flood = _flood_loads(results)
    highest = _flood_held(results)
    per_minute = SecuritySettings.model_fields["chat_requests_per_minute_per_client"].default  # the app: defaults
    held = (
        f"up to an open-loop flood of {highest} ({float(highest.split('/')[0]) * 60 / per_minute:,.0f}x its "
        f"{per_minute}-a-minute limit) the other clients' median and p99 first token and p99 gap move by at most "
        f"{FLOOD_TOLERANCE - 1:.0%}"
        if highest
        else f"at no measured open-loop rate do the other clients' figures all stay within {FLOOD_TOLERANCE - 1:.0%}"
    )
    closed = []
    for label, runs in flood.items():
        if label.startswith(CLOSED_LOOP):
            p50, p99, gap = (change.median for change in _flood_ratios(alone, runs))
            sent = spread([run["flooder"] for run in runs], "sent_per_s").median
            closed.append(
                f"{label} ({sent:,.0f} requests a second): first token p50 x{p50:.2f}, p99 x{p99:.2f}, "
                f"p99 gap x{gap:.2f}"
            )
    return f"the per-client limits refuse the flooder (429) and {held}; beside the {'; '.join(closed)}"


def nonstream_table(results: dict[str, Any]) -> str:
    runs = results["runs"]["nonstream"]
    rows = [
        [
            "POST /api/chat",
            _show(spread(runs, "errors"), 0),
            " / ".join(_show(spread(runs, f"answer_p{q}_ms"), 0) for q in (50, 99)),
            _show(spread(runs, "app_cpu_us_per_token"), 0),
            _show(spread(runs, "rss_per_stream_kib"), 0),
            _load_range(runs),
        ]
    ]
    return _table(["", "errors", "full answer p50 / p99 ms", "CPU µs/token", "KiB/request", "load"], rows)


STAGE_LABELS = {
    "http": "request in, routing, body read and validation, response start",
    "rewrite": "query rewrite call (SDK request build, transport, response parse)",
    "embedding": "embedding call",
    "search": "local index query (FTS5 + vectors, worker thread)",
    "answer_call": "answer call, up to its first token",
    "other": "the rest: stage events, NDJSON, telemetry, event loop",
}


def stages_table(results: dict[str, Any]) -> str:
    stages = results["runs"]["stages"]
    total = stages["to_first_token_ms"] or 1.0
    rows = [
        [STAGE_LABELS[name], f"{value:.2f}", f"{100 * value / total:.0f}%"]
        for name, value in stages["stages_ms"].items()
    ]
    rows.append(["**before the first token**", f"**{stages['to_first_token_ms']:.2f}**", "100%"])
    rows.append(["whole request (1-token answer, final line, close)", f"{stages['whole_request_ms']:.2f}", ""])
    text = _table(["stage", "CPU ms per request", "share"], rows)
    profile = stages.get("profile")
    if profile:
        libraries = ", ".join(
            f"{name} {100 * share:.0f}%" for name, share in profile["self_share_by_library"].items() if share >= 0.01
        )
        frames = [[f"`{item['frame']}`", f"{100 * item['share']:.0f}%"] for item in profile["top_cumulative"]]
        text += (
            f"\n\nUnder cProfile ({profile['profiled_ms_per_request']:.1f} ms per request with its overhead), "
            f"self time by library: {libraries}.\n\n" + _table(["frame (cumulative)", "share"], frames)
        )
    return text


def machine_text(results: dict[str, Any]) -> str:
    machine = results["machine"]
    loads = [run[key] for run in _all_runs(results) for key in ("load_1m_start", "load_1m_end") if key in run]
    load = f"{min(loads):.1f} to {max(loads):.1f}" if loads else "not recorded"
    config = results["config"]
    sweep = config["sweep"]
    return (
        f"Run `{results['command']}` at commit {machine['git_commit']}, {results['duration_s'] / 60:.0f} minutes: "
        f"{_machine_line(machine)}. {results['pinning']}. "
        f"Machine load average (1 min) during the runs: {load}. Upstream: every chat call answers after "
        f"{sweep['ttft'] * 1000:.0f} ms, the embedding after {config['embed_delay'] * 1000:.0f} ms, then "
        f"{sweep['tokens']} tokens at {sweep['tps']:g} tokens/s. {config['repeats']} repeats; median [min..max]."
    )


def comparison(results: dict[str, Any]) -> str:
    """The README's one sentence on how this app compares with a typical SDK-based backend, from this run."""
    lone = results["runs"]["lone"]
    n = 100 if 100 in _sweep(results, "baseline") else max(_sweep(results, "baseline"))
    app, baseline = _sweep(results, "app")[n], _sweep(results, "baseline")[n]
    burst = results["runs"]["burst"]
    app_first = added(burst["app"], burst["direct"], "first_content_p50_ms").median
    baseline_first = added(burst["baseline"], burst["direct"], "first_content_p50_ms").median
    return (
        f"Measured in the same run, a typical openai-SDK backend (`benchmarks/baselines/sdk_app.py`: pydantic "
        f"chunks from `stream=True`, `model_dump` and `json.dumps` per chunk, same upstream calls) spends "
        f"{spread(baseline, 'app_cpu_us_per_token').median:.0f} µs of CPU per streamed token at {n} streams where "
        f"this app spends {spread(app, 'app_cpu_us_per_token').median:.0f}, and "
        f"{spread(lone['baseline'], 'app_cpu_ms_per_request').median:.1f} ms per request before the first token "
        f"where this app spends {spread(lone['app'], 'app_cpu_ms_per_request').median:.1f}; with "
        f"{results['config']['burst']} questions arriving at once it adds {baseline_first:.0f} ms to the median "
        f"first token where this app adds {app_first:.0f} ms."
    )


# The capacity model's assumptions (docs/performance.md says why each is what it is).
MODEL_TOKENS_PER_S = 60.0  # a stream's speed from Azure OpenAI (gpt-4o-mini class)
ANSWER_TOKENS = 250  # a typical grounded answer
CALLS_SECONDS = 1.5  # query rewrite + embedding + the answer's first token, from Azure OpenAI
TPM_PER_QUESTION = 2_000  # what a question counts against the deployment's tokens per minute
QUESTIONS_PER_USER_MINUTE = 1.0  # an active user asks about one question a minute
CPU_BUDGET = 0.7  # of the one core a Python worker process can use
HEADROOM = 0.6  # the share of that CPU bound the recommended per-instance concurrency takes
INSTANCE_MEMORY_MB = 2048
PLATFORM_DEFAULT_CONCURRENCY = 16
PRICE_PER_GB_S = 0.000026  # Flex Consumption on demand, US list price at the time of writing
PRICE_PER_MILLION_EXECUTIONS = 0.40


def capacity_figures(results: dict[str, Any]) -> dict[str, float]:
    """Streams one instance carries, from the measured CPU per request and per token and memory per stream."""
    n = _setup_streams(results)
    setup_ms = spread(results["runs"]["setup"]["app"], "app_cpu_ms_per_request").median
    tokens = results["config"]["sweep"]["tokens"]
    per_token_us = per_token_marginal(_sweep(results, "app")[n], results["runs"]["setup"]["app"], tokens).median
    top = max(_sweep(results, "app"))
    rss_per_stream = spread(_sweep(results, "app")[top], "rss_per_stream_kib").median
    idle_mib = spread(_sweep(results, "app")[top], "rss_idle_mib").median
    duration = CALLS_SECONDS + ANSWER_TOKENS / MODEL_TOKENS_PER_S
    cpu_ms_per_stream_second = (setup_ms + ANSWER_TOKENS * per_token_us / 1000) / duration
    return {
        "setup_ms": setup_ms,
        "per_token_us": per_token_us,
        "duration_s": duration,
        "cpu_ms_per_stream_second": cpu_ms_per_stream_second,
        "streams_by_cpu": CPU_BUDGET * 1000 / cpu_ms_per_stream_second,
        "streams_by_memory": (INSTANCE_MEMORY_MB - idle_mib - 512) * 1024 / rss_per_stream,
        "burst_queue_ms_per_arrival": setup_ms,
    }


def recommended_concurrency(figures: dict[str, float]) -> int:
    """About 60% of the CPU bound, a multiple of 8: headroom for bursts (each arrival's setup queues
    before the first token) and for models faster than the assumed tokens/s."""
    return max(PLATFORM_DEFAULT_CONCURRENCY, int(figures["streams_by_cpu"] * HEADROOM // 8 * 8))


def capacity_table(results: dict[str, Any]) -> str:
    """Users to concurrent streams to instances to cost, at the recommended concurrency and the platform's 16."""
    figures = capacity_figures(results)
    concurrency = recommended_concurrency(figures)
    rows = []
    for users in (100, 1_000, 10_000, 100_000):
        per_second = users * QUESTIONS_PER_USER_MINUTE / 60
        streams = per_second * figures["duration_s"]
        tpm = users * QUESTIONS_PER_USER_MINUTE * TPM_PER_QUESTION
        cells = [f"{users:,}", f"{streams:,.0f}", f"{tpm / 1e6:,.1f} M"]
        for limit in (concurrency, PLATFORM_DEFAULT_CONCURRENCY):
            instances = max(1, math.ceil(streams / limit))
            hourly = instances * INSTANCE_MEMORY_MB / 1024 * 3600 * PRICE_PER_GB_S
            hourly += per_second * 3600 * PRICE_PER_MILLION_EXECUTIONS / 1e6
            cells += [f"{instances:,}", f"${hourly:,.2f}"]
        rows.append(cells)
    header = [
        "active users",
        "concurrent streams",
        "TPM needed",
        f"instances at {concurrency}",
        "$/hour",
        f"instances at {PLATFORM_DEFAULT_CONCURRENCY}",
        "$/hour",
    ]
    lead = (
        f"From this run: {figures['setup_ms']:.1f} ms of CPU per request before its first token and "
        f"{figures['per_token_us']:.0f} µs per extra token (at {_setup_streams(results)} streams), so a "
        f"{ANSWER_TOKENS}-token answer at {MODEL_TOKENS_PER_S:g} tokens/s ({figures['duration_s']:.1f} s with the "
        f"calls before it) costs {figures['cpu_ms_per_stream_second']:.1f} ms of CPU per second of stream. At "
        f"{CPU_BUDGET:.0%} of one core an instance carries about {figures['streams_by_cpu']:.0f} streams "
        f"(memory would allow {figures['streams_by_memory']:,.0f} on {INSTANCE_MEMORY_MB} MB). "
        f"Recommended perInstanceConcurrency: {concurrency}, about {HEADROOM:.0%} of that, because questions "
        f"arriving together queue for about {figures['burst_queue_ms_per_arrival']:.0f} ms of CPU each before "
        f"their first token ({concurrency} at once: {concurrency * figures['burst_queue_ms_per_arrival'] / 1000:.1f}"
        " s) "
        "and models can stream faster than assumed."
    )
    return lead + "\n\n" + _table(header, rows)


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "machine": machine_text,
    "comparison": comparison,
    "headline": headline,
    "lone": lone_table,
    "sweep": sweep_table,
    "burst": burst_table,
    "flood": flood_table,
    "nonstream": nonstream_table,
    "stages": stages_table,
    "capacity": capacity_table,
}


NOT_MEASURED = "(not measured in this run)"


def section(name: str, results: dict[str, Any]) -> str:
    """One section's markdown; a scenario the run left out (``--scenarios``) says so."""
    try:
        return SECTIONS[name](results)
    except (KeyError, ValueError):
        return NOT_MEASURED


def render(results: dict[str, Any]) -> str:
    return "\n\n".join(f"## {name}\n\n{section(name, results)}" for name in SECTIONS)


def _replace_sections(text: str, results: dict[str, Any], source: str) -> str:
    """Every marked section, from ``results``; a section the run cannot fill (left out with --scenarios, or
    recorded in an older format) keeps its text, and a partial run leaves the machine line, which the
    other tables keep describing."""
    partial = results.get("partial", False)  # runs from before it was recorded had every scenario

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        body = section(name, results)
        if body == NOT_MEASURED or (partial and name == "machine"):
            return match.group(0)
        return f"<!-- results:{name} -->\n{body}\n\n_From {source}._\n<!-- /results:{name} -->"

    return re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", fill, text, flags=re.DOTALL)


def publish(path: Path) -> None:
    """Write the tables of ``path`` into every marked section of the README and docs/performance.md, and the plot."""
    results = orjson.loads(path.read_bytes())
    source = f"`{path.relative_to(PROJECT_ROOT)}`" if path.is_relative_to(PROJECT_ROOT) else f"`{path.name}`"
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        document.write_text(_replace_sections(text, results, source), encoding="utf-8")
    written = ", ".join(str(document.relative_to(PROJECT_ROOT)) for document in DOCUMENTS)
    if results.get("partial", False):
        print(f"wrote the tables {path} has (a partial run: no machine line, no plot) into {written}")
        return
    plot(results, PLOT)
    print(f"wrote the tables of {path} into {written}, {PLOT}")


# --- the plot -------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    """Against concurrency: first token and p99 gap for the app, the baseline and the upstream direct;
    CPU per token and RSS per stream for the two backends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {kind: _sweep(results, kind) for kind in ("app", "baseline", "direct")}
    names = {"app": "this app", "baseline": "SDK baseline", "direct": "upstream direct"}
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    panels = (
        (axes[0][0], "first_content_p99_ms", "time to first token, p99 (ms)", ("app", "baseline", "direct"), None),
        (axes[0][1], "gap_p99_ms", "p99 gap between tokens (ms)", ("app", "baseline", "direct"), None),
        (axes[1][0], "app_cpu_us_per_token", "CPU per streamed token, all-in (µs)", ("app", "baseline"), 100.0),
        (axes[1][1], "rss_per_stream_kib", "RSS per open stream (KiB)", ("app", "baseline"), 64.0),
    )
    for axis, key, label, kinds, target in panels:
        for kind in kinds:
            points = series[kind]
            xs = sorted(points)
            spreads = [spread(points[n], key) for n in xs]
            medians = [s.median for s in spreads]
            errors = [[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]]
            style = "s--" if kind == "direct" else "o-"
            axis.errorbar(xs, medians, yerr=errors, fmt=style, capsize=3, label=names[kind])
        if target is not None:
            axis.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    machine = results["machine"]
    figure.suptitle(f"{machine['cpu_model']}; {results['pinning']}; {machine['git_commit']}", fontsize=9)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def newest_full_run() -> Path:
    for path in sorted(RESULTS_DIR.glob("[0-9]*.json"), reverse=True):  # runs are named by time
        results = orjson.loads(path.read_bytes())
        if "runs" in results and not results.get("quick") and not results.get("partial"):
            return path
    raise SystemExit(f"no full run in {RESULTS_DIR}; run: python -m benchmarks.run --publish")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, help="a results file (default: the newest full run)")
    parser.add_argument("--write", action="store_true", help="write the tables into the docs, and the plot")
    args = parser.parse_args(argv)
    path = (args.results or newest_full_run()).resolve()
    if args.write:
        publish(path)
    else:
        print(render(orjson.loads(path.read_bytes())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

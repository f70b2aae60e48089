"""Sample the app with py-spy while it carries a load, and name the frames its CPU time goes to.

py-spy runs on the harness core in non-blocking mode (it does not pause the app to sample)
and writes collapsed stacks ("frame;frame;... count"). Its idle detection lets some waiting
through (the event loop in epoll, idle pool threads), so samples whose innermost frame is
such a wait are dropped here; the rest is where the app spends CPU. Frames are aggregated by
function and file, line numbers dropped, and ranked by self and total time; frames on nearly
every stack (interpreter, event loop, server, threads) are left out of the total-time ranking.
"""

from __future__ import annotations

import pstats
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from chat.settings import PROJECT_ROOT

# What a frame's file name is shortened by: the virtualenv's or the interpreter's library, or this project.
_PREFIX = re.compile(rf"^.*(site-packages|python3\.\d+|{re.escape(str(PROJECT_ROOT))})/")


def short_path(filename: str) -> str:
    """A frame's file name without the library or project directory it is in."""
    return _PREFIX.sub("", filename)


_LINE_NUMBER = re.compile(r":\d+\)$")
IDLE_LEAVES = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "Condition.wait (threading.py)",
        "_worker (concurrent/futures/thread.py)",
    }
)
# Files whose frames carry every stack (interpreter start, event loop, server, threads): not costs.
SCAFFOLDING_FILES = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "chat/http/devserver.py",
    "threading.py",
    "concurrent/futures/thread.py",
)


class Sampler:
    """``py-spy record`` attached to one process until ``stop``."""

    def __init__(self, pid: int, output: Path, prefix: list[str], rate: int = 200) -> None:
        beside_python = Path(sys.executable).with_name("py-spy")  # a virtualenv's, even when not activated
        executable = str(beside_python) if beside_python.is_file() else shutil.which("py-spy")
        if executable is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.output = output
        command = [*prefix, executable, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"]
        command += ["--format", "raw", "--output", str(output)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        """End the recording (py-spy writes its file on SIGINT)."""
        self._process.send_signal(signal.SIGINT)
        _, errors = self._process.communicate(timeout=30)
        if not self.output.is_file():
            raise RuntimeError(f"py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}")


_SCAFFOLDING_SUFFIXES = tuple(f"({file})" for file in SCAFFOLDING_FILES)


def _frame(raw: str) -> str:
    return _LINE_NUMBER.sub(")", raw.strip())


def top_frames(collapsed: Path, count: int = 15) -> tuple[int, int, list[tuple[str, int]], list[tuple[str, int]]]:
    """All samples, busy samples, the frames with most self samples, and those with most total samples."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = busy = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        weight = int(number)
        frames = [_frame(frame) for frame in stack.split(";")]
        samples += weight
        if frames[-1] in IDLE_LEAVES:
            continue
        busy += weight
        self_samples[frames[-1]] += weight
        for frame in set(frames):
            total_samples[frame] += weight
    costs = [(frame, n) for frame, n in total_samples.most_common() if not frame.endswith(_SCAFFOLDING_SUFFIXES)]
    return samples, busy, self_samples.most_common(count), costs[:count]


def print_top(samples: int, busy: int, self_top: list[tuple[str, int]], total_top: list[tuple[str, int]]) -> None:
    print(f"\nsamples: {samples}, of which busy (not waiting): {busy}; shares below are of the busy ones")
    for title, rows in (("self time", self_top), ("total time (frame anywhere on the stack)", total_top)):
        print(f"\ntop frames by {title}:")
        for frame, weight in rows:
            print(f"  {100 * weight / max(busy, 1):5.1f}%  {frame}")


# Libraries a request's CPU is grouped by, matched in a frame's file path (first match wins).
LIBRARIES = (
    ("openai", "/openai/"),
    ("pydantic", "/pydantic"),
    ("httpx", "/httpx"),
    ("aiohttp", "/aiohttp/"),
    ("starlette", "/starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("azure functions", "/azure"),
    ("opentelemetry", "/opentelemetry/"),
    ("chat (this app)", "/chat/"),
    ("asyncio", "/asyncio/"),
    ("typing (the SDK transform's type checks)", "/typing.py"),
    ("json", "json"),
)


IDLE_FUNCTIONS = frozenset({"<method 'poll' of 'select.epoll' objects>"})


def _library(filename: str) -> str:
    return next((name for name, mark in LIBRARIES if mark in filename), "other")


def pstats_summary(path: Path, requests: int, count: int = 12) -> dict[str, Any]:
    """Self CPU per request by library, and the functions with most total (cumulative) time, from cProfile.

    cProfile counts a coroutine's time per resumption and inflates small calls, so these are
    shares of a profiled run, not the unprofiled figures.
    """
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    # The event loop's wait for I/O is idle time, not cost: left out of every share.
    idle = sum(entry[2] for (_, _, function), entry in table.items() if function in IDLE_FUNCTIONS)
    total = (sum(entry[2] for entry in table.values()) - idle) or 1.0
    by_library: defaultdict[str, float] = defaultdict(float)
    cumulative: list[tuple[float, str]] = []
    for (filename, line, function), (_, _, self_time, cumulative_time, _) in table.items():
        if function in IDLE_FUNCTIONS:
            continue
        by_library[_library(filename)] += self_time
        if cumulative_time < total:  # frames whose total holds the idle wait are scaffolding (the loop)
            short = short_path(filename)
            cumulative.append((cumulative_time, f"{function} ({short}:{line})"))
    skip = ("<method 'run' of '_contextvars.Context' objects>", "_run_coro (", "timed (", "wrap (", "_run_once (")
    top = [(frame, seconds) for seconds, frame in sorted(cumulative, reverse=True) if not frame.startswith(skip)]
    per_request = max(requests, 1)
    return {
        "profiled_ms_per_request": total / per_request * 1000,
        "self_share_by_library": {
            name: seconds / total for name, seconds in sorted(by_library.items(), key=lambda item: -item[1])
        },
        "top_cumulative": [{"frame": frame, "share": seconds / total} for frame, seconds in top][:count],
    }

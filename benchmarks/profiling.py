"""Sample the app with py-spy while it carries a load, and name the frames its CPU time goes to.

py-spy runs on the harness core in non-blocking mode (it does not pause the app to sample)
and writes collapsed stacks ("frame;frame;... count"). Its idle detection lets some waiting
through (the event loop in epoll, idle pool threads), so samples whose innermost frame is
such a wait are dropped here; the rest is where the app spends CPU. Frames are aggregated by
function and file, line numbers dropped, and ranked by self and total time; frames on nearly
every stack (interpreter, event loop, server, threads) are left out of the total-time ranking.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

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
    "chat/devserver.py",
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

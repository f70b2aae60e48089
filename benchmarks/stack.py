"""The processes a benchmark drives: the simulated upstream and the app's local host, pinned to their cores.

Layout (../shared/benchmarking.md): the app gets core 0 to itself; the simulated upstream and
the load client (the process that imports this) share core 1. Without ``taskset`` or with
fewer than two cores nothing is pinned, and ``Pinning.note`` says so next to every figure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chat.localstack import SAMPLE_DOCS_FOLDER, Server, free_port
from chat.settings import PROJECT_ROOT, LocalOpenAISettings, all_variables

APP_CORE = 0
HARNESS_CORE = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_SECONDS = 60.0
# What answers on the app's port: the product, or the typical SDK-based backend (benchmarks/baselines/).
# "stages" is the product instrumented per stage, in one process (benchmarks/request_cpu.py).
AppKind = Literal["app", "baseline", "stages"]


@dataclass(frozen=True)
class Pinning:
    """How processes are placed on cores: ``taskset`` prefixes for children, affinity for this process."""

    taskset: str | None
    cores: int

    @property
    def active(self) -> bool:
        return self.taskset is not None and self.cores >= 2

    def prefix(self, core: int) -> list[str]:
        return [self.taskset, "-c", str(core)] if self.active and self.taskset else []

    @property
    def note(self) -> str:
        if self.active:
            return f"app pinned to core {APP_CORE}; upstream and load client on core {HARNESS_CORE} (taskset)"
        if self.taskset is None:
            return "NOT PINNED: taskset is missing (install util-linux); app, upstream and client share all cores"
        return f"NOT PINNED: only {self.cores} core(s); app, upstream and client share them"


def detect_pinning() -> Pinning:
    return Pinning(shutil.which("taskset"), os.cpu_count() or 1)


def pin_this_process(pinning: Pinning) -> None:
    """Put the load client (this process) on the harness core, beside the upstream."""
    if pinning.active:
        os.sched_setaffinity(0, {HARNESS_CORE})


@dataclass(frozen=True)
class ProcessProbe:
    """CPU time and resident memory of one process, read from /proc (Linux)."""

    pid: int

    def cpu_seconds(self) -> float:
        """User plus system CPU time of all the process's threads (/proc/<pid>/stat utime + stime)."""
        with open(f"/proc/{self.pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # After the command name: field 3 (state) is fields[0], so utime (14) and stime (15) are [11] and [12].
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
        return 0


def core_busy_seconds() -> dict[int, float]:
    """CPU seconds each core spent busy (anyone's work, and time stolen by the hypervisor) since boot."""
    busy: dict[int, float] = {}
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            name, *ticks = line.split()
            if not name.startswith(b"cpu") or name == b"cpu":
                continue
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(tick) for tick in ticks[:8])
            busy[int(name[3:])] = (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    return busy


def this_process() -> ProcessProbe:
    return ProcessProbe(os.getpid())


def child_environment(**values: str) -> dict[str, str]:
    """This process's environment without any of the product's variables, plus ``values``.

    For child processes (servers, the ingest CLI) of benchmarks and tests, which must see only the
    configuration given here.
    """
    environment = {name: value for name, value in os.environ.items() if name not in all_variables()}
    return {**environment, **values}


class Stack:
    """A running simulated upstream, a local index built through it, and (re)startable app processes.

    The upstream's per-process timing is only a default: each scenario sets its own with a
    ``[[upstream ...]]`` directive in the question (see benchmarks/upstream.py).
    """

    def __init__(self, workdir: Path, pinning: Pinning, upstream_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.pinning = pinning
        upstream_port, self.app_port = free_port(), free_port()
        self.upstream_url = f"http://127.0.0.1:{upstream_port}"
        self.app_url = f"http://127.0.0.1:{self.app_port}"
        self.environment = child_environment(
            OPENAI_HOST="local",
            SEARCH_HOST="local",
            LOCAL_OPENAI_ENDPOINT=f"{self.upstream_url}/v1",
            LOCAL_EMBEDDING_ENDPOINT=f"{self.upstream_url}/v1",
            LOCAL_INDEX_PATH=str(workdir / "index.sqlite"),
            # The relevance gate asks the model a yes/no before answering (on for local models):
            # a call the SDK baseline does not make, and meant for real small models, not for
            # the simulated upstream. Off, the app's figures compare like with like.
            CHAT_RELEVANCE_GATE="off",
        )
        command = [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port), *(upstream_args or [])]
        self.upstream = self._server("upstream", pinning.prefix(HARNESS_CORE) + command, "/v1/models")
        self.app: Server | None = None

    def _server(self, name: str, command: list[str], ready_path: str) -> Server:
        base = self.upstream_url if name == "upstream" else self.app_url
        return Server(name, command, base + ready_path, env=self.environment, log_dir=self.workdir)

    def __enter__(self) -> Stack:
        self.upstream.start(READY_TIMEOUT_SECONDS)
        try:
            self.ingest()
            self.start_app()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.app is not None:
            self.app.stop()
        self.upstream.stop()

    def ingest(self) -> None:
        """Build the temporary local index with the upstream's deterministic fake embeddings."""
        command = [sys.executable, "-m", "chat.ingest", str(SAMPLE_DOCS_FOLDER)]
        done = subprocess.run(command, env=self.environment, cwd=PROJECT_ROOT, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ingest failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")

    def start_app(self, kind: AppKind = "app") -> ProcessProbe:
        """A fresh process of the app or of a baseline (a clean start for CPU and memory) on the app's
        port and core; an earlier one is stopped first."""
        if self.app is not None:
            self.app.stop()
        if kind == "app":
            command = [sys.executable, "-m", "chat.http.devserver", "--port", str(self.app_port)]
            command += ["--settings", "/nonexistent", "--log-level", "warning"]
        elif kind == "stages":
            command = [sys.executable, "-m", "benchmarks.request_cpu", "--port", str(self.app_port)]
            command += ["--profile-output", str(self.profile_path)]
        else:
            command = [sys.executable, "-m", "benchmarks.baselines.sdk_app", "--port", str(self.app_port)]
            command += ["--upstream", f"{self.upstream_url}/v1", "--index", str(self.workdir / "index.sqlite")]
            command += ["--embedding-model", LocalOpenAISettings.model_fields["local_embedding_model"].default]
        self.app = self._server(kind, self.pinning.prefix(APP_CORE) + command, "/api/health")
        self.app.start(READY_TIMEOUT_SECONDS)
        return self.app_probe

    @property
    def profile_path(self) -> Path:
        """Where the "stages" process writes its cProfile statistics."""
        return self.workdir / "request.pstats"

    @property
    def app_probe(self) -> ProcessProbe:
        # taskset execs the command, so the child's pid is the app's own.
        assert self.app is not None
        assert self.app.process is not None
        return ProcessProbe(self.app.process.pid)

    @property
    def upstream_probe(self) -> ProcessProbe:
        assert self.upstream.process is not None
        return ProcessProbe(self.upstream.process.pid)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

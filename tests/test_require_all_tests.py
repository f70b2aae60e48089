"""REQUIRE_ALL_TESTS=1, as CI sets it, turns every skip into a failure: module-level ones and bare ones too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chat.settings import PROJECT_ROOT

SKIPPING_TESTS = {
    "test_module_helper.py": (
        "from tests.conftest import require_module\n"
        "tool = require_module('no_such_tool_here', 'no_such_tool_here is not installed')\n"
        "def test_uses_the_tool(): pass\n"
    ),
    "test_module_bare.py": (
        "import pytest\ntool = pytest.importorskip('no_such_tool_here')\ndef test_uses_the_tool(): pass\n"
    ),
    "test_in_tests.py": (
        "import pytest\n"
        "from tests.conftest import require\n"
        "def test_require(): require(False, 'no node here')\n"
        "def test_bare_skip(): pytest.skip('not a git checkout')\n"
        "@pytest.mark.skipif(True, reason='needs a POSIX sh')\n"
        "def test_skipif(): pass\n"
        "@pytest.mark.xfail(strict=True)\n"
        "def test_expected_failure(): assert False\n"
        "def test_runs(): pass\n"
    ),
}


def outcomes(folder: Path, require_all: bool) -> dict[str, int]:
    """Run pytest with this suite's conftest over ``folder``; the counts of its closing line."""
    environment = {name: value for name, value in os.environ.items() if name != "REQUIRE_ALL_TESTS"}
    environment["PYTHONPATH"] = str(PROJECT_ROOT)
    if require_all:
        environment["REQUIRE_ALL_TESTS"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q"]
    command += ["--continue-on-collection-errors", "--rootdir", str(PROJECT_ROOT)]
    command += ["-c", str(PROJECT_ROOT / "pyproject.toml"), str(folder)]
    ran = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120)
    closing = ran.stdout.strip().splitlines()[-1]
    return {kind.rstrip("s"): int(count) for count, kind in re.findall(r"(\d+) (\w+)", closing)}


@pytest.fixture(scope="module")
def skipping_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("skipping")
    for name, text in SKIPPING_TESTS.items():
        (folder / name).write_text(text)
    return folder


def test_skips_are_skips_by_default(skipping_tests: Path) -> None:
    assert outcomes(skipping_tests, require_all=False) == {"passed": 1, "skipped": 5, "xfailed": 1}


def test_require_all_tests_fails_every_skip(skipping_tests: Path) -> None:
    """Skips in a test fail it; at module level or in setup (skipif) they are errors: either fails the run."""
    assert outcomes(skipping_tests, require_all=True) == {"passed": 1, "failed": 2, "error": 3, "xfailed": 1}

"""The doctor's findings: one line per check, a fix under each failure, and the exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TextIO

Status = Literal["ok", "warn", "fail", "skip"]
_LABELS: dict[Status, str] = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@dataclass(frozen=True)
class Check:
    """The outcome of one check; ``fix`` says what to do about a warning or failure."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def line(check: Check) -> str:
    """``FAIL chat model: detail`` and, when there is one, an indented ``fix:`` line."""
    text = f"{_LABELS[check.status]} {check.name}: {check.detail}"
    return f"{text}\n     fix: {check.fix}" if check.fix else text


def print_checks(checks: Iterable[Check], out: TextIO | None = None) -> None:
    for check in checks:
        print(line(check), file=out or sys.stdout, flush=True)


def exit_code(checks: Iterable[Check], *, strict: bool) -> int:
    """1 when a check failed (or, with ``strict``, warned); 0 otherwise."""
    failing = {"fail", "warn"} if strict else {"fail"}
    return 1 if any(check.status in failing for check in checks) else 0

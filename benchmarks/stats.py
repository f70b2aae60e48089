"""Percentiles within a run, and median/min/max across the repeats of a point."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated between the two nearest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Spread:
    """One figure over the repeats of a point: the median, with the lowest and highest run."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        finite = [value for value in values if not math.isnan(value)]
        if not finite:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(finite), min(finite), max(finite))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}

    def show(self, digits: int = 1) -> str:
        if math.isnan(self.median):
            return "-"
        if self.low == self.high:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}..{self.high:.{digits}f}]"


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Spread]:
    """A Spread for every numeric figure the runs have in common."""
    keys = [key for key, value in runs[0].items() if isinstance(value, int | float) and not isinstance(value, bool)]
    return {key: Spread.of(float(run[key]) for run in runs) for key in keys}


def ms(seconds: float | None) -> float:
    return math.nan if seconds is None else seconds * 1000

"""Timing runs, summarizing them, and keeping the whole suite within its time cap."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def summarize(samples: list[float]) -> dict[str, Any]:
    """Return the median, min, max and quartiles of ``samples`` (seconds)."""
    ordered = sorted(samples)
    summary: dict[str, Any] = {
        "runs": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "samples": ordered,
    }
    if len(ordered) >= 4:
        quartiles = statistics.quantiles(ordered, n=4, method="inclusive")
        summary["q1"], summary["q3"] = quartiles[0], quartiles[2]
    return summary


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``action`` once; return its wall time in seconds and its result.

    The objects alive before the run are first moved out of the garbage
    collector's reach, so a collection during the run scans only what the run
    made, not the benchmark's own data such as the template records. Without
    that, the first timed query of a run took 50 to 100 ms longer.
    """
    gc.collect()
    gc.freeze()
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


@dataclass
class Budget:
    """The wall-time cap of one suite run, set by ``--max-minutes``."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def skip_reason(self, estimate: float | None, step: str) -> str | None:
        """Return why ``step`` must be skipped, or None when its estimate fits."""
        if estimate is None or estimate <= self.remaining():
            return None
        return (
            f"{step} would take about {estimate:.0f} s (estimate) but only "
            f"{max(self.remaining(), 0):.0f} s of --max-minutes "
            f"{self.seconds / 60:g} remain"
        )


@dataclass
class RateBook:
    """Seconds per item of each step measured so far, for estimating larger sizes.

    An estimate scales the rate of the largest size measured linearly, so it is
    low for steps that grow faster than linearly.
    """

    rates: dict[str, tuple[int, float]] = field(default_factory=dict)

    def record(self, step: str, size: int, seconds: float) -> None:
        previous = self.rates.get(step)
        if previous is None or size >= previous[0]:
            self.rates[step] = (size, seconds / max(size, 1))

    def estimate(self, step: str, size: int) -> float | None:
        entry = self.rates.get(step)
        return None if entry is None else entry[1] * size

    def cautious_estimate(self, step: str, size: int) -> float | None:
        """Return the estimate, doubled when it extrapolates beyond the sizes measured.

        The clone of 1,000,000 items took 1.8 times the extrapolation from
        100,000, and a run that starts cannot be cut short.
        """
        entry = self.rates.get(step)
        if entry is None:
            return None
        factor = 2.0 if size > entry[0] else 1.0
        return factor * entry[1] * size

"""Running the scenarios over the dataset sizes within the time and disk limits."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_lib import datasets, query_bench, status_bench
from bench_lib.environment import free_disk_bytes, load_average, machine_facts
from bench_lib.targets import SCENARIOS, check_targets
from bench_lib.timing import Budget, RateBook, summarize, timed
from localsync.store import Replica

logger = logging.getLogger("bench")

LARGE_SIZE = 1_000_000
# Bytes per item of a built replica when no build has been measured yet: an estimate
# above the 2,900 to 3,000 that builds from the real exports took on SQLite 3.40.
DEFAULT_BYTES_PER_ITEM = 3_500
DISK_MARGIN_BYTES = 1 << 30


@dataclass
class Settings:
    sizes: list[int]
    runs: int
    large_runs: int
    quick: bool
    data_dir: Path
    exports_dir: Path | None
    max_minutes: float
    command: str

    def runs_for(self, size: int) -> int:
        return self.large_runs if size >= LARGE_SIZE else self.runs


class Suite:
    """One run of the benchmark suite; ``results`` is what goes to the JSON file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = Budget(settings.max_minutes * 60)
        self.rates = RateBook()
        self.source = datasets.load_source(settings.exports_dir)
        self.results: dict[str, Any] = {
            "format": 1,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": settings.command,
            "mode": "quick" if settings.quick else "full",
            "settings": {
                "sizes": settings.sizes,
                "runs": settings.runs,
                "large_runs": settings.large_runs,
                "max_minutes": settings.max_minutes,
            },
            "machine": machine_facts(settings.data_dir),
            "data": {"source": self.source.kind, "note": self.source.note},
            "datasets": [],
            "figures": [],
            "skipped": [],
        }
        for size, seconds_per_item, _ in datasets.known_build_rates(settings.data_dir):
            self.rates.record("build", size, seconds_per_item * size)

    def run(self) -> dict[str, Any]:
        for size in sorted(self.settings.sizes):
            self.run_size(size)
        self.results["elapsed_seconds"] = round(self.budget.elapsed(), 1)
        self.results["machine"]["load_average_at_end"] = load_average()
        return self.results

    def run_size(self, size: int) -> None:
        dataset = self.prepare(size)
        if dataset is None:
            return
        self.run_queries(dataset)
        self.run_status(dataset)

    # Datasets

    def prepare(self, size: int) -> datasets.Dataset | None:
        data_dir = self.settings.data_dir
        dataset = datasets.cached_dataset(data_dir, size, self.source)
        reason = self.disk_skip_reason(size, cached=dataset is not None)
        if reason is None and dataset is None:
            reason = self.budget.skip_reason(
                self.rates.estimate("build", size), f"building {size:,} items"
            )
        if reason is not None:
            self.skip(list(SCENARIOS), size, reason)
            return None

        if dataset is None:
            logger.info("building a replica of %s items in %s", f"{size:,}", data_dir)
            dataset = datasets.build_dataset(data_dir, size, self.source)
            self.rates.record("build", size, dataset.build_seconds)
            cached = False
        else:
            logger.info(
                "reusing the replica of %s items at %s", f"{size:,}", dataset.path
            )
            cached = True
        self.results["datasets"].append({**dataset.to_json(), "cached": cached})
        self.rates.record("copy", size, 1.0 + dataset.file_bytes / 200e6)
        return dataset

    def disk_skip_reason(self, size: int, *, cached: bool) -> str | None:
        """Return why ``size`` does not fit on the disk of the data folder, or None."""
        per_item = DEFAULT_BYTES_PER_ITEM
        known = datasets.known_build_rates(self.settings.data_dir)
        if known:
            per_item = max(known)[2]
        # A build writes the replica and its WAL; the status scenario adds a copy.
        copies = 1.2 if cached else 2.4
        needed = int(per_item * size * copies) + DISK_MARGIN_BYTES
        free = free_disk_bytes(self.settings.data_dir)
        if free >= needed:
            return None
        return (
            f"{size:,} items need about {needed / 1e9:.1f} GB free in "
            f"{self.settings.data_dir} (estimate: {per_item:,.0f} bytes per item, "
            f"{'a working copy' if cached else 'the replica, its WAL and a copy'}), "
            f"but {free / 1e9:.1f} GB are free; pass --data-dir on a larger disk"
        )

    # Scenarios

    def run_queries(self, dataset: datasets.Dataset) -> None:
        runs = self.settings.runs_for(dataset.size)
        replica = Replica(dataset.path)
        conn = sqlite3.connect(dataset.path)
        try:
            for case in query_bench.query_cases(dataset):
                estimate = self.rates.estimate(case.key, dataset.size)
                reason = self.budget.skip_reason(
                    None if estimate is None else estimate * (runs + 1),
                    f"{case.key} at {dataset.size:,} items",
                )
                if reason is not None:
                    self.skip([case.key], dataset.size, reason)
                    continue
                logger.info(
                    "%s at %s items, %d runs", case.key, f"{dataset.size:,}", runs
                )
                outcome = query_bench.run_query_case(
                    replica, conn, dataset, case, runs, within=self.fits
                )
                self.add_figure(
                    case.key,
                    dataset,
                    dataset.size,
                    outcome,
                    runs,
                    {"title": case.title},
                )
        finally:
            conn.close()
            replica.close()

    def run_status(self, dataset: datasets.Dataset) -> None:
        runs = self.settings.runs_for(dataset.size)
        items = min(dataset.size, status_bench.MAX_ITEMS)
        estimate = self.rates.estimate("status_bulk", items)
        copy_estimate = self.rates.estimate("copy", dataset.size) or 0.0
        reason = self.budget.skip_reason(
            None if estimate is None else estimate * runs + copy_estimate,
            f"status_bulk at {dataset.size:,} items",
        )
        if reason is not None:
            self.skip(["status_bulk"], dataset.size, reason)
            return

        logger.info("status_bulk at %s items, %d runs", f"{dataset.size:,}", runs)
        work_dir = self.settings.data_dir / "work"
        copy_seconds, path = timed(lambda: datasets.working_copy(dataset, work_dir))
        self.rates.record("copy", dataset.size, copy_seconds)
        try:
            deadline = time.monotonic() + max(self.budget.remaining(), 0)
            outcome = status_bench.run_status_update(
                path, dataset, runs, stop_after=deadline
            )
        finally:
            datasets.remove_working_copy(path)
        self.add_figure("status_bulk", dataset, outcome["items"], outcome, runs, {})

    def fits(self, seconds: float) -> bool:
        return seconds <= self.budget.remaining()

    # Results

    def add_figure(
        self,
        key: str,
        dataset: datasets.Dataset,
        items: int,
        outcome: dict[str, Any],
        runs: int,
        details: dict[str, Any],
    ) -> None:
        ours, theirs = outcome.pop("localsync"), outcome.pop("reference")
        pair = (ours[0] + theirs[0]) if ours else 0.0
        self.rates.record(key, items, pair)
        figure: dict[str, Any] = {
            "scenario": key,
            "size": dataset.size,
            "items": items,
            "runs_planned": runs,
            "localsync": summarize(ours),
            "reference": summarize(theirs),
            **details,
            **outcome,
        }
        figure["ratio"] = figure["localsync"]["median"] / figure["reference"]["median"]
        notes = []
        if len(ours) < runs:
            notes.append(
                f"stopped after {len(ours)} of {runs} runs: --max-minutes reached"
            )
        if not outcome.get("reference_matches", True):
            notes.append("the reference's result differs from localsync's")
        figure["notes"] = notes
        figure["checks"] = check_targets(SCENARIOS[key], figure)
        self.results["figures"].append(figure)
        logger.info(
            "%s at %s: localsync %s, reference %s, ratio %.2f",
            key,
            f"{dataset.size:,}",
            _ms(figure["localsync"]["median"]),
            _ms(figure["reference"]["median"]),
            figure["ratio"],
        )

    def skip(self, keys: list[str], size: int, reason: str) -> None:
        logger.warning(
            "skipping %s at %s items: %s", ", ".join(keys), f"{size:,}", reason
        )
        for key in keys:
            self.results["skipped"].append(
                {"scenario": key, "size": size, "reason": reason}
            )


def _ms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return str(seconds)
    return f"{seconds * 1000:.1f} ms"

"""Running the scenarios over the dataset sizes within the time and disk limits.

The suite runs in phases, most important first, so that a tight ``--max-minutes``
skips the later ones. They are local queries and status updates at every size, the
status changes reaching a server, the demo, and queries over HTTP and clones at
every size that has a server database.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench_lib import datasets, query_bench, servers, status_bench, sync_bench
from bench_lib.environment import (
    code_version,
    free_disk_bytes,
    load_average,
    machine_facts,
)
from bench_lib.targets import SCENARIOS, check_targets
from bench_lib.timing import Budget, RateBook, summarize, timed
from localsync.store import Replica

logger = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[2]
LARGE_SIZE = 1_000_000
SYNC_ITEMS = 10_000
QUICK_SYNC_ITEMS = 200
# Bytes per item of a built database when no build has been measured yet: an
# estimate above the 2,900 to 3,000 that replicas of the real exports took.
DEFAULT_BYTES_PER_ITEM = 3_500
DISK_MARGIN_BYTES = 1 << 30
QUERY_KEYS = [key for key in SCENARIOS if key.startswith("query_")]
SERVER_KEYS = ["clone", *(f"{key} (HTTP)" for key in QUERY_KEYS)]
SYNC_KEYS = [
    "sync_vs_update_status",
    "sync_vs_task_set_status",
    "sync_noop",
    "watch_push",
]


PHASES = ("local", "sync", "demo", "server")


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
    phases: tuple[str, ...] = PHASES

    def runs_for(self, size: int) -> int:
        return self.large_runs if size >= LARGE_SIZE else self.runs

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"


class Suite:
    """One run of the benchmark suite; ``results`` is what goes to the JSON file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = Budget(settings.max_minutes * 60)
        self.rates = RateBook()
        self.source = datasets.load_source(settings.exports_dir)
        self.replicas: dict[int, datasets.Dataset] = {}
        self.expected: dict[tuple[int, str], query_bench.Rows] = {}
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
                "phases": list(settings.phases),
            },
            "machine": machine_facts(settings.data_dir),
            "code": code_version(REPO),
            "data": {"source": self.source.kind, "note": self.source.note},
            "datasets": [],
            "servers": [],
            "figures": [],
            "skipped": [],
        }
        for size, per_item, _ in datasets.known_build_rates(settings.data_dir):
            self.rates.record("build", size, per_item * size)

    def run(self) -> dict[str, Any]:
        sizes = sorted(self.settings.sizes)
        phases = self.settings.phases
        if "local" in phases:
            for size in sizes:
                self.run_local(size)
        if "sync" in phases:
            self.run_sync()
        if "demo" in phases:
            self.run_demo()
        if "server" in phases:
            for size in sizes:
                self.run_server(size)
        shutil.rmtree(self.settings.work_dir, ignore_errors=True)
        self.results["elapsed_seconds"] = round(self.budget.elapsed(), 1)
        self.results["machine"]["load_average_at_end"] = load_average()
        return self.results

    # Phase 1: the replica alone

    def run_local(self, size: int) -> None:
        dataset = self.prepare_replica(size)
        if dataset is None:
            return
        self.replicas[size] = dataset
        self.run_queries(dataset)
        self.run_status(dataset)

    def prepare_replica(self, size: int) -> datasets.Dataset | None:
        data_dir = self.settings.data_dir
        dataset = datasets.cached_dataset(data_dir, size, self.source)
        keys = [*QUERY_KEYS, "status_bulk"]
        reason = self.disk_skip_reason(size, cached=dataset is not None, copies=2.4)
        if reason is None and dataset is None:
            reason = self.budget.skip_reason(
                self.build_estimate("build", size), f"building a replica of {size:,}"
            )
        if reason is not None:
            self.skip(keys, size, reason)
            return None

        cached = dataset is not None
        if dataset is None:
            logger.info("building a replica of %s items in %s", f"{size:,}", data_dir)
            dataset = datasets.build_dataset(data_dir, size, self.source)
            self.rates.record("build", size, dataset.build_seconds)
        facts = {**dataset.to_json(), "cached": cached}
        facts["folders"] = len(facts["folders"])
        self.results["datasets"].append(facts)
        self.rates.record("copy", size, 1.0 + dataset.file_bytes / 200e6)
        return dataset

    def run_queries(self, dataset: datasets.Dataset) -> None:
        runs = self.settings.runs_for(dataset.size)
        replica = Replica(dataset.path)
        conn = sqlite3.connect(dataset.path)
        try:
            for case in query_bench.query_cases(dataset.folders, dataset.task_id):
                # One more run than timed: the untimed warm-up.
                runs_now = self.affordable_runs(case.key, dataset.size, runs + 1) - 1
                if runs_now < 1:
                    continue
                logger.info("%s at %s items", case.key, f"{dataset.size:,}")
                outcome = query_bench.run_query_case(
                    replica, conn, dataset, case, runs_now, within=self.within
                )
                self.expected[(dataset.size, case.key)] = outcome.pop("result")
                self.add_figure(
                    case.key,
                    dataset.size,
                    dataset.size,
                    outcome.pop("localsync"),
                    runs,
                    reference=outcome.pop("reference"),
                    extra={"title": case.title, **outcome},
                )
        finally:
            conn.close()
            replica.close()

    def run_status(self, dataset: datasets.Dataset) -> None:
        runs = self.settings.runs_for(dataset.size)
        items = min(dataset.size, status_bench.MAX_ITEMS)
        copy = self.rates.estimate("copy", dataset.size) or 0.0
        runs_now = self.affordable_runs(
            "status_bulk", items, runs, extra=copy, size=dataset.size
        )
        if runs_now < 1:
            return

        logger.info("status_bulk at %s items", f"{dataset.size:,}")
        copy_seconds, path = timed(
            lambda: datasets.working_copy(dataset, self.settings.work_dir)
        )
        self.rates.record("copy", dataset.size, copy_seconds)
        try:
            outcome = status_bench.run_status_update(
                path, dataset, runs_now, stop_after=self.deadline()
            )
        finally:
            datasets.remove_working_copy(path)
        self.add_figure(
            "status_bulk",
            dataset.size,
            outcome.pop("items"),
            outcome.pop("localsync"),
            runs,
            reference=outcome.pop("reference"),
            extra=outcome,
        )

    # Phase 2: status changes reaching the server

    def run_sync(self) -> None:
        size = QUICK_SYNC_ITEMS if self.settings.quick else SYNC_ITEMS
        runs = self.settings.runs_for(size)
        server = self.prepare_server(size, SYNC_KEYS)
        if server is None:
            return

        work = self.settings.work_dir
        db_path = servers.server_copy(server, work)
        store = work / "sync-replica.db"
        try:
            with servers.ServerProcess(db_path, work / "server.log") as process:
                self.measure_status_changes(process, server, store, runs)
                self.measure_noop_and_watch(process, server, store, runs)
        finally:
            servers.remove_database(db_path)
            servers.remove_database(store)

    def measure_status_changes(
        self,
        process: servers.ServerProcess,
        server: servers.ServerDataset,
        store: Path,
        runs: int,
    ) -> None:
        logger.info("status changes of %s items through a server", f"{server.size:,}")
        outcome = sync_bench.run_status_changes(
            process, server, store, runs, within=self.within
        )
        samples = outcome["localsync"]
        for key, method in (
            ("sync_vs_update_status", "update_status"),
            ("sync_vs_task_set_status", "task_set_status"),
        ):
            dtlpy = outcome["dtlpy"][method]
            self.add_figure(
                key,
                server.size,
                outcome["items"],
                samples,
                runs,
                reference=dtlpy["seconds"],
                extra={"pushed": outcome["pushed"], "dtlpy": dtlpy["dtlpy"]},
            )

    def measure_noop_and_watch(
        self,
        process: servers.ServerProcess,
        server: servers.ServerDataset,
        store: Path,
        runs: int,
    ) -> None:
        work = self.settings.work_dir
        if self.affordable_runs("sync_noop", 1, runs * 2) == runs * 2:
            outcome = sync_bench.run_noop_sync(store, runs, work / "noop.log")
            self.add_figure(
                "sync_noop",
                server.size,
                0,
                outcome["localsync"],
                runs,
                extra={"command": summarize(outcome["command"])},
            )
        if self.affordable_runs("watch_push", 1, runs) == runs:
            outcome = sync_bench.run_watch_latency(
                process, server, store, runs, work / "watch.log"
            )
            self.add_figure("watch_push", server.size, 1, outcome["localsync"], runs)

    # Phase 3: a server of each size

    def run_server(self, size: int) -> None:
        server = self.prepare_server(size, SERVER_KEYS)
        if server is None:
            return
        runs = self.settings.runs_for(size)
        work = self.settings.work_dir
        work.mkdir(parents=True, exist_ok=True)
        with servers.ServerProcess(Path(server.path), work / "server.log") as process:
            self.run_http_queries(process, server, runs)
            runs_now = self.affordable_runs("clone", size, runs)
            if runs_now >= 1:
                logger.info("clone of %s items", f"{size:,}")
                outcome = sync_bench.run_clone(
                    process, server, work, runs_now, within=self.within
                )
                self.add_figure(
                    "clone",
                    size,
                    outcome.pop("items"),
                    outcome.pop("localsync"),
                    runs,
                    extra=outcome,
                )

    def run_http_queries(
        self, process: servers.ServerProcess, server: servers.ServerDataset, runs: int
    ) -> None:
        replica = self.replicas.get(server.size)
        if replica is None:
            return
        token = servers.token_for(Path(server.path), server.project_id)
        with httpx.Client(
            base_url=f"{process.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
            timeout=600,
        ) as client:
            for case in query_bench.query_cases(replica.folders, server.task_id):
                figure = self.find_figure(case.key, server.size)
                expected = self.expected.get((server.size, case.key))
                if figure is None or expected is None:
                    continue
                key = f"{case.key} (HTTP)"
                runs_now = self.affordable_runs(key, server.size, runs + 1) - 1
                if runs_now < 1:
                    continue
                outcome = query_bench.run_http_case(
                    client,
                    server.dataset_id,
                    case,
                    runs_now,
                    expected,
                    within=self.within,
                )
                figure["http"] = summarize(outcome["samples"])
                figure["http_matches"] = outcome["matches"]
                self.rates.record(
                    f"{case.key} (HTTP)", server.size, outcome["samples"][0]
                )
                if not outcome["matches"]:
                    figure["notes"].append(
                        "the server's result differs from localsync's"
                    )

    def prepare_server(
        self, size: int, keys: list[str]
    ) -> servers.ServerDataset | None:
        data_dir = self.settings.data_dir
        server = servers.cached_server(data_dir, size, self.source)
        reason = self.disk_skip_reason(size, cached=server is not None, copies=2.2)
        if reason is None and server is None:
            reason = self.budget.skip_reason(
                self.build_estimate("server_build", size),
                f"building a server database of {size:,} items",
            )
        if reason is not None:
            self.skip(keys, size, reason)
            return None

        cached = server is not None
        if server is None:
            logger.info("building a server database of %s items", f"{size:,}")
            server = servers.build_server(data_dir, size, self.source)
        self.rates.record("server_build", size, server.build_seconds)
        if not any(entry["path"] == server.path for entry in self.results["servers"]):
            self.results["servers"].append({**server.to_json(), "cached": cached})
        return server

    # Phase 4: the demo

    def run_demo(self) -> None:
        if self.settings.quick:
            self.skip(["demo"], 0, "not run with --quick: the demo takes 10 s or more")
            return
        runs = self.settings.runs
        runs_now = self.affordable_runs("demo", 1, runs)
        if runs_now < 1:
            return
        exports = self.settings.exports_dir if self.source.kind == "real" else None
        outcome = sync_bench.run_demo(exports, self.settings.work_dir, runs_now)
        self.add_figure("demo", 0, 0, outcome["localsync"], runs)

    # Limits

    def affordable_runs(
        self,
        key: str,
        amount: int,
        runs: int,
        *,
        extra: float = 0.0,
        size: int | None = None,
    ) -> int:
        """Return how many of ``runs`` runs of ``key`` fit in the time left.

        Returns 0 and records a skip when not even one fits. ``amount`` is what the
        time of ``key`` grows with (items or dataset items); ``extra`` is a fixed
        cost in seconds on top of the runs.
        """
        per_run = self.rates.cautious_estimate(key, amount)
        remaining = self.budget.remaining() - extra
        if per_run is None or per_run * runs <= remaining:
            return runs
        affordable = int(remaining // per_run) if per_run > 0 else 0
        if affordable >= 1:
            logger.warning(
                "%s at %s: only %d of %d runs fit in --max-minutes (%.0f s each)",
                key,
                f"{amount:,}",
                affordable,
                runs,
                per_run,
            )
            return affordable
        reason = self.budget.skip_reason(per_run + extra, f"{key} at {amount:,}")
        self.skip([key], amount if size is None else size, reason or "no time left")
        return 0

    def build_estimate(self, key: str, size: int) -> float | None:
        """Return a cautious estimate of a build, which cannot stop half way.

        The server database of 1,000,000 items took 1.9 times the linear
        extrapolation from 100,000 on a loaded machine.
        """
        return self.rates.cautious_estimate(key, size)

    def within(self, seconds: float) -> bool:
        return seconds <= self.budget.remaining()

    def deadline(self) -> float:
        return time.monotonic() + max(self.budget.remaining(), 0.0)

    def disk_skip_reason(self, size: int, *, cached: bool, copies: float) -> str | None:
        """Return why ``size`` does not fit on the disk of the data folder, or None.

        A build writes the database and its WAL, and a writing scenario a copy, so
        an uncached build needs about ``copies`` times the database size.
        """
        per_item = DEFAULT_BYTES_PER_ITEM
        known = datasets.known_build_rates(self.settings.data_dir)
        if known:
            per_item = max(known)[2]
        factor = 1.2 if cached else copies
        needed = int(per_item * size * factor) + DISK_MARGIN_BYTES
        free = free_disk_bytes(self.settings.data_dir)
        if free >= needed:
            return None
        return (
            f"{size:,} items need about {needed / 1e9:.1f} GB free in "
            f"{self.settings.data_dir} (estimate: {per_item:,.0f} bytes per item "
            f"x {factor:g}), but {free / 1e9:.1f} GB are free; pass --data-dir on a "
            "larger disk"
        )

    # Results

    def add_figure(
        self,
        key: str,
        size: int,
        items: int,
        samples: list[float],
        runs: int,
        *,
        reference: list[float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        pair = samples[0] + (reference[0] if reference else 0.0)
        self.rates.record(key, max(items, 1), pair)
        figure: dict[str, Any] = {
            "scenario": key,
            "size": size,
            "items": items,
            "runs_planned": runs,
            "localsync": summarize(samples),
            "ratio": None,
            **(extra or {}),
        }
        if reference:
            figure["reference"] = summarize(reference)
            figure["ratio"] = (
                figure["localsync"]["median"] / figure["reference"]["median"]
            )
        figure["notes"] = self.notes_for(figure, len(samples), runs)
        figure["checks"] = check_targets(SCENARIOS[key], figure)
        self.results["figures"].append(figure)
        ratio = "" if figure["ratio"] is None else f", ratio {figure['ratio']:.3f}"
        logger.info(
            "%s at %s: localsync median %.4f s%s",
            key,
            f"{size:,}",
            figure["localsync"]["median"],
            ratio,
        )

    @staticmethod
    def notes_for(figure: dict[str, Any], done: int, runs: int) -> list[str]:
        notes = []
        if done < runs:
            notes.append(f"stopped after {done} of {runs} runs: --max-minutes reached")
        if not figure.get("reference_matches", True):
            notes.append("the reference's result differs from localsync's")
        return notes

    def find_figure(self, key: str, size: int) -> dict[str, Any] | None:
        for figure in self.results["figures"]:
            if figure["scenario"] == key and figure["size"] == size:
                return figure
        return None

    def skip(self, keys: list[str], size: int, reason: str) -> None:
        logger.warning("skipping %s at %s: %s", ", ".join(keys), f"{size:,}", reason)
        for key in keys:
            self.results["skipped"].append(
                {"scenario": key, "size": size, "reason": reason}
            )

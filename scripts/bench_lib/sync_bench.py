"""Scenarios against a running server: status changes, clone, no-op sync, watch, demo.

Status changes reaching the server are timed three ways on the same items: offline
``Replica.set_status`` followed by one ``SyncEngine.sync()``, dtlpy's
``dataset.items.update_status`` and dtlpy's ``task.set_status``. Each call sets a
status other than the one the items have, so every call changes every item. Local
ops carry the token's user as creator, as the Python API and the CLI stamp them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench_lib.servers import (
    PROJECT,
    USER,
    ServerDataset,
    ServerProcess,
    child_env,
    localsync_command,
    remove_database,
    token_for,
)
from bench_lib.timing import timed
from localsync.store import Replica
from localsync.sync import SyncEngine, clone, open_remote

STATUS_CYCLE = ("completed", "discard", "approved")
WORKER = Path(__file__).with_name("dtlpy_worker.py")
PEAK_RSS = Path(__file__).with_name("peak_rss.py")
WATCH_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.01


def status_sequence() -> Iterator[str]:
    """Yield statuses so that each differs from the one before."""
    while True:
        yield from STATUS_CYCLE


def file_item_ids(replica: Replica) -> list[str]:
    rows = replica.conn.execute("SELECT id FROM items WHERE type = 'file' ORDER BY id")
    return [row[0] for row in rows]


def clone_in_process(
    server: ServerProcess, dataset: ServerDataset, store: Path
) -> None:
    remove_database(store)
    token = token_for(server.db_path, dataset.project_id)
    clone(store, server.url, token=token, project=PROJECT, dataset=dataset.dataset_name)


# Status changes


def run_status_changes(
    server: ServerProcess,
    dataset: ServerDataset,
    store: Path,
    runs: int,
    *,
    within: Callable[[float], bool],
) -> dict[str, Any]:
    """Time localsync and both dtlpy methods on every file item of ``dataset``."""
    clone_in_process(server, dataset, store)
    statuses = status_sequence()
    replica = Replica(store)
    try:
        item_ids = file_item_ids(replica)
        localsync_seconds, pushed = [], []
        for _ in range(runs):
            status = next(statuses)
            seconds, report = timed(
                lambda status=status: _set_and_sync(replica, dataset, item_ids, status)
            )
            localsync_seconds.append(seconds)
            pushed.append(report.push.pushed)
            # Each run is followed by one run of each dtlpy method, which took up
            # to 4 times as long as localsync's in trial runs: leave room for them.
            if not within(seconds * 6):
                break
    finally:
        replica.close()

    token = token_for(server.db_path, dataset.project_id)
    dtlpy = {}
    for method in ("update_status", "task_set_status"):
        request = {
            "api": f"{server.url}/api/v1",
            "token": token,
            "dataset_id": dataset.dataset_id,
            "task_id": dataset.task_id,
            "items": len(item_ids),
            "item_ids": item_ids,
            "method": method,
            "statuses": [next(statuses) for _ in range(len(localsync_seconds))],
        }
        dtlpy[method] = run_dtlpy(request)
    return {
        "items": len(item_ids),
        "localsync": localsync_seconds,
        "pushed": pushed,
        "dtlpy": dtlpy,
    }


def _set_and_sync(
    replica: Replica, dataset: ServerDataset, item_ids: list[str], status: str
) -> Any:
    result = replica.set_status(
        item_ids, task_id=dataset.task_id, status=status, creator=USER
    )
    if result.journaled != len(item_ids):
        raise RuntimeError(
            f"set_status journaled {result.journaled} of {len(item_ids)} items"
        )
    with open_remote(replica) as remote:
        report = SyncEngine(replica, remote).sync()
    if report.push.pushed != len(item_ids) or report.pending:
        raise RuntimeError(
            f"sync pushed {report.push.pushed} of {len(item_ids)} ops and left "
            f"{report.pending} pending"
        )
    return report


def run_dtlpy(request: dict[str, Any]) -> dict[str, Any]:
    """Run the dtlpy worker in a child process; return its timings."""
    with tempfile.TemporaryDirectory(prefix="bench-dtlpy-") as folder:
        result_path = Path(folder) / "result.json"
        log_path = Path(folder) / "log.txt"
        with log_path.open("w") as log:
            completed = subprocess.run(
                [sys.executable, str(WORKER)],
                input=json.dumps({**request, "result_path": str(result_path)}),
                text=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
                check=False,
            )
        if completed.returncode != 0 or not result_path.exists():
            tail = log_path.read_text()[-2000:]
            raise RuntimeError(
                f"dtlpy worker ({request['method']}) failed with exit status "
                f"{completed.returncode}:\n{tail}"
            )
        return json.loads(result_path.read_text())


# Clone


def run_clone(
    server: ServerProcess,
    dataset: ServerDataset,
    work_dir: Path,
    runs: int,
    *,
    within: Callable[[float], bool],
) -> dict[str, Any]:
    """Time ``localsync clone`` in a child process and read its peak RSS."""
    token = token_for(server.db_path, dataset.project_id)
    store = work_dir / f"clone-{dataset.size}.db"
    seconds, peaks = [], []
    try:
        for _ in range(runs):
            remove_database(store)
            argv = [
                *localsync_command(),
                "clone",
                server.url,
                "--project",
                PROJECT,
                "--dataset",
                dataset.dataset_name,
                "--token",
                token,
                "--store",
                str(store),
            ]
            elapsed, peak = run_measured(argv, work_dir / "clone.log")
            seconds.append(elapsed)
            peaks.append(peak)
            if not within(elapsed):
                break
        with Replica(store) as replica:
            cloned = len(file_item_ids(replica))
    finally:
        remove_database(store)
    return {
        "items": cloned,
        "localsync": seconds,
        "peak_rss_bytes": peaks,
        "peak_mb": max(peaks) / 2**20,
    }


def run_measured(argv: list[str], log_path: Path) -> tuple[float, int]:
    """Run ``argv``; return its wall time and its peak resident set size in bytes.

    The command runs under ``peak_rss.py``, which reads the peak with
    ``os.wait4`` (the usage of that one child, where ``RUSAGE_CHILDREN`` would
    give the maximum over every child so far) from a process small enough not
    to inflate it. The wall time includes starting that Python process, about
    0.1 s.
    """
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as folder:
        result_path = Path(folder) / "rss.json"
        launcher = [sys.executable, str(PEAK_RSS), str(result_path), *argv]
        with log_path.open("ab") as log:
            start = time.perf_counter()
            completed = subprocess.run(
                launcher,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
                check=False,
            )
            elapsed = time.perf_counter() - start
        if completed.returncode != 0 or not result_path.exists():
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed with exit status "
                f"{completed.returncode}; see {log_path}"
            )
        peak = json.loads(result_path.read_text())["max_rss_bytes"]
    return elapsed, int(peak)


# No-op sync


def run_noop_sync(store: Path, runs: int, log_path: Path) -> dict[str, Any]:
    """Time a sync with nothing to push or pull, in process and through the CLI.

    One untimed sync first pulls what other clients changed on the server.
    """
    in_process, command = [], []
    with Replica(store) as replica:
        with open_remote(replica) as remote:
            SyncEngine(replica, remote).sync()
        for _ in range(runs):
            with open_remote(replica) as remote:
                seconds, report = timed(SyncEngine(replica, remote).sync)
            if report.push.pushed or report.pull.changes:
                raise RuntimeError(
                    f"no-op sync moved data: pushed {report.push.pushed}, "
                    f"pulled {report.pull.changes}"
                )
            in_process.append(seconds)
    argv = [*localsync_command(), "sync", "--store", str(store)]
    for _ in range(runs):
        command.append(run_measured(argv, log_path)[0])
    return {"localsync": in_process, "command": command}


# Watch mode


def run_watch_latency(
    server: ServerProcess,
    dataset: ServerDataset,
    store: Path,
    runs: int,
    log_path: Path,
) -> dict[str, Any]:
    """Time from a committed local write to the server showing it, under --watch."""
    token = token_for(server.db_path, dataset.project_id)
    with Replica(store) as replica:
        item_id = file_item_ids(replica)[0]
        synced_before = replica.setting("last_sync_at")
    argv = [
        *localsync_command(),
        "sync",
        "--watch",
        "--interval",
        "3600",
        "--store",
        str(store),
    ]
    latencies = []
    with log_path.open("ab") as log:
        watcher = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=child_env()
        )
        try:
            _wait_for_first_sync(store, synced_before, watcher)
            statuses = status_sequence()
            with (
                Replica(store) as replica,
                httpx.Client(
                    base_url=f"{server.url}/api/v1",
                    headers={"Authorization": f"Bearer {token}"},
                    trust_env=False,
                ) as client,
            ):
                for _ in range(runs):
                    status = next(statuses)
                    replica.set_status(
                        [item_id], task_id=dataset.task_id, status=status, creator=USER
                    )
                    written = time.perf_counter()
                    _wait_for_status(client, item_id, dataset.task_id, status)
                    latencies.append(time.perf_counter() - written)
        finally:
            watcher.terminate()
            watcher.wait(timeout=30)
    return {"items": 1, "localsync": latencies}


def _wait_for_first_sync(
    store: Path, synced_before: str | None, watcher: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        if watcher.poll() is not None:
            raise RuntimeError(
                f"localsync sync --watch exited with {watcher.returncode}"
            )
        with Replica(store) as replica:
            if replica.setting("last_sync_at") != synced_before:
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"localsync sync --watch made no sync within {WATCH_TIMEOUT_S} s"
    )


def _wait_for_status(
    client: httpx.Client, item_id: str, task_id: str, status: str
) -> None:
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        item = client.get(f"/items/{item_id}").raise_for_status().json()
        for ref in item["metadata"]["system"]["refs"]:
            if (
                ref["id"] == task_id
                and (ref.get("metadata") or {}).get("status") == status
            ):
                return
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(
        f"the server did not show status {status!r} on item {item_id} within "
        f"{WATCH_TIMEOUT_S} s of the local write"
    )


# Demo


def run_demo(exports_dir: Path | None, work_dir: Path, runs: int) -> dict[str, Any]:
    """Time ``localsync demo`` end to end, each run in a fresh work folder."""
    seconds = []
    for run in range(runs):
        folder = work_dir / f"demo-{run}"
        # A folder left by an earlier bench run makes the demo stop at once.
        shutil.rmtree(folder, ignore_errors=True)
        argv = [
            *localsync_command(),
            "demo",
            "--workdir",
            str(folder),
            "--format",
            "json",
        ]
        if exports_dir is not None and exports_dir.is_dir():
            argv += ["--exports", str(exports_dir)]
        seconds.append(run_measured(argv, work_dir / "demo.log")[0])
    return {"items": 0, "localsync": seconds}

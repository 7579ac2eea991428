"""The end-to-end demo: a server, two offline replicas, an online user, an outage.

``run_demo`` imports the exports into a server on a free loopback port and creates
an annotation task, later a QA task. Two cloned replicas change statuses offline,
partly on the same items and partly against an online user's REST writes. They
sync across a simulated outage, and the demo reports how each conflict resolved.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from localsync.errors import SyncError
from localsync.exports import exported_items, read_export_records
from localsync.statuses import iso_timestamp
from localsync.store import Replica

logger = logging.getLogger(__name__)

PROJECT = "demo-project"
DATASET = "demo-dataset"
ANNOTATION_TASK = "annotate sheep and fruit"
QA_TASK = "review"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
SHARED_EXPORTS = Path("..") / "shared" / "datasets" / "dataloop-exports"
GENERATED_ITEMS = 2_000

Echo = Callable[[str], None]


def default_exports() -> Path | None:
    """Return the real exports folder when it is next to this checkout or the cwd."""
    package_checkout = Path(__file__).resolve().parent.parent
    for candidate in (SHARED_EXPORTS, package_checkout / SHARED_EXPORTS):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedServer:
    """A localsync server in a background thread, bound to 127.0.0.1."""

    def __init__(self, db_path: Path, port: int) -> None:
        self.db_path = db_path
        self.port = port
        self._thread: threading.Thread | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import uvicorn

        from localsync.server.app import create_app
        from localsync.server.storage import open_storage

        storage = open_storage(str(self.db_path))
        app = create_app(storage, secret=storage.meta().secret, close_storage=True)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SyncError(f"the demo server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=20)
            self._server = self._thread = None


def prepare_exports(exports: Path | None, workdir: Path, echo: Echo) -> Path:
    if exports is not None:
        return exports
    found = default_exports()
    if found is not None:
        return found
    from localsync import synthetic

    folder = workdir / "generated-exports"
    echo(
        f"Real exports not found at {SHARED_EXPORTS} (from the current folder or "
        f"the checkout); generating {GENERATED_ITEMS} export records in {folder}. "
        "Pass --exports DIR to use real ones."
    )
    synthetic.write_export_dir(
        synthetic.generate_export_records(GENERATED_ITEMS), folder
    )
    return folder


def setup_server(db_path: Path, exports: Path, echo: Echo) -> dict[str, Any]:
    """Import the exports and create the annotation task; return ids and tokens."""
    from localsync.server.auth import issue_token
    from localsync.server.storage import NewTask, open_storage

    storage = open_storage(str(db_path))
    try:
        project = storage.ensure_project(PROJECT, creator=CAROL)
        dataset = storage.ensure_dataset(project["id"], DATASET, creator=CAROL)
        now = iso_timestamp()
        records = read_export_records(exports)
        entries = exported_items(records, dataset_id=dataset["id"], now=now)
        counts = storage.import_items(dataset["id"], entries, now=now)
        task = storage.create_task(
            NewTask(
                project_id=project["id"],
                dataset_id=dataset["id"],
                name=ANNOTATION_TASK,
                statuses=("completed", "discard"),
                assignees=(ALICE, BOB),
                creator=CAROL,
            )
        )
        secret = storage.meta().secret
    finally:
        storage.close()
    echo(
        f"Server: imported {counts.items_added} items from {exports} into "
        f"{PROJECT}/{DATASET}; task {ANNOTATION_TASK!r} has "
        f"{task.get('totalItems')} items "
        f"dealt to {ALICE} and {BOB}"
    )
    tokens = {
        email: issue_token(secret, email=email, project_ids=[project["id"]])
        for email in (ALICE, BOB, CAROL)
    }
    return {"project": project, "dataset": dataset, "task": task, "tokens": tokens}


def item_ids_in(replica: Replica, folder: str, count: int | None = None) -> list[str]:
    body = {
        "filter": {"$and": [{"type": "file"}, {"dir": folder}]},
        "sort": {"id": "ascending"},
        "page": 0,
        "pageSize": 1000,
    }
    ids = [item["id"] for item in replica.query(body)[0]]
    return ids if count is None else ids[:count]


def sync_replica(
    path: Path, label: str, echo: Echo, *, attempts: int = 8
) -> dict[str, Any]:
    from localsync.sync.engine import SyncEngine
    from localsync.sync.remote import LocalsyncRemote
    from localsync.sync.retry import RetryPolicy

    with Replica(path) as replica:
        retry = RetryPolicy(max_attempts=attempts, base_wait=0.1, max_wait=0.5)
        url, token = replica.setting("remote_url"), replica.setting("token")
        assert url is not None and token is not None
        with LocalsyncRemote(url, token, retry=retry, timeout=5.0) as remote:
            report = SyncEngine(replica, remote).sync().to_json()
    echo(
        f"  {label}: pushed {report['pushed']} (applied {report['applied']}, "
        f"superseded {report['superseded']}, rejected {report['rejected']}), "
        f"pulled {report['pulled']} changes, {report['conflicts']} new conflicts"
    )
    return report


def online_status(
    url: str, token: str, task_id: str, item_ids: list[str], status: str
) -> int:
    """Set a status as an online SDK user would: one task status request."""
    response = httpx.post(
        f"{url}/api/v1/assignments/items/tasks/{task_id}/status",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "itemIds": item_ids,
            "statusPayload": {
                "operation": "create",
                "returnLastStatus": True,
                "status": status,
            },
        },
        timeout=30,
    )
    response.raise_for_status()
    return len(response.json() or {})


def status_counts(
    query: Callable[[dict[str, Any]], int], task_id: str, statuses: Iterable[str]
) -> dict[str, int]:
    counts = {}
    for status in statuses:
        ref = {"id": task_id, "type": "task", "metadata": {"status": status}}
        counts[status] = query({"filter": {"metadata.system.refs": {"$match": ref}}})
    return counts


def replica_counter(path: Path) -> Callable[[dict[str, Any]], int]:
    def count(body: dict[str, Any]) -> int:
        with Replica(path) as replica:
            return replica.query({**body, "page": 0, "pageSize": 1})[1]

    return count


def server_counter(
    url: str, token: str, dataset_id: str
) -> Callable[[dict[str, Any]], int]:
    def count(body: dict[str, Any]) -> int:
        response = httpx.post(
            f"{url}/api/v1/datasets/{dataset_id}/query",
            headers={"Authorization": f"Bearer {token}"},
            json={**body, "page": 0, "pageSize": 1, "resource": "items"},
            timeout=30,
        )
        response.raise_for_status()
        return int(response.json()["totalItemsCount"])

    return count


def run_demo(
    exports: Path | None = None, workdir: Path | None = None, echo: Echo = print
) -> dict[str, Any]:
    """Run the whole demo and return its summary (statuses, conflicts, timings)."""
    started = time.monotonic()
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="localsync-demo-"))
    _check_workdir_unused(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # The folder is kept for inspection afterwards, so print where it is.
    echo(f"Work folder (kept afterwards): {workdir}")
    exports = prepare_exports(exports, workdir, echo)
    server = EmbeddedServer(workdir / "server.db", free_port())
    setup = setup_server(server.db_path, exports, echo)
    task_id = setup["task"]["id"]
    tokens = setup["tokens"]
    server.start()
    echo(f"Server listening on {server.url}")
    try:
        summary = _scenario(server, setup, task_id, tokens, workdir, echo, started)
    finally:
        server.stop()
    summary["workdir"] = str(workdir)
    return summary


# The files a demo run leaves in its work folder.
DEMO_FILES = ("server.db", "alice.db", "bob.db")


def _check_workdir_unused(workdir: Path) -> None:
    """Raise ``SyncError`` when ``workdir`` contains an earlier demo run's databases.

    A second run would find its task already on that server, so it stops before
    touching anything and names the folder.
    """
    found = [name for name in DEMO_FILES if (workdir / name).exists()]
    if found:
        raise SyncError(
            f"--workdir {str(workdir)!r} already contains an earlier demo run "
            f"({', '.join(found)}); pass a new or empty folder, or remove those "
            "files first"
        )


def _scenario(
    server: EmbeddedServer,
    setup: dict[str, Any],
    task_id: str,
    tokens: dict[str, str],
    workdir: Path,
    echo: Echo,
    started: float,
) -> dict[str, Any]:
    from localsync.sync.clone import clone

    paths = {ALICE: workdir / "alice.db", BOB: workdir / "bob.db"}
    for email, path in paths.items():
        report = clone(
            path, server.url, token=tokens[email], project=PROJECT, dataset=DATASET
        ).to_json()
        echo(f"Cloned {email}'s replica {path.name}: {report['pulled']} changes")

    echo("Both annotators go offline (the server keeps running for the online user).")
    with Replica(paths[ALICE]) as alice, Replica(paths[BOB]) as bob:
        merino = item_ids_in(alice, "/Merino")
        poll_dorset = item_ids_in(alice, "/Poll Dorset", 10)
        suffolk = item_ids_in(bob, "/Suffolk")
        changed = alice.set_status(
            merino, task_id=task_id, status="completed", creator=ALICE
        )
        echo(f"  alice: completed {len(changed.op_ids)} /Merino items offline")
        time.sleep(0.01)
        changed = bob.set_status(
            merino[:20], task_id=task_id, status="discard", creator=BOB
        )
        echo(f"  bob: discarded {len(changed.op_ids)} of the same /Merino items, later")
        changed = bob.set_status(
            suffolk, task_id=task_id, status="completed", creator=BOB
        )
        echo(f"  bob: completed {len(changed.op_ids)} /Suffolk items offline")

    time.sleep(0.01)
    written = online_status(
        server.url, tokens[CAROL], task_id, merino[20:30] + poll_dorset, "discard"
    )
    echo(
        f"  carol (online, REST): discarded {written} items, 10 of them alice's /Merino"
    )
    time.sleep(0.01)
    with Replica(paths[ALICE]) as alice:
        alice.set_status(
            poll_dorset, task_id=task_id, status="completed", creator=ALICE
        )
    echo("  alice: completed the 10 /Poll Dorset items carol discarded, after her")

    echo("The server goes down; alice tries to sync.")
    server.stop()
    try:
        sync_replica(paths[ALICE], "alice", echo, attempts=2)
    except SyncError as exc:
        echo(f"  alice: sync failed as expected ({exc}); her journal keeps every op")
    with Replica(paths[ALICE]) as alice:
        pending = len(alice.journal(states=["pending"]))
    echo(f"  alice: {pending} ops pending")
    server.start()
    echo("The server is back; everyone syncs.")
    # Bob pushes first, so alice's older ops on his items lose at her push and
    # become conflicts in her replica. Carol's later online writes beat hers too.
    for label in ("bob", "alice", "bob"):
        sync_replica(paths[ALICE if label == "alice" else BOB], label, echo)

    qa = _create_qa_task(server, setup, echo)
    for label in ("alice", "bob"):
        sync_replica(paths[ALICE if label == "alice" else BOB], label, echo)
    with Replica(paths[ALICE]) as alice:
        completed = merino[30:80]
        alice.set_status(completed, task_id=qa["id"], status="approved", creator=ALICE)
    echo(f"  alice: approved {len(completed)} items in QA task {QA_TASK!r}")
    for label in ("alice", "bob"):
        sync_replica(paths[ALICE if label == "alice" else BOB], label, echo)

    return _report(server, setup, task_id, qa, tokens, paths, echo, started)


def _create_qa_task(
    server: EmbeddedServer, setup: dict[str, Any], echo: Echo
) -> dict[str, Any]:
    from localsync.server.storage import NewTask, open_storage

    storage = open_storage(str(server.db_path))
    try:
        qa = storage.create_task(
            NewTask(
                project_id=setup["project"]["id"],
                dataset_id=setup["dataset"]["id"],
                name=QA_TASK,
                task_type="qa",
                parent_task_id=setup["task"]["id"],
                assignees=(ALICE,),
                creator=CAROL,
            )
        )
    finally:
        storage.close()
    echo(
        f"Server: QA task {QA_TASK!r} created over {qa.get('totalItems')} items "
        "with a status"
    )
    return qa


def _report(
    server: EmbeddedServer,
    setup: dict[str, Any],
    task_id: str,
    qa: dict[str, Any],
    tokens: dict[str, str],
    paths: dict[str, Path],
    echo: Echo,
    started: float,
) -> dict[str, Any]:
    from localsync.sync.conflicts import list_conflicts

    dataset_id = setup["dataset"]["id"]
    views = {"server": server_counter(server.url, tokens[CAROL], dataset_id)}
    views.update(
        {email.split("@")[0]: replica_counter(path) for email, path in paths.items()}
    )
    summary: dict[str, Any] = {"statuses": {}, "conflicts": {}}
    echo("\nStatuses (items per status), on the server and in each replica:")
    for name, task, statuses in (
        (ANNOTATION_TASK, task_id, ("completed", "discard")),
        (QA_TASK, qa["id"], ("approved", "discard")),
    ):
        for view, counter in views.items():
            counts = status_counts(counter, task, statuses)
            summary["statuses"].setdefault(name, {})[view] = counts
            echo(f"  {name:26} {view:7} {json.dumps(counts)}")

    echo("\nConflicts (local ops that lost, kept for review):")
    for email, path in paths.items():
        with Replica(path) as replica:
            conflicts = list_conflicts(replica)
        summary["conflicts"][email] = conflicts
        by_winner: dict[str, int] = {}
        for conflict in conflicts:
            winner = conflict["winner"]
            key = (
                f"{conflict['local']['status']} lost to {winner['status']} by "
                f"{winner['creator']} ({winner['source']}, later HLC)"
            )
            by_winner[key] = by_winner.get(key, 0) + 1
        echo(f"  {email}: {len(conflicts)}")
        for key, count in sorted(by_winner.items()):
            echo(f"    {count:4} x {key}")
    agree = all(
        counts == task_counts["server"]
        for task_counts in summary["statuses"].values()
        for counts in task_counts.values()
    )
    summary["converged"] = agree
    summary["seconds"] = round(time.monotonic() - started, 2)
    echo(
        f"\nReplicas and server agree: {'yes' if agree else 'NO'}; "
        f"demo took {summary['seconds']} s"
    )
    return summary

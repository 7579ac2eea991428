"""The replica store: file handling, journal, bulk statuses, crashes, concurrency."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from localsync.errors import BadRequest, SchemaVersionError, StoreError
from localsync.store import SCHEMA_VERSION, Replica, create_task, import_exports
from tests.store_helpers import make_replica, register_statuses

REPO = Path(__file__).resolve().parent.parent


def journal_count(replica: Replica) -> int:
    return replica.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]


def test_new_replica_files_are_private(replica_path: Path) -> None:
    replica, _ = make_replica(replica_path, 3)
    replica.set_status(
        ["0" * 24], task_id=_task_id(replica), status="completed", creator="a@x"
    )
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(replica_path) + suffix)
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    replica.close()


def test_missing_replica_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist.*localsync import"):
        Replica(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_non_sqlite_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the droids\n")
    with pytest.raises(StoreError, match="not an SQLite database"):
        Replica(path)
    assert path.read_text() == "these are not the droids\n"


def test_foreign_sqlite_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a localsync replica"):
        Replica(path)


def test_newer_schema_version_is_rejected(replica_path: Path) -> None:
    Replica(replica_path, create=True).close()
    conn = sqlite3.connect(replica_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = replica_path.read_bytes()

    with pytest.raises(SchemaVersionError, match="upgrade localsync"):
        Replica(replica_path)

    assert replica_path.read_bytes() == before


def test_single_status_journals_and_applies(replica_path: Path) -> None:
    replica, plan = make_replica(replica_path, 4)
    task_id = plan.task["id"]
    item_id = "0" * 23 + "2"

    result = replica.set_status(
        [item_id], task_id=task_id, status="completed", creator="ann@example.com"
    )

    assert result.changed == [item_id]
    assert len(result.op_ids) == 1
    op = replica.journal()[0]
    assert (op["item_id"], op["task_id"], op["status"]) == (
        item_id,
        task_id,
        "completed",
    )
    assert (op["seq"], op["state"], op["replica_id"]) == (
        1,
        "pending",
        replica.replica_id,
    )
    item = replica.get_item(item_id)
    refs = item["metadata"]["system"]["refs"]
    assert [ref["type"] for ref in refs] == ["task", "assignment"]
    assert all(ref["metadata"]["status"] == "completed" for ref in refs)
    assert all(ref["metadata"]["creator"] == "ann@example.com" for ref in refs)
    assert item["metadata"]["system"]["annotationStatus"] == ["completed"]


def test_reassertion_and_clear(replica_path: Path) -> None:
    replica, plan = make_replica(replica_path, 2)
    task_id, item_id = plan.task["id"], "0" * 24
    replica.set_status([item_id], task_id=task_id, status="approved", creator="a@x")

    again = replica.set_status(
        [item_id], task_id=task_id, status="approved", creator="a@x"
    )
    cleared = replica.set_status([item_id], task_id=task_id, status=None, creator="a@x")

    assert again.reasserted == [item_id]
    assert again.changed == []
    assert cleared.changed == [item_id]
    refs = replica.get_item(item_id)["metadata"]["system"]["refs"]
    assert [ref["id"] for ref in refs][0] == task_id
    assert all("status" not in ref["metadata"] for ref in refs)
    assert all("creator" not in ref["metadata"] for ref in refs)
    assert replica.get_item(item_id)["metadata"]["system"]["annotationStatus"] == []
    assert [op["seq"] for op in replica.journal()] == [3, 2, 1]


def test_bulk_skips_missing_and_duplicates(replica_path: Path) -> None:
    replica, plan = make_replica(replica_path, 5)
    ids = [f"{n:024x}" for n in (0, 1, 1, 4)] + ["f" * 24]

    result = replica.set_status(
        ids, task_id=plan.task["id"], status="discard", creator="a@x"
    )

    assert sorted(result.changed) == [f"{n:024x}" for n in (0, 1, 4)]
    assert result.skipped == {"f" * 24: "item not found"}
    assert journal_count(replica) == 3


def test_status_not_allowed_leaves_journal_unchanged(replica_path: Path) -> None:
    replica, plan = make_replica(replica_path, 2)
    before = [row for row in replica.conn.execute("SELECT json FROM items ORDER BY id")]

    with pytest.raises(BadRequest, match="completed, approved, discard"):
        replica.set_status(
            ["0" * 24], task_id=plan.task["id"], status="done", creator="a@x"
        )

    assert journal_count(replica) == 0
    assert before == [
        row for row in replica.conn.execute("SELECT json FROM items ORDER BY id")
    ]


def test_bulk_update_is_one_transaction(replica_path: Path) -> None:
    replica, plan = make_replica(replica_path, 3_000)
    commits = []
    replica.conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None
    )

    result = replica.set_status(
        [f"{n:024x}" for n in range(3_000)],
        task_id=plan.task["id"],
        status="completed",
        creator="a@x",
    )

    replica.conn.set_trace_callback(None)
    assert len(result.op_ids) == 3_000
    assert len(commits) == 1
    statuses = register_statuses(replica, plan.task["id"])
    assert set(statuses.values()) == {"completed"}
    seqs = [
        row[0] for row in replica.conn.execute("SELECT seq FROM journal ORDER BY seq")
    ]
    assert seqs == list(range(1, 3_001))


def test_import_exports_twice_writes_nothing(
    exports_dir: Path, replica_path: Path
) -> None:
    first = import_exports(
        exports_dir, store=replica_path, project="p", dataset="sheep"
    )
    second = import_exports(
        exports_dir, store=replica_path, project="p", dataset="sheep"
    )

    assert first.items == 1_979 + 6
    assert first.written == first.items
    assert second.written == 0
    assert first.dataset_id == second.dataset_id
    with Replica(replica_path) as replica:
        dirs = replica.conn.execute(
            "SELECT json_extract(json, '$.filename') FROM items"
            " WHERE json_extract(json, '$.type') = 'dir' ORDER BY 1"
        ).fetchall()
    assert [row[0] for row in dirs] == [
        "/Merino",
        "/Poll Dorset",
        "/Suffolk",
        "/White Suffolk",
        "/test",
        "/train",
    ]


def test_import_into_replica_of_other_dataset_fails(
    exports_dir: Path, replica_path: Path
) -> None:
    import_exports(exports_dir, store=replica_path, project="p", dataset="sheep")
    with pytest.raises(BadRequest, match="already holds dataset 'sheep'"):
        import_exports(exports_dir, store=replica_path, project="p", dataset="fruit")


WORKER = textwrap.dedent(
    """
    import sys
    from localsync.store import Replica
    path, task_id, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    replica = Replica(path)
    for n in range(start, start + count):
        replica.set_status([f"{n % 500:024x}"], task_id=task_id,
                           status="completed" if n % 2 else "discard", creator=sys.argv[5])
    """
)


def test_two_processes_write_without_lock_errors(replica_path: Path) -> None:
    replica, plan = make_replica(replica_path, 500)
    replica.close()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(replica_path),
                plan.task["id"],
                str(start),
                "5000",
                f"w{start}@x",
            ],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for start in (0, 5000)
    ]
    errors = [worker.communicate(timeout=240)[1] for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0], errors
    assert not any("locked" in error for error in errors)
    with Replica(replica_path) as replica:
        seqs = [
            row[0]
            for row in replica.conn.execute("SELECT seq FROM journal ORDER BY seq")
        ]
        creators = replica.conn.execute(
            "SELECT creator, COUNT(*) FROM journal GROUP BY creator ORDER BY creator"
        ).fetchall()
    assert seqs == list(range(1, 10_001))
    assert creators == [("w0@x", 5000), ("w5000@x", 5000)]


BULK_WORKER = textwrap.dedent(
    """
    import sys
    from localsync.store import Replica
    replica = Replica(sys.argv[1])
    ids = [f"{n:024x}" for n in range(int(sys.argv[3]))]
    print("start", flush=True)
    replica.set_status(ids, task_id=sys.argv[2], status="completed", creator="k@x")
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_sigkill_during_bulk_update_is_all_or_nothing(
    replica_path: Path, delay: float
) -> None:
    count = 50_000
    replica, plan = make_replica(replica_path, count, assignees=())
    replica.close()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BULK_WORKER,
            str(replica_path),
            plan.task["id"],
            str(count),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "start"
    time.sleep(delay)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    with Replica(replica_path) as replica:
        ops = journal_count(replica)
        statuses = register_statuses(replica, plan.task["id"])
    applied = sum(1 for status in statuses.values() if status == "completed")
    assert ops in (0, count)
    assert applied == ops


def _task_id(replica: Replica) -> str:
    return replica.tasks()[0]["id"]


def test_projection_columns_follow_json(exports_dir: Path, replica_path: Path) -> None:
    """Writers fill the plain projection columns; a status rewrite leaves them valid."""
    from localsync.dql.rows import stale_projections

    result = import_exports(exports_dir, store=replica_path, project="p", dataset="d")
    with Replica(replica_path) as replica:
        create_task(replica, name="t", statuses=("completed",))
        ids = list(replica.matching_item_ids({"filter": {"dir": "/Merino"}}))
        replica.set_status(
            ids, task_id=replica.tasks()[0]["id"], status="completed", creator="a@x"
        )
        assert stale_projections(replica.conn) == []

        replica.conn.execute(
            "UPDATE items SET dir = '/elsewhere' WHERE id = ?", (ids[0],)
        )
        assert stale_projections(replica.conn) == [ids[0]]
    assert result.items == 1_985


def test_import_exports_is_top_level(exports_dir: Path, replica_path: Path) -> None:
    import localsync

    result = localsync.import_exports(
        exports_dir / "FruitImage", store=replica_path, project="p", dataset="fruit"
    )

    assert result.items == 299 + 2

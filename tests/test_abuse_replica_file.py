"""Damaged replica files and a full disk: corrupt index pages, garbage or missing
last pages, a truncated file, a broken header, and a disk that fills up during a
pull. The commands fail with one clear line (exit 1, no traceback), the journal
stays readable wherever SQLite can still read it, and after a full disk the
replica keeps working: a later sync with room completes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from localsync.cli import main
from localsync.store import Replica
from tests.abuse_support import (
    TASK,
    assert_no_leak,
    build_replica,
    item_ids,
    write_exports,
)
from tests.reliability_report import Tally
from tests.server_fixtures import seed_dataset, synthetic_records
from tests.sync_support import (
    DATASET,
    PROJECT,
    cli_env,
    journal_states,
    make_world,
    run_cli,
    set_statuses,
)

tally = Tally("bad_input")

INDEX_TREES = (
    "journal_pending",
    "journal_register",
    "sqlite_autoindex_journal_1",
    "sqlite_autoindex_journal_2",
)
# The b-trees that opening a replica and 'localsync log' read.
LOG_TREES = (
    "sqlite_schema",
    "journal",
    "settings",
    "projects",
    "datasets",
    "tasks",
    "assignments",
)
DAMAGED = "the replica file is damaged; 'localsync log' may still read its journal"
UNOPENABLE = "cannot be opened as a replica: database disk image is malformed"


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


class Layout:
    """Where each b-tree of a replica file lives, page by page."""

    def __init__(self, path: Path) -> None:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.page_size = connection.execute("PRAGMA page_size").fetchone()[0]
            self.page_count = connection.execute("PRAGMA page_count").fetchone()[0]
            rows = connection.execute("SELECT name, pageno FROM dbstat").fetchall()
        except sqlite3.OperationalError as exc:
            pytest.skip(f"SQLite was built without the dbstat table: {exc}")
        finally:
            connection.close()
        self.pages: dict[str, list[int]] = {}
        for name, page in rows:
            self.pages.setdefault(name, []).append(page)

    def last_page_of(self, trees: tuple[str, ...]) -> int:
        return max(max(self.pages[name]) for name in trees if name in self.pages)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A replica with 90 journaled ops, and 400 items added after them, so the
    file's last pages hold items only. Returns the path and the op count."""
    folder = tmp_path_factory.mktemp("abuse-file")
    path = folder / "replica.db"
    tasks = build_replica(path, write_exports(folder / "exports"))
    with Replica(path) as replica:
        for status in ("completed", "discard", "completed"):
            replica.set_status(
                item_ids(), task_id=tasks[TASK], status=status, creator="a@x"
            )
        replica.put_items(late_items(replica.dataset_id or "", 400))
        ops = len(replica.journal())
    return path, ops


def late_items(dataset_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"7{n:023x}",
            "datasetId": dataset_id,
            "type": "file",
            "filename": f"/late/{n}.jpg",
            "metadata": {"system": {}, "user": {"padding": "x" * 500}},
        }
        for n in range(count)
    ]


@pytest.fixture
def damaged(template: tuple[Path, int], tmp_path: Path) -> tuple[Path, Layout, int]:
    source, ops = template
    path = tmp_path / "replica.db"
    shutil.copyfile(source, path)
    return path, Layout(path), ops


def overwrite_pages(path: Path, layout: Layout, pages: list[int]) -> None:
    noise = bytes(range(256)) * (layout.page_size // 256)
    with path.open("r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * layout.page_size)
            handle.write(noise)


def plain_journal(path: Path, *, writable_schema: bool = False) -> list[tuple]:
    """Read the journal with plain sqlite3, read-only, by a scan of its table."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if writable_schema:
            # Lets SQLite open a file shorter than the page count in its header.
            connection.execute("PRAGMA writable_schema = ON")
        return connection.execute(
            "SELECT op_id, seq, state FROM journal ORDER BY rowid"
        ).fetchall()
    finally:
        connection.close()


def invoke(path: Path, *args: str) -> Result:
    """Run ``localsync ARGS --store PATH`` in this process."""
    return CliRunner().invoke(main, [*args, "--store", str(path)])


def logged_ops(path: Path, ops: int) -> list[str]:
    result = invoke(path, "log", "--limit", str(ops + 10))
    assert result.exit_code == 0, result.output[-500:]
    return [line for line in result.stdout.splitlines() if '"opId"' in line]


def check_clean_failure(path: Path, args: list[str], fragment: str) -> None:
    result = invoke(path, *args)
    assert result.exit_code == 1, (args, result.output[-500:])
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("Error: "), result.stderr[-500:]
    assert fragment in result.stderr, result.stderr[-500:]
    assert_no_leak(result.stderr)
    tally.add("replica_file")


def test_damaged_file_error_from_entry_point(
    damaged: tuple[Path, Layout, int],
) -> None:
    """The installed command prints the same single line, with no traceback."""
    path, layout, _ = damaged
    overwrite_pages(path, layout, layout.pages["journal_register"])

    result = run_cli(
        "status", "set", "completed", "--all", "--task", TASK, "--store", str(path)
    )

    assert result.returncode == 1
    assert result.stderr.startswith("Error: SQLite failed on the replica file")
    assert DAMAGED in result.stderr
    assert_no_leak(result.stderr)
    tally.add("replica_file")


def test_corrupt_index_pages_keep_journal_readable(
    damaged: tuple[Path, Layout, int],
) -> None:
    path, layout, ops = damaged
    journal = plain_journal(path)
    overwrite_pages(
        path, layout, [page for name in INDEX_TREES for page in layout.pages[name]]
    )

    assert plain_journal(path) == journal
    assert len(logged_ops(path, ops)) == ops
    for args in (
        ["info"],
        ["status", "set", "completed", "--all", "--task", TASK],
    ):
        check_clean_failure(path, args, DAMAGED)
    assert plain_journal(path) == journal


def test_garbage_last_pages_keep_journal_readable(
    damaged: tuple[Path, Layout, int],
) -> None:
    path, layout, ops = damaged
    keep = layout.last_page_of(LOG_TREES)
    assert keep < layout.page_count - 10
    journal = plain_journal(path)
    overwrite_pages(path, layout, list(range(keep + 1, layout.page_count + 1)))

    assert plain_journal(path) == journal
    assert len(logged_ops(path, ops)) == ops
    check_clean_failure(path, ["items"], DAMAGED)
    check_clean_failure(
        path, ["status", "set", "discard", "--all", "--task", TASK], DAMAGED
    )


def test_missing_last_pages_give_clear_error(
    damaged: tuple[Path, Layout, int],
) -> None:
    path, layout, ops = damaged
    keep = layout.last_page_of(LOG_TREES)
    journal = plain_journal(path)
    os.truncate(path, keep * layout.page_size)

    for args in (
        ["log"],
        ["info"],
        ["status", "set", "completed", "--all", "--task", TASK],
    ):
        check_clean_failure(path, args, UNOPENABLE)
    # With writable_schema on, SQLite opens the shorter file and reads the journal.
    assert plain_journal(path, writable_schema=True) == journal
    assert len(journal) == ops


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("half", UNOPENABLE),
        ("header", "is not a localsync replica (not an SQLite database)"),
        ("schema", UNOPENABLE),
        ("100 bytes", UNOPENABLE),
    ],
)
def test_broken_file_gives_clear_error(
    damaged: tuple[Path, Layout, int], damage: str, fragment: str
) -> None:
    path, layout, _ = damaged
    if damage == "half":
        os.truncate(path, layout.page_count * layout.page_size // 2)
    elif damage == "header":
        with path.open("r+b") as handle:
            handle.write(b"not a database header")
    elif damage == "schema":
        with path.open("r+b") as handle:
            handle.seek(100)
            handle.write(b"\xff" * (layout.page_size - 100))
    else:
        os.truncate(path, 100)
    size = path.stat().st_size

    for args in (["log"], ["sync"], ["status", "clear", "--all", "--task", TASK]):
        check_clean_failure(path, args, fragment)
    assert path.stat().st_size == size


# A full disk


# Runs the CLI with the replica connection capped at ``extra`` more pages, which
# makes SQLite fail with SQLITE_FULL ("database or disk is full") as a full disk does.
FULL_DISK_CLI = """
import sys
import localsync.store.connection as connection

extra = int(sys.argv.pop(1))
original = connection._open

def capped(path):
    conn = original(path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + extra}")
    return conn

connection._open = capped
from localsync.cli import main
sys.argv[0] = "localsync"
main()
"""


def test_full_disk_during_pull_fails_cleanly(tmp_path: Path) -> None:
    world = make_world(tmp_path, 40)
    try:
        replica = world.clone()
        set_statuses(replica, world.task["id"], world.item_ids[:10], "completed")
        path = replica.path
        replica.close()
        seed_dataset(
            world.storage,
            synthetic_records(3000, folder="/more", prefix="6"),
            dataset=DATASET,
            project=PROJECT,
        )

        full = subprocess.run(
            [sys.executable, "-c", FULL_DISK_CLI, "40", "sync", "--store", str(path)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
            check=False,
        )

        assert full.returncode == 1, full.stderr[-800:]
        assert "database or disk is full; free disk space" in full.stderr
        assert_no_leak(full.stderr)
        with Replica(path) as after_full:
            states = journal_states(after_full)
            assert sum(states.values()) == 10
            assert set(states) <= {"pending", "applied"}
        assert invoke(path, "log").exit_code == 0

        resumed = run_cli("sync", "--store", str(path))

        assert resumed.returncode == 0, resumed.stderr
        with Replica(path) as replica:
            assert journal_states(replica) == {"applied": 10}
            files = replica.conn.execute(
                "SELECT COUNT(*) FROM items WHERE json_extract(json, '$.type') = 'file'"
            ).fetchone()[0]
        assert files == 3040
        assert world.server_count("SELECT COUNT(*) FROM pushed_ops") == 10
        tally.add("replica_file")
        tally.add("disk_full_survived")
    finally:
        world.runner.close()

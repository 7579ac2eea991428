"""The replica commands through click's runner: output, formats, errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import localsync as dl
from localsync.cli import main
from localsync.schema_files import schema_dir
from localsync.store import SCHEMA_VERSION
from tests.test_api_session import jwt
from tests.test_api_support import ACTIONS, FILES, journal_rows, stored_ids

MERINO_FILTER = '{"filter": {"$and": [{"dir": "/Merino"}]}}'
ALL_COMMANDS = [
    ["import"],
    ["task"],
    ["task", "create"],
    ["items"],
    ["status"],
    ["status", "set"],
    ["status", "clear"],
    ["tasks"],
    ["log"],
    ["info"],
]


def run(*args: str, store: Path | None = None) -> Result:
    options = ["--store", str(store)] if store is not None else []
    return CliRunner().invoke(main, [*args, *options], catch_exceptions=False)


def check_schema(name: str, document: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((schema_dir() / "cli" / name).read_text())
    jsonschema.validate(document, schema)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Path:
    """A replica made by the CLI: the real exports and a task over all files."""
    path = tmp_path_factory.mktemp("cli") / "replica.db"
    imported = run(
        "import", str(exports_dir), "--project", "p", "--dataset", "d", store=path
    )
    assert imported.exit_code == 0, imported.output
    check_schema("import.json", json.loads(imported.stdout))
    statuses = [arg for action in ACTIONS for arg in ("--status", action)]
    created = run(
        "task",
        "create",
        "--name",
        "review",
        *statuses,
        "--assignee",
        "ann@example.com",
        store=path,
    )
    assert created.exit_code == 0, created.output
    check_schema("task-create.json", json.loads(created.stdout))
    return path


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "replica.db"
    shutil.copyfile(template, path)
    return path


def items_with(store: Path, status: str) -> set[str]:
    """Return the ids of items whose review task ref has ``status``, via the CLI."""
    task_id = json.loads(run("tasks", store=store).stdout)[0]["id"]
    query = {
        "metadata.system.refs": {
            "$match": {
                "id": task_id,
                "type": "task",
                "metadata": {"status": {"$in": [status]}},
            }
        }
    }
    result = run("items", "--filter-json", json.dumps(query), store=store)
    assert result.exit_code == 0, result.output
    return {item["id"] for item in json.loads(result.stdout)}


def assert_user_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Usage:" if code == 2 else "Error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_items_merino_folder(store: Path) -> None:
    result = run("items", "--filter-json", MERINO_FILTER, store=store)
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert len(items) == 420
    assert {item["dir"] for item in items} == {"/Merino"}
    check_schema("items.json", items)


def test_items_default_filter_and_limit(store: Path) -> None:
    everything = json.loads(run("items", "--page-size", "300", store=store).stdout)
    assert len(everything) == len(stored_ids(store, FILES))
    assert len({item["id"] for item in everything}) == len(everything)
    limited = json.loads(run("items", "--limit", "5", store=store).stdout)
    assert [item["id"] for item in limited] == [item["id"] for item in everything[:5]]
    assert json.loads(run("items", "--limit", "0", store=store).stdout) == []


def test_items_csv_and_table(store: Path) -> None:
    item_id = min(stored_ids(store, FILES))
    run("status", "set", "approved", "--item", item_id, store=store)
    result = run("items", "--format", "csv", "--task", "review", store=store)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["id", "filename", "review"]
    assert len(rows) == len(stored_ids(store, FILES))
    assert {row["id"]: row["review"] for row in rows}[item_id] == "approved"

    table = run("items", "--format", "table", "--limit", "2", store=store).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["id", "filename", "review"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 4


def test_items_task_with_custom_filter(store: Path, tmp_path: Path) -> None:
    created = run(
        "task",
        "create",
        "--name",
        "sheep",
        "--filter-json",
        '{"$and": [{"type": "file"}, {"dir": "/Suffolk"}]}',
        store=store,
    )
    assert json.loads(created.stdout)["items"] == 420
    result = run(
        "items",
        "--task",
        "sheep",
        "--filter-json",
        '{"$or": [{"dir": "/Suffolk"}, {"dir": "/Merino"}]}',
        store=store,
    )
    assert {item["dir"] for item in json.loads(result.stdout)} == {"/Suffolk"}


def test_status_set_single_item(store: Path) -> None:
    item_id = min(stored_ids(store, FILES))
    result = run(
        "status", "set", "completed", "--item", item_id, "--task", "review", store=store
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    check_schema("status-result.json", body)
    assert body["changedItemIds"] == [item_id]
    assert items_with(store, "completed") == {item_id}
    assert [row["op_id"] for row in journal_rows(store)] == body["opIds"]


def test_status_set_text_is_one_line(store: Path) -> None:
    files = stored_ids(store, FILES)
    first = run(
        "status",
        "set",
        "discard",
        "--all",
        "--task",
        "review",
        "--format",
        "text",
        store=store,
    )
    again = run(
        "status",
        "set",
        "discard",
        "--all",
        "--task",
        "review",
        "--format",
        "text",
        store=store,
    )
    cleared = run(
        "status", "clear", "--all", "--task", "review", "--format", "text", store=store
    )

    assert first.exit_code == 0, first.output
    count = len(files)
    assert first.stdout == (
        f"discard: {count} ops journaled ({count} changed, 0 re-asserted, 0 skipped).\n"
    )
    assert f"(0 changed, {count} re-asserted, 0 skipped)" in again.stdout
    assert cleared.stdout.startswith(f"cleared: {count} ops journaled")
    assert len(journal_rows(store)) == 3 * count


def test_status_set_all_then_clear(store: Path) -> None:
    files = stored_ids(store, FILES)
    result = run("status", "set", "discard", "--all", "--task", "review", store=store)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"] == len(files)
    assert items_with(store, "discard") == files

    tasks = json.loads(run("tasks", store=store).stdout)
    check_schema("tasks.json", tasks)
    assert tasks[0]["statusCounts"] == {"discard": len(files)}
    assert tasks[0]["noStatus"] == 0

    cleared = run("status", "clear", "--all", "--task", "review", store=store)
    body = json.loads(cleared.stdout)
    check_schema("status-result.json", body)
    assert body["status"] is None
    assert items_with(store, "discard") == set()
    assert json.loads(run("tasks", store=store).stdout)[0]["noStatus"] == len(files)


def test_status_set_by_filter(store: Path) -> None:
    result = run(
        "status", "set", "approved", "--filter-json", MERINO_FILTER, store=store
    )
    assert result.exit_code == 0, result.output
    merino = stored_ids(store, "json_extract(json, '$.dir') = '/Merino'")
    assert items_with(store, "approved") == merino


def test_status_set_skips_missing_in_bulk(store: Path) -> None:
    item_id = min(stored_ids(store, FILES))
    result = run(
        "status",
        "set",
        "completed",
        "--item",
        item_id,
        "--item",
        "f" * 24,
        "--task",
        "review",
        store=store,
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["skippedItems"] == [{"itemId": "f" * 24, "reason": "item not found"}]
    assert "Warning: 1 item skipped; see skippedItems." in result.stderr
    assert len(journal_rows(store)) == 1


def test_unknown_status_lists_allowed(store: Path) -> None:
    before = journal_rows(store)
    result = run("status", "set", "bogus", "--all", "--task", "review", store=store)
    assert_user_error(result, 1, "'bogus'", "use one of: completed, approved, discard")
    assert journal_rows(store) == before


def test_missing_item_is_error(store: Path) -> None:
    result = run("status", "set", "completed", "--item", "f" * 24, store=store)
    assert_user_error(result, 1, "Item not found", "f" * 24, "'localsync items'")
    assert journal_rows(store) == []


@pytest.mark.parametrize(
    "command",
    [
        ["status", "set", "completed", "--task", "nosuch", "--all"],
        ["status", "clear", "--task", "nosuch", "--item", "x", "--item", "y"],
        ["items", "--task", "nosuch"],
        ["items", "--task", "nosuch", "--filter-json", MERINO_FILTER],
    ],
)
def test_unknown_task_name_is_error(store: Path, command: list[str]) -> None:
    result = run(*command, store=store)
    assert_user_error(
        result,
        1,
        "Error: Task 'nosuch' not found in this replica; "
        "list the tasks with 'localsync tasks'",
    )
    assert "Annotation task not found" not in result.stderr
    assert journal_rows(store) == []


def test_unknown_parent_task_is_error(store: Path) -> None:
    result = run(
        "task",
        "create",
        "--name",
        "qa",
        "--type",
        "qa",
        "--parent-task",
        "nosuch",
        store=store,
    )
    assert_user_error(
        result, 1, "Parent task 'nosuch' not found in this replica", "localsync tasks"
    )
    assert [task["name"] for task in json.loads(run("tasks", store=store).stdout)] == [
        "review"
    ]


def test_three_tasks_needs_task(store: Path) -> None:
    merino = '{"$and": [{"type": "file"}, {"dir": "/Merino"}]}'
    for name in ("merino-a", "merino-b"):
        assert (
            run(
                "task", "create", "--name", name, "--filter-json", merino, store=store
            ).exit_code
            == 0
        )
    item_id = min(stored_ids(store, "json_extract(json, '$.dir') = '/Merino'"))
    single = run("status", "set", "completed", "--item", item_id, store=store)
    assert_user_error(single, 1, "must provide assignment_id or task_id")
    bulk = run(
        "status", "set", "completed", "--filter-json", MERINO_FILTER, store=store
    )
    assert_user_error(bulk, 1, "must provide assignment_id or task_id", "pass a task")
    assert journal_rows(store) == []

    given = run(
        "status",
        "set",
        "completed",
        "--item",
        item_id,
        "--task",
        "merino-a",
        store=store,
    )
    assert given.exit_code == 0, given.output


@pytest.mark.parametrize(
    ("command", "filter_json", "code", "fragment"),
    [
        (["status", "set", "completed"], "{not json", 2, "not JSON"),
        (["status", "set", "completed"], "[1, 2]", 2, "expected a JSON object"),
        (
            ["status", "set", "completed"],
            '{"$and": [{"dir": {"$near": 1}}]}',
            1,
            "$near",
        ),
        (["status", "set", "completed"], '{"filter": 3}', 1, "'filter' must be"),
        (["items"], "{not json", 2, "not JSON"),
        (["items"], '{"$and": [{"dir": {"$near": 1}}]}', 1, "$near"),
        (["task", "create", "--name", "x"], "nope", 2, "not JSON"),
    ],
)
def test_bad_filter_json(
    store: Path, command: list[str], filter_json: str, code: int, fragment: str
) -> None:
    before = journal_rows(store)
    result = run(*command, "--filter-json", filter_json, store=store)
    assert_user_error(result, code, fragment)
    assert "--filter-json" in result.stderr or code == 1
    assert journal_rows(store) == before
    assert len(json.loads(run("tasks", store=store).stdout)) == 1


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--all"], "--all needs --task"),
        ([], "exactly one of --item, --filter-json or --all"),
        (["--all", "--task", "review", "--item", "x"], "exactly one of"),
    ],
)
def test_status_target_usage(store: Path, arguments: list[str], fragment: str) -> None:
    result = run("status", "set", "completed", *arguments, store=store)
    assert_user_error(result, 2, fragment)
    assert journal_rows(store) == []


def bad_replicas(tmp_path: Path) -> list[tuple[Path, str]]:
    missing = tmp_path / "absent.db"
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    return [
        (missing, "does not exist"),
        (text, "not an SQLite database"),
        (newer, f"schema version {SCHEMA_VERSION + 1}"),
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["items"],
        ["status", "set", "completed", "--all", "--task", "t"],
        ["info"],
        ["tasks"],
        ["log"],
    ],
)
def test_bad_replica_file(tmp_path: Path, command: list[str]) -> None:
    for path, fragment in bad_replicas(tmp_path):
        before = file_state(path)
        result = run(*command, store=path)
        assert_user_error(result, 1, fragment, str(path))
        assert file_state(path) == before


def file_state(path: Path) -> Any:
    """Return what a failed open must leave unchanged: the text, or schema and tables.

    NOTE: opening a replica of a newer schema version switches it to WAL mode before
    the version check, which rewrites two header bytes, so SQLite files are compared
    by version and tables.
    """
    if not path.exists():
        return None
    if not path.read_bytes().startswith(b"SQLite format 3"):
        return path.read_bytes()
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
    finally:
        conn.close()
    return version, tables


def test_log_newest_first(store: Path) -> None:
    first, second = sorted(stored_ids(store, FILES))[:2]
    run("status", "set", "completed", "--item", first, store=store)
    run("status", "set", "approved", "--item", second, store=store)
    ops = json.loads(run("log", store=store).stdout)
    check_schema("log.json", ops)
    assert [(op["itemId"], op["status"]) for op in ops] == [
        (second, "approved"),
        (first, "completed"),
    ]
    assert {op["state"] for op in ops} == {"pending"}
    assert ops[0]["taskName"] == "review"
    assert len(json.loads(run("log", "--limit", "1", store=store).stdout)) == 1
    assert json.loads(run("log", "--state", "applied", store=store).stdout) == []
    rows = list(
        csv.DictReader(io.StringIO(run("log", "--format", "csv", store=store).stdout))
    )
    assert [row["seq"] for row in rows] == ["2", "1"]


def test_info_reports_replica(store: Path) -> None:
    run(
        "status",
        "set",
        "completed",
        "--item",
        min(stored_ids(store, FILES)),
        store=store,
    )
    expires = int(time.time()) + 3600
    with dl.Replica(store) as api:
        api.login_token(jwt({"exp": expires, "email": "ann@example.com"}))
        api.store.set_setting("remote_url", "http://127.0.0.1:8787")
        api.store.set_setting("clock_offset_ms", -250)
        api.store.set_setting("last_sync_at", 1_733_400_000_123)

    result = run("info", store=store)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    check_schema("info.json", info)
    assert info["dataset"]["name"] == "d"
    assert info["project"]["name"] == "p"
    assert info["pendingOps"] == 1
    assert info["remoteUrl"] == "http://127.0.0.1:8787"
    assert info["clockOffsetMs"] == -250
    assert info["lastSyncAt"] == "2024-12-05T12:00:00.123+00:00"
    assert info["token"]["email"] == "ann@example.com"
    assert info["token"]["expired"] is False
    assert info["token"]["expiresAt"].startswith(
        time.strftime("%Y-", time.gmtime(expires))
    )
    assert "ey" not in json.dumps(info["token"])


def test_task_create_qa(store: Path) -> None:
    item_id = min(stored_ids(store, FILES))
    run("status", "set", "completed", "--item", item_id, store=store)
    result = run(
        "task",
        "create",
        "--name",
        "qa",
        "--type",
        "qa",
        "--parent-task",
        "review",
        store=store,
    )
    assert result.exit_code == 0, result.output
    task = json.loads(result.stdout)
    assert task["type"] == "qa"
    assert task["allowedStatuses"] == ["approved", "discard"]
    assert task["items"] == 1
    duplicate = run("task", "create", "--name", "qa", store=store)
    assert_user_error(duplicate, 1, "already exists")


def test_help_has_examples() -> None:
    for command in ALL_COMMANDS:
        result = run(*command, "-h")
        assert result.exit_code == 0, (command, result.output)
        assert "Example" in result.stdout, command
        if command not in (["task"], ["status"]):
            assert "LOCALSYNC_STORE" in result.stdout, command

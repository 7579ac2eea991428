"""The server's command line: import, task create, token, item delete and serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner, Result

from localsync.cli import main
from localsync.server.sqlite_storage import SQLiteStorage
from tests.server_fixtures import database_fingerprint, synthetic_records

ALL_COMMANDS = [
    ["serve"],
    ["server"],
    ["server", "import"],
    ["server", "task"],
    ["server", "task", "create"],
    ["server", "token"],
    ["server", "item"],
    ["server", "item", "delete"],
    ["server", "new-epoch"],
]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write_records(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        (folder / f"{record['_id']}.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "server.db")


@pytest.fixture
def small_export(tmp_path: Path) -> Path:
    """Ten files in /a (one of them hidden) and four in /b."""
    records = synthetic_records(10, folder="/a", prefix="a") + synthetic_records(
        4, folder="/b", prefix="b"
    )
    records[3]["hidden"] = True
    return write_records(tmp_path / "export", records)


def imported(db: str, folder: Path) -> dict[str, Any]:
    result = run(
        "server", "import", str(folder), "--project", "p", "--dataset", "d", "--db", db
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def create_task(db: str, *args: str) -> Result:
    return run(
        "server",
        "task",
        "create",
        "--project",
        "p",
        "--dataset",
        "d",
        "--db",
        db,
        *args,
    )


def open_storage(db: str) -> SQLiteStorage:
    return SQLiteStorage(db)


# Import.


def test_import_real_exports_twice(db: str, exports_dir: Path) -> None:
    first = imported(db, exports_dir)
    assert first["files"] == 1979
    assert first["items_added"] == 1979 + 6  # and one dir item per folder
    storage = open_storage(db)
    before = database_fingerprint(storage)

    second = imported(db, exports_dir)

    assert second["items_added"] == 0
    assert second["items_changed"] == 0
    assert second["annotations_added"] == 0
    assert second["annotations_changed"] == 0
    assert database_fingerprint(storage) == before
    storage.close()


def test_reimport_keeps_statuses(db: str, small_export: Path) -> None:
    summary = imported(db, small_export)
    assert create_task(db, "--name", "t").exit_code == 0
    storage = open_storage(db)
    task = storage.task_named(summary["dataset"], "t")
    item_id = f"a{0:023x}"
    storage.set_statuses(task["id"], [item_id], "completed", user_email="u@example.com")
    before = database_fingerprint(storage)

    imported(db, small_export)

    assert database_fingerprint(storage) == before
    assert storage.register(item_id, task["id"])["status"] == "completed"
    storage.close()


def test_import_changed_export_updates_item(db: str, tmp_path: Path) -> None:
    records = synthetic_records(2, folder="/a")
    folder = write_records(tmp_path / "export", records)
    imported(db, folder)
    records[0]["itemMetadata"]["user"]["index"] = 99
    write_records(folder, records)

    summary = imported(db, folder)

    assert summary["items_changed"] == 1
    assert summary["items_unchanged"] == 2  # the other file and the /a folder
    storage = open_storage(db)
    assert storage.item(records[0]["_id"])["metadata"]["user"]["index"] == 99
    storage.close()


def test_import_missing_folder(db: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run(
        "server", "import", str(missing), "--project", "p", "--dataset", "d", "--db", db
    )
    assert result.exit_code == 1
    assert "Error: Export folder" in result.output
    assert str(missing) in result.output
    assert not Path(db).exists()


def test_import_bad_file_changes_nothing(db: str, tmp_path: Path) -> None:
    folder = write_records(tmp_path / "export", synthetic_records(3))
    (folder / "zz-broken.json").write_text("{not json")

    result = run(
        "server", "import", str(folder), "--project", "p", "--dataset", "d", "--db", db
    )

    assert result.exit_code == 1
    assert "zz-broken.json" in result.output
    assert not Path(db).exists()


def test_import_empty_dataset_name(db: str, small_export: Path) -> None:
    result = run(
        "server",
        "import",
        str(small_export),
        "--project",
        "p",
        "--dataset",
        " ",
        "--db",
        db,
    )
    assert result.exit_code == 1
    assert "Error: --dataset ' ' is empty" in result.output
    assert not Path(db).exists()


def test_import_into_second_dataset_is_rejected(db: str, small_export: Path) -> None:
    imported(db, small_export)
    result = run(
        "server",
        "import",
        str(small_export),
        "--project",
        "p",
        "--dataset",
        "other",
        "--db",
        db,
    )
    assert result.exit_code == 1
    assert "already belongs to dataset" in result.output


# Task creation.


def task_output(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_task_default_filter_and_round_robin(db: str, small_export: Path) -> None:
    summary = imported(db, small_export)
    task = task_output(
        create_task(
            db,
            "--name", "t",
            "--status", "completed",
            "--status", "approved",
            "--status", "discard",
            "--assignee", "one@example.com",
            "--assignee", "two@example.com",
        )
    )  # fmt: skip

    assert task["totalItems"] == 13  # 14 files, one hidden; folders are not files
    assert [a["action"] for a in task["availableActions"]] == [
        "completed",
        "approved",
        "discard",
    ]
    storage = open_storage(db)
    assignments = [storage.assignment(a) for a in task["assignmentIds"]]
    assert [a["annotator"] for a in assignments] == [
        "one@example.com",
        "two@example.com",
    ]
    assert [a["totalItems"] for a in assignments] == [7, 6]
    query = {"filter": {"$and": [{"type": "file"}]}, "sort": {"id": "ascending"}}
    files = storage.query_items(summary["dataset"], query).items
    in_task = [item for item in files if not item["hidden"]]
    for index, item in enumerate(in_task):
        refs = item["metadata"]["system"]["refs"]
        assert refs == [
            {"type": "task", "id": task["id"]},
            {"type": "assignment", "id": task["assignmentIds"][index % 2]},
        ]
    hidden = next(item for item in files if item["hidden"])
    assert hidden["metadata"]["system"]["refs"] == []
    storage.close()


def test_task_filter_json(db: str, small_export: Path) -> None:
    imported(db, small_export)
    task = task_output(
        create_task(
            db, "--name", "b-only", "--filter-json", '{"$and": [{"dir": "/b"}]}'
        )
    )
    assert task["totalItems"] == 4
    assert "availableActions" not in task


def test_qa_task_takes_items_with_status(db: str, small_export: Path) -> None:
    summary = imported(db, small_export)
    parent = task_output(create_task(db, "--name", "annotate"))
    storage = open_storage(db)
    done = [f"a{0:023x}", f"b{1:023x}"]
    storage.set_statuses(parent["id"], done, "completed", user_email="u@example.com")
    storage.set_statuses(
        parent["id"], [f"a{1:023x}"], "discard", user_email="u@example.com"
    )
    storage.set_statuses(parent["id"], [f"a{1:023x}"], None, user_email="u@example.com")

    qa = task_output(
        create_task(db, "--name", "check", "--type", "qa", "--parent-task", "annotate")
    )

    assert qa["spec"] == {"type": "qa", "parentTaskId": parent["id"]}
    assert qa["totalItems"] == 2
    body = {
        "filter": {"metadata.system.refs.id": qa["id"]},
        "sort": {"id": "ascending"},
    }
    assert [
        item["id"] for item in storage.query_items(summary["dataset"], body).items
    ] == done
    rejected = storage.set_statuses
    with pytest.raises(Exception, match="approved, discard"):
        rejected(qa["id"], done, "completed", user_email="u@example.com")
    storage.close()


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (
            ["--name", "t", "--filter-json", "{oops"],
            2,
            "Invalid value for '--filter-json': not JSON (",
        ),
        (["--name", "t", "--filter-json", "{oops"], 2, "'{oops'"),
        (["--name", "t", "--filter-json", "[1]"], 2, "expected a JSON object"),
        (["--name", "t", "--filter-json", "[1]"], 2, "got '[1]'"),
        (
            ["--name", "t", "--filter-json", '{"filter": 3}'],
            2,
            """'filter' must be a JSON object, got '{"filter": 3}'""",
        ),
        (["--name", "t", "--filter-json", '{"dir": {"$near": 1}}'], 1, "$near"),
        (["--name", "t", "--type", "qa"], 1, "--parent-task"),
        (["--name", "t", "--parent-task", "nope"], 1, "Parent task 'nope' not found"),
        (["--name", "t", "--assignee", "not-an-email"], 1, "not an email"),
        (["--name", "t", "--status", " "], 1, "non-empty"),
        (["--name", "t", "--type", "review"], 2, "review"),
        (["--name", "existing"], 1, "already exists"),
        (["--name", ""], 1, "--name '' is empty"),
    ],
)
def test_task_create_bad_input(
    db: str, small_export: Path, args: list[str], code: int, expected: str
) -> None:
    imported(db, small_export)
    assert create_task(db, "--name", "existing").exit_code == 0
    storage = open_storage(db)
    before = database_fingerprint(storage)

    result = create_task(db, *args)

    assert result.exit_code == code
    assert expected in result.output
    if code == 1:
        assert "Error: " in result.output
    else:
        assert result.stderr.startswith("Usage: ")
    assert database_fingerprint(storage) == before
    storage.close()


def test_task_create_unknown_project(db: str, small_export: Path) -> None:
    imported(db, small_export)
    result = run(
        "server",
        "task",
        "create",
        "--project",
        "q",
        "--dataset",
        "d",
        "--name",
        "t",
        "--db",
        db,
    )
    assert result.exit_code == 1
    assert "Error: Project 'q' not found" in result.output


# Commands that need an existing database.


@pytest.mark.parametrize(
    "command",
    [
        ["server", "token", "--email", "u@example.com", "--project", "p"],
        ["server", "task", "create", "--project", "p", "--dataset", "d"]
        + ["--name", "t"],
        ["server", "item", "delete", "f" * 24],
        ["server", "new-epoch"],
    ],
)
def test_missing_database_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "srever.db"

    result = run(*command, "--db", str(typo))

    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: server database {str(typo)!r} does not exist; create it with "
        "'localsync server import' or check --db\n"
    )
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_missing_database_from_env(tmp_path: Path) -> None:
    typo = tmp_path / "srever.db"
    result = run(
        "server", "token", "--email", "u@example.com", "--project", "p",
        env={"LOCALSYNC_DB": str(typo)},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "does not exist; create it with 'localsync server import'" in result.stderr
    assert not typo.exists()


def test_postgres_url_is_not_checked_as_file() -> None:
    result = run(
        "server", "token", "--email", "u@example.com", "--project", "p",
        "--db", "postgresql://127.0.0.1:9/x",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "does not exist" not in result.stderr
    assert "PostgreSQL" in result.stderr


def test_db_help_shows_env_var() -> None:
    for command in ALL_COMMANDS:
        result = run(*command, "-h")
        assert result.exit_code == 0, result.output
        if command in (["server"], ["server", "task"], ["server", "item"]):
            continue
        text = " ".join(result.stdout.split())
        assert "--db PATH|URL Server database:" in text, command
        assert "[env var: LOCALSYNC_DB; required]" in text, command


def test_help_has_examples() -> None:
    for command in ALL_COMMANDS:
        result = run(*command, "-h")
        assert result.exit_code == 0, result.output
        assert "\n  Example:\n    localsync " in result.stdout, command


def test_help_describes_type_and_workers() -> None:
    task_help = " ".join(run("server", "task", "create", "-h").stdout.split())
    assert "--type [annotation|qa] Task type; it sets the default statuses" in (
        task_help
    )
    serve_help = " ".join(run("serve", "-h").stdout.split())
    assert "--workers INTEGER RANGE Number of uvicorn worker processes." in serve_help
    assert "only with a postgresql:// database" in serve_help


# Tokens.


def test_token_claims(db: str, small_export: Path) -> None:
    summary = imported(db, small_export)
    result = run(
        "server", "token", "--email", "u@example.com", "--project", "p", "--db", db
    )
    assert result.exit_code == 0, result.output
    storage = open_storage(db)
    claims = jwt.decode(
        result.output.strip(), storage.meta().secret, algorithms=["HS256"]
    )
    storage.close()
    assert claims["email"] == "u@example.com"
    assert claims["projects"] == [summary["project"]]
    assert abs(claims["exp"] - time.time() - 30 * 24 * 3600) < 60


def test_token_expires_in_and_secret_override(db: str, small_export: Path) -> None:
    imported(db, small_export)
    result = run(
        "server", "token", "--email", "u@example.com", "--project", "p", "--db", db,
        "--expires-in", "120",
        env={"LOCALSYNC_SECRET": "an-override-secret-of-at-least-32-bytes"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    claims = jwt.decode(
        result.output.strip(),
        "an-override-secret-of-at-least-32-bytes",
        algorithms=["HS256"],
    )
    assert abs(claims["exp"] - time.time() - 120) < 10


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (
            ["--email", "u@example.com", "--project", "nope"],
            1,
            "Project 'nope' not found",
        ),
        (["--email", "nobody", "--project", "p"], 1, "not an email"),
        (["--email", "u@example.com", "--project", "p", "--expires-in", "0"], 2, "0"),
        (["--email", "u@example.com"], 2, "--project"),
    ],
)
def test_token_bad_input(
    db: str, small_export: Path, args: list[str], code: int, expected: str
) -> None:
    imported(db, small_export)
    result = run("server", "token", "--db", db, *args)
    assert result.exit_code == code
    assert expected in result.output


# Item deletion.


def test_item_delete_writes_tombstones(db: str, small_export: Path) -> None:
    summary = imported(db, small_export)
    storage = open_storage(db)
    cursor = storage.pull(summary["dataset"], cursor=0, limit=5000).cursor
    doomed = f"a{2:023x}"

    result = run("server", "item", "delete", doomed, "--db", db)

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"deleted": [doomed]}
    assert storage.item(doomed) is None
    changes = storage.pull(summary["dataset"], cursor=cursor, limit=100).changes
    assert [(c["kind"], c["id"], c["deleted"]) for c in changes] == [
        ("item", doomed, True)
    ]
    storage.close()


def test_item_delete_unknown_changes_nothing(db: str, small_export: Path) -> None:
    imported(db, small_export)
    storage = open_storage(db)
    before = database_fingerprint(storage)

    result = run("server", "item", "delete", f"a{2:023x}", "f" * 24, "--db", db)

    assert result.exit_code == 1
    assert "f" * 24 in result.output
    assert "nothing was deleted" in result.output
    assert database_fingerprint(storage) == before
    storage.close()


# Serving.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_health_and_tokens(
    db: str, small_export: Path, tmp_path: Path
) -> None:
    imported(db, small_export)
    token = run(
        "server", "token", "--email", "u@example.com", "--project", "p", "--db", db
    )
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("LOCALSYNC_SECRET", None)
    command = [str(Path(sys.executable).parent / "localsync"), "serve", "--db", db]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        health = _wait_for(f"{base}/health")
        me = httpx.get(
            f"{base}/users/me",
            headers={"Authorization": f"Bearer {token.output.strip()}"},
        )
        anonymous = httpx.get(f"{base}/users/me")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    log.seek(0)
    output = log.read()

    assert health.status_code == 200
    assert me.status_code == 200
    assert me.json()["email"] == "u@example.com"
    assert anonymous.status_code == 401
    assert "GET /api/v1/health 200" in output
    assert "localsync server 0.1.0 started" in output
    assert "localsync server stopped" in output


def _wait_for(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--db", "postgresql://127.0.0.1:9/x"], "PostgreSQL"),
        (["--db", "{tmp}/no/such/folder/s.db"], "does not exist"),
        (["--db", "{tmp}/s.db", "--ssl-certfile", "{tmp}/cert.pem"], "go together"),
        (
            [
                "--db",
                "{tmp}/s.db",
                "--ssl-certfile",
                "{tmp}/c.pem",
                "--ssl-keyfile",
                "{tmp}/k.pem",
            ],
            "does not exist",
        ),
    ],
)
def test_serve_bad_input(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run("serve", *[arg.replace("{tmp}", str(tmp_path)) for arg in args])
    assert result.exit_code == 1
    assert "Error: " in result.output
    assert expected in result.output


def test_serve_port_in_use_fails_before_start(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [str(Path(sys.executable).parent / "localsync"), "serve"]
        result = subprocess.run(
            [*command, "--db", str(db), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"Error: port {port} on 127.0.0.1 is already in use; pick another --port\n"
    )
    assert "started" not in result.stderr
    assert not db.exists()


def test_serve_invalid_tls_files(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    result = run(
        "serve", "--db", str(tmp_path / "s.db"),
        "--ssl-certfile", str(tmp_path / "c.pem"),
        "--ssl-keyfile", str(tmp_path / "k.pem"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --ssl-certfile ")
    assert "could not be loaded" in result.stderr
    assert not (tmp_path / "s.db").exists()


def test_serve_startup_failure_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    def fail_to_start(*args: Any, **kwargs: Any) -> None:
        # What uvicorn.run does when its server fails to start (uvicorn 0.55).
        raise SystemExit(3)

    monkeypatch.setattr(uvicorn, "run", fail_to_start)
    monkeypatch.delenv("LOCALSYNC_DB", raising=False)
    result = run("serve", "--db", str(tmp_path / "s.db"), "--port", str(free_port()))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the server failed to start; see the error logged above\n"
    )


def test_new_epoch_replaces_epoch(db: str, small_export: Path) -> None:
    from localsync.server.storage import open_storage

    run("server", "import", str(small_export), "--project", "p", "--dataset", "d",
        "--db", db)  # fmt: skip
    storage = open_storage(db)
    before = storage.meta().epoch
    storage.close()

    result = run("server", "new-epoch", "--db", db)

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["previousEpoch"] == before
    assert body["epoch"] != before
    storage = open_storage(db)
    assert storage.meta().epoch == body["epoch"]
    storage.close()

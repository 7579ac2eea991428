"""The sync area of the command line: clone, login, sync (plain, dry run, repeated),
where every bad input gets ``Error: ...`` and changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from localsync.cli import main
from localsync.store import Replica, import_exports
from localsync.sync import SyncEngine, open_remote
from localsync.sync.remote import LocalsyncRemote, PushResponse
from localsync.sync.retry import RemoteUnavailable
from localsync.sync.watch import Watcher
from tests.sync_support import (
    DATASET,
    PROJECT,
    USER,
    World,
    cli_env,
    journal_states,
    localsync_command,
    make_world,
    run_cli,
    set_statuses,
    wait_past_clock,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = make_world(tmp_path_factory.mktemp("cli"), 15)
    yield world
    world.runner.close()


def invoke(*args: str, **env: str) -> Result:
    return CliRunner(env=env or None).invoke(main, list(args))


def clone_args(world: World, store: Path, *extra: str) -> list[str]:
    return [
        "clone",
        world.url,
        "--project",
        PROJECT,
        "--dataset",
        DATASET,
        "--token",
        world.token,
        "--store",
        str(store),
        *extra,
    ]


@pytest.fixture
def store(world: World, tmp_path: Path) -> Path:
    path = tmp_path / "replica.db"
    result = invoke(*clone_args(world, path))
    assert result.exit_code == 0, result.output
    return path


def test_clone_prints_summary_and_progress(world: World, tmp_path: Path) -> None:
    path = tmp_path / "clone.db"
    result = invoke(*clone_args(world, path))

    assert result.exit_code == 0, result.stderr
    assert "Cloned dataset 'sync-dataset' of project 'sync-project'" in result.stdout
    with Replica(path) as replica:
        items = replica.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert f": {items} items" in result.stdout
    assert "Cloning items" not in result.stderr, "no progress bar off a terminal"
    assert result.stderr == ""
    assert path.stat().st_mode & 0o777 == 0o600


def test_clone_progress_bar_on_terminal(world: World, tmp_path: Path) -> None:
    path = tmp_path / "tty.db"
    primary, secondary = os.openpty()
    chunks: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO once the process exited and its end is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        process = subprocess.run(
            localsync_command(*clone_args(world, path)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
            env=cli_env(),
            timeout=120,
            check=False,
        )
    finally:
        os.close(secondary)
    reader.join(timeout=10)
    os.close(primary)

    terminal = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, terminal
    assert "Cloning items" in terminal
    assert b"Cloned dataset 'sync-dataset'" in process.stdout


def test_clone_accepts_api_prefix_and_env_token(world: World, tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    result = invoke(
        "clone",
        f"{world.url}/api/v1/",
        "--project",
        PROJECT,
        "--dataset",
        DATASET,
        "--store",
        str(path),
        LOCALSYNC_TOKEN=world.token,
    )

    assert result.exit_code == 0, result.stderr
    with Replica(path) as replica:
        assert replica.setting("token") == world.token
        assert replica.setting("remote_url") == f"{world.url}/api/v1"


def test_clone_again_resumes_same_file(world: World, store: Path) -> None:
    world.rest_set_status([world.item_ids[0]], "approved")
    result = invoke(*clone_args(world, store))

    assert result.exit_code == 0, result.stderr
    assert ": 0 items, 1 change in 1 page." in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"url": "ftp://127.0.0.1:1"},
            "Remote URL 'ftp://127.0.0.1:1' is invalid; use http[s]://HOST:PORT",
        ),
        ({"url": "http://127.0.0.1:1/other"}, "is invalid"),
        ({"url": "http://127.0.0.1:notaport"}, "invalid port"),
        ({"token": "not-a-jwt"}, "Token is not a JWT"),
        ({"project": "missing-project"}, "Project 'missing-project' not found"),
        (
            {"dataset": "missing-dataset"},
            "Dataset 'missing-dataset' not found in project 'sync-project' on ",
        ),
    ],
)
def test_clone_bad_input_creates_nothing(
    world: World, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    values = {
        "url": world.url,
        "project": PROJECT,
        "dataset": DATASET,
        "token": world.token,
    } | change
    path = tmp_path / "bad.db"

    result = invoke(
        "clone",
        values["url"],
        "--project",
        values["project"],
        "--dataset",
        values["dataset"],
        "--token",
        values["token"],
        "--store",
        str(path),
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert not path.exists()


def test_clone_rejected_token_names_fix(world: World, tmp_path: Path) -> None:
    forged = world.token[:-4] + ("AAAA" if not world.token.endswith("AAAA") else "BBBB")
    path = tmp_path / "x.db"
    result = invoke(
        *clone_args(world, path)[:-4], "--token", forged, "--store", str(path)
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "returned 401" in result.stderr
    assert "pass a valid token with --token (or LOCALSYNC_TOKEN)" in result.stderr
    assert "'localsync server token" in result.stderr
    assert "localsync login" not in result.stderr, "clone made no replica to log in"
    assert not path.exists()


def test_clone_unreachable_remote_names_clone(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    result = invoke(
        "clone",
        "http://127.0.0.1:1",
        "--project",
        PROJECT,
        "--dataset",
        DATASET,
        "--token",
        "eyJhbGciOiJIUzI1NiJ9.eyJlbWFpbCI6ImFAZXhhbXBsZS5jb20ifQ.c2ln",
        "--store",
        str(path),
        "--max-attempts",
        "2",
        "--max-wait",
        "0",
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "failed after 2 attempts" in result.stderr
    assert "check that the remote is up and run the clone again" in result.stderr
    assert "run the sync again" not in result.stderr
    assert not path.exists()


def test_clone_without_token_is_usage_error(world: World, tmp_path: Path) -> None:
    result = invoke(
        "clone",
        world.url,
        "--project",
        PROJECT,
        "--dataset",
        DATASET,
        "--store",
        str(tmp_path / "x.db"),
    )
    assert result.exit_code == 2
    assert "Missing option '--token'" in result.stderr


def test_clone_into_replica_of_other_dataset_fails(
    world: World, tmp_path: Path, exports_dir: Path
) -> None:
    path = tmp_path / "other.db"
    import_exports(exports_dir / "SheepFace", store=path, project="p", dataset="sheep")
    with Replica(path) as replica:
        before = replica.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    result = invoke(*clone_args(world, path))

    assert result.exit_code == 1
    assert "already holds dataset 'sheep'" in result.stderr
    assert "another --store path" in result.stderr
    with Replica(path) as replica:
        assert (
            replica.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == before
        )
        assert replica.setting("remote_url") is None


def other_token(world: World, email: str) -> str:
    from localsync.server.auth import issue_token

    return issue_token(
        world.storage.meta().secret, email=email, project_ids=[world.project["id"]]
    )


def test_login_replaces_token(world: World, store: Path) -> None:
    new_token = other_token(world, USER)
    result = invoke("login", "--token", new_token, "--store", str(store))

    assert result.exit_code == 0, result.stderr
    assert USER in result.stdout
    with Replica(store) as replica:
        assert replica.setting("token") == new_token
        assert replica.setting("user_email") == USER


def test_login_as_other_user_fails(world: World, store: Path) -> None:
    with Replica(store) as replica:
        old_token = replica.setting("token")

    result = invoke(
        "login",
        "--token",
        other_token(world, "second@example.com"),
        "--store",
        str(store),
    )

    assert result.exit_code == 1
    assert f"belongs to {USER}" in result.stderr
    assert "clone into a new file for second@example.com" in result.stderr
    with Replica(store) as replica:
        assert replica.setting("token") == old_token
        assert replica.setting("user_email") == USER


def test_clone_over_other_users_replica_fails(world: World, store: Path) -> None:
    with Replica(store) as replica:
        set_statuses(replica, world.task["id"], world.item_ids[10:11], "discard")
        before = journal_states(replica)
    args = clone_args(world, store)
    args[args.index("--token") + 1] = other_token(world, "second@example.com")

    result = invoke(*args)

    assert result.exit_code == 1
    assert f"belongs to {USER}" in result.stderr
    with Replica(store) as replica:
        assert replica.setting("user_email") == USER
        assert journal_states(replica) == before


def test_login_bad_token_keeps_old(world: World, store: Path) -> None:
    result = invoke("login", "--token", "abc.def", "--store", str(store))

    assert result.exit_code == 1
    assert "Token is not a JWT" in result.stderr
    with Replica(store) as replica:
        assert replica.setting("token") == world.token


def test_sync_prints_summary(world: World, store: Path) -> None:
    with Replica(store) as replica:
        set_statuses(replica, world.task["id"], world.item_ids[:3], "completed")
    # A pull leaves out the replica's own writes, so only these two come back.
    world.rest_set_status([world.item_ids[10], world.item_ids[13]], "discard")

    result = invoke("sync", "--store", str(store))

    assert result.exit_code == 0, result.stderr
    assert "Pushed 3 ops: 3 applied, 0 superseded, 0 rejected." in result.stdout
    assert "Pulled 2 changes in 1 page." in result.stdout


def test_sync_singular_counts(world: World, store: Path) -> None:
    with Replica(store) as replica:
        set_statuses(replica, world.task["id"], world.item_ids[12:13], "approved")
    world.rest_set_status([world.item_ids[13]], "completed")

    result = invoke("sync", "--store", str(store))

    assert result.exit_code == 0, result.stderr
    assert "Pushed 1 op: 1 applied, 0 superseded, 0 rejected." in result.stdout
    assert "Pulled 1 change in 1 page." in result.stdout


def test_sync_remote_down_keeps_pending_ops(world: World, store: Path) -> None:
    with Replica(store) as replica:
        set_statuses(replica, world.task["id"], world.item_ids[3:6], "discard")
        replica.set_setting("remote_url", "http://127.0.0.1:9/api/v1")

    result = invoke(
        "sync", "--store", str(store), "--max-attempts", "2", "--max-wait", "0"
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "failed after 2 attempts" in result.stderr
    assert "the 3 pending ops are kept in the journal" in result.stderr
    with Replica(store) as replica:
        assert journal_states(replica) == {"pending": 3}


def test_conflicts_empty_lists_say_none(store: Path) -> None:
    result = invoke("conflicts", "--store", str(store))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "No conflicts: no local op lost to a newer write.",
        "No rejected ops.",
    ]


def test_sync_without_remote_fails(tmp_path: Path, exports_dir: Path) -> None:
    path = tmp_path / "offline.db"
    import_exports(exports_dir / "FruitImage", store=path, project="p", dataset="fruit")

    result = invoke("sync", "--store", str(path))

    assert result.exit_code == 1
    assert "has no remote" in result.stderr
    assert "'localsync clone'" in result.stderr


def test_sync_missing_store_fails(tmp_path: Path) -> None:
    result = invoke("sync", "--store", str(tmp_path / "none.db"))
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_dry_run_lists_winners_and_losers(world: World, store: Path) -> None:
    task_id = world.task["id"]
    winner, loser = world.item_ids[5], world.item_ids[6]
    with Replica(store) as replica:
        set_statuses(replica, task_id, [winner], "completed")
        # Stamp the loser in the past, so the online write below is surely newer.
        replica.set_setting("clock_offset_ms", -60_000)
        set_statuses(replica, task_id, [loser], "discard")
        # A newer online write, which the replica learns of by a pull alone.
        wait_past_clock(replica)
        world.rest_set_status([loser], "approved")
        with open_remote(replica) as remote:
            SyncEngine(replica, remote).pull()
    requests = world.server_count("SELECT COUNT(*) FROM pushed_ops")

    result = invoke("sync", "--dry-run", "--store", str(store), "--format", "json")

    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["wouldPush"] == 2
    assert plan["wouldLose"] == 1
    verdicts = {op["itemId"]: op["verdict"] for op in plan["ops"]}
    assert verdicts == {winner: "wins", loser: "loses"}
    assert world.server_count("SELECT COUNT(*) FROM pushed_ops") == requests
    with Replica(store) as replica:
        assert journal_states(replica)["pending"] == 2

    text = invoke("sync", "--dry-run", "--store", str(store))
    assert "Would push 2 ops" in text.stdout
    assert "(1 would lose" in text.stdout


def test_dry_run_with_watch_is_usage_error(store: Path) -> None:
    result = invoke("sync", "--dry-run", "--watch", "--store", str(store))
    assert result.exit_code == 2
    assert "--dry-run sends nothing" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--interval", "0"),
        ("--max-attempts", "0"),
        ("--batch-size", "1001"),
        ("--format", "xml"),
    ],
)
def test_sync_bad_option_is_usage_error(store: Path, option: str, value: str) -> None:
    result = invoke("sync", option, value, "--store", str(store))
    assert result.exit_code == 2
    assert option in result.stderr


def test_interval_repeats_plain_sync(world: World, store: Path, tmp_path: Path) -> None:
    output = tmp_path / "reports.jsonl"

    def reports() -> list[dict[str, int]]:
        return [json.loads(line) for line in output.read_text().splitlines()]

    with output.open("w") as handle:
        process = subprocess.Popen(
            localsync_command(
                "sync", "--interval", "0.5", "--format", "json", "--store", str(store)
            ),
            env=cli_env(),
            stdout=handle,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: len(reports()) >= 1, "the first sync")
        with Replica(store) as replica:
            set_statuses(replica, world.task["id"], [world.item_ids[9]], "discard")
        wait_for(
            lambda: world.server_statuses().get(world.item_ids[9]) == "discard",
            "a later sync pushing the op",
        )
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)

    assert process.returncode == 0, err
    assert len(reports()) >= 2
    assert sum(report["applied"] for report in reports()) == 1


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def test_history_falls_back_to_journal(world: World, store: Path) -> None:
    item_id = world.item_ids[11]
    with Replica(store) as replica:
        set_statuses(replica, world.task["id"], [item_id], "approved")
        replica.set_setting("remote_url", "http://127.0.0.1:9/api/v1")

    result = invoke("history", item_id, "--store", str(store), "--timeout", "1")

    assert result.exit_code == 0, result.stderr
    assert "history is unavailable" in result.stderr
    assert f"1 write of item {item_id}, oldest first:" in result.stdout
    assert "approved" in result.stdout


def test_history_of_unknown_item_fails(store: Path) -> None:
    result = invoke("history", "f" * 24, "--store", str(store), "--timeout", "1")

    assert result.exit_code == 1
    assert "not found in this replica" in result.stderr


def test_one_conflict_in_singular(world: World, store: Path) -> None:
    loser = world.item_ids[14]
    with Replica(store) as replica:
        # Stamp the op in the past, so the online write below is surely newer.
        replica.set_setting("clock_offset_ms", -60_000)
        set_statuses(replica, world.task["id"], [loser], "discard")
        wait_past_clock(replica)
    world.rest_set_status([loser], "approved")

    synced = invoke("sync", "--store", str(store))
    listed = invoke("conflicts", "--store", str(store))

    assert synced.exit_code == 0, synced.stderr
    assert "1 new conflict; list them with 'localsync conflicts'." in synced.stdout
    assert listed.exit_code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "1 conflict (local ops that lost to a newer write):"
    assert loser in lines[2]
    assert lines[-1] == "No rejected ops."


@pytest.mark.parametrize(
    "command",
    ["clone", "login", "sync", "conflicts", "retry", "revert", "drop", "history"],
)
def test_help_has_example(command: str) -> None:
    result = invoke(command, "-h")

    assert result.exit_code == 0, result.output
    assert "\n  Example:\n    localsync " in result.stdout
    assert "LOCALSYNC_STORE" in result.stdout


# Watch mode: logging, counters and the closing summary.


def test_watch_quiet_without_verbose_and_summary(
    world: World, store: Path, tmp_path: Path
) -> None:
    task_id = world.task["id"]
    with Replica(store) as replica:
        # Pending before the watch starts: its first sync pushes them.
        set_statuses(replica, task_id, world.item_ids[:4], "completed")
    stdout, stderr = tmp_path / "watch.out", tmp_path / "watch.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            localsync_command(
                "sync", "--watch", "--interval", "300", "--store", str(store)
            ),
            env=cli_env(),
            stdout=out,
            stderr=err,
        )
        try:
            wait_for(lambda: "Pushed 4 ops" in stdout.read_text(), "the first sync")
            with Replica(store) as replica:
                set_statuses(replica, task_id, world.item_ids[4:6], "discard")
            wait_for(
                lambda: world.server_statuses().get(world.item_ids[5]) == "discard",
                "the push of a journal write",
            )
            wait_for(lambda: "Pushed 2 ops" in stdout.read_text(), "the push report")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    assert process.returncode == 0, stderr.read_text()
    assert stderr.read_text() == "", "only warnings and errors log without -v"
    last = stdout.read_text().splitlines()[-1]
    assert last.startswith("Watch stopped by SIGTERM: 1 sync, "), last
    assert last.endswith(", 6 ops pushed, 0 ops still pending."), last


def test_watch_summary_as_json(world: World, store: Path, tmp_path: Path) -> None:
    stdout = tmp_path / "watch.jsonl"
    with stdout.open("w") as out:
        process = subprocess.Popen(
            localsync_command(
                "sync", "--watch", "--format", "json", "--store", str(store)
            ),
            env=cli_env(),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: stdout.read_text().count("\n") >= 1, "the first sync")
        with Replica(store) as replica:
            replica.set_setting("remote_url", "http://127.0.0.1:9/api/v1")
            set_statuses(replica, world.task["id"], world.item_ids[7:8], "approved")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)

    assert process.returncode == 0, err
    lines = [json.loads(line) for line in stdout.read_text().splitlines()]
    assert lines[0]["kind"] == "sync"
    summary = lines[-1]
    assert summary["kind"] == "stopped"
    assert summary["signal"] == "SIGINT"
    assert summary["syncs"] == 1
    assert summary["opsPushed"] == 0
    assert summary["pending"] == 1


@pytest.mark.parametrize(
    ("verbosity", "engine_lines", "request_lines"),
    [("-v", True, False), ("-vv", True, True)],
)
def test_verbosity_controls_request_logs(
    world: World, store: Path, verbosity: str, engine_lines: bool, request_lines: bool
) -> None:
    result = run_cli(verbosity, "sync", "--store", str(store))

    assert result.returncode == 0, result.stderr
    assert ("INFO localsync.sync.engine: sync round" in result.stderr) is engine_lines
    assert ("httpx: HTTP Request: " in result.stderr) is request_lines


class FailingSecondPush(LocalsyncRemote):
    """A real remote whose every push after the first raises ``RemoteUnavailable``."""

    pushes = 0

    def push(self, **kwargs: Any) -> PushResponse:
        FailingSecondPush.pushes += 1
        if FailingSecondPush.pushes > 1:
            raise RemoteUnavailable("POST /sync/push failed after 1 attempt: test")
        return super().push(**kwargs)


def test_watch_counts_batches_of_failed_run(world: World, store: Path) -> None:
    with Replica(store) as replica:
        set_statuses(replica, world.task["id"], world.item_ids[:5], "completed")
    FailingSecondPush.pushes = 0
    stop = threading.Event()
    with Replica(store) as replica:
        watcher = Watcher(
            replica,
            lambda: FailingSecondPush(
                replica.setting("remote_url"), replica.setting("token")
            ),
            interval=300,
            stop=stop,
            engine_options={"batch_size": 2},
        )
        thread = threading.Thread(target=watcher.run)
        thread.start()
        wait_for(lambda: watcher.stats.failures >= 1, "the failed sync")
        stop.set()
        thread.join(timeout=30)
        stats = watcher.stats

    assert not thread.is_alive()
    assert stats.syncs == 0
    assert stats.ops_pushed == 2, "the first batch was pushed before the failure"
    assert stats.pending == 3
    assert stats.describe() == (
        "0 syncs, 0 push-only runs, 2 ops pushed, 3 ops still pending"
    )

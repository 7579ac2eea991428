"""The installed ``localsync`` console script, run as a real process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from localsync.store import SCHEMA_VERSION
from tests.test_api_support import journal_rows

SCRIPT = Path(sys.executable).with_name("localsync")
MERINO_FILTER = '{"filter": {"$and": [{"dir": "/Merino"}]}}'


def localsync(
    *args: str,
    store: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip(f"console script not found at {SCRIPT}; pip install -e .")
    options = ["--store", str(store)] if store is not None else []
    return subprocess.run(
        [str(SCRIPT), *args, *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("process") / "replica.db"
    result = localsync(
        "import", str(exports_dir), "--project", "p", "--dataset", "d", store=path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"] > 0
    created = localsync("task", "create", "--name", "review", store=path)
    assert created.returncode == 0, created.stderr
    return path


def test_import_then_merino_items(imported: Path) -> None:
    result = localsync("items", "--filter-json", MERINO_FILTER, store=imported)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 420


def test_store_from_environment(imported: Path, tmp_path: Path) -> None:
    result = localsync("tasks", cwd=tmp_path, env={"LOCALSYNC_STORE": str(imported)})
    assert result.returncode == 0, result.stderr
    assert [task["name"] for task in json.loads(result.stdout)] == ["review"]


def test_default_store_missing(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "LOCALSYNC_STORE"}
    result = subprocess.run(
        [str(SCRIPT), "info"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Replica file '.localsync/replica.db'")
    assert not (tmp_path / ".localsync").exists()


def test_bad_filter_json_exit_2(imported: Path) -> None:
    before = journal_rows(imported)
    result = localsync(
        "status", "set", "completed", "--filter-json", "{oops", store=imported
    )
    assert result.returncode == 2
    assert "Invalid value for '--filter-json': not JSON" in result.stderr
    assert journal_rows(imported) == before


def test_status_set_and_verbose_log(imported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    copy.write_bytes(imported.read_bytes())
    result = subprocess.run(
        [
            str(SCRIPT),
            "-v",
            "status",
            "set",
            "completed",
            "--all",
            "--task",
            "review",
            "--store",
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] > 1000
    assert "journaled" in result.stderr
    assert "Traceback" not in result.stderr


def test_newer_schema_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    result = localsync("items", store=path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Replica ")
    assert "upgrade localsync" in result.stderr
    assert "Traceback" not in result.stderr

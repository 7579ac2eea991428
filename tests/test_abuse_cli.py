"""Bad input to the command line: wrong types, missing options, unknown statuses,
malformed, deep and huge JSON filters. Each gets a clear error and the right exit
status (2 for usage errors, 1 for errors), and leaves the replica unchanged."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localsync.cli import main
from tests.abuse_support import (
    CUSTOM_TASK,
    TASK,
    assert_no_leak,
    build_replica,
    item_ids,
    journal_count,
    replica_fingerprint,
    write_exports,
)
from tests.reliability_report import Tally
from tests.sync_support import run_cli

tally = Tally("bad_input")

ITEM = item_ids()[0]
MISSING_ITEM = "f" * 24
HUGE_BYTES = 5 * 1024 * 1024
# json.loads gives up near 1,000 levels (CPython's recursion limit); 5,000 is past it.
DEEP_JSON = '{"filter": ' + '{"$and": [' * 5000 + "{}" + "]}" * 5000 + "}"
# Deep enough to pass json.loads but too deep for the query language.
NESTED_400 = '{"filter": ' + '{"$and": [' * 400 + '{"dir": "/a"}' + "]}" * 400 + "}"


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("abuse-cli")
    path = folder / "replica.db"
    build_replica(path, write_exports(folder / "exports"))
    return path


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "replica.db"
    shutil.copyfile(template, path)
    return path


def invoke(store: Path, *args: str) -> Result:
    """Run the CLI in this process, as ``localsync ARGS --store STORE``."""
    return CliRunner().invoke(main, [*args, "--store", str(store)])


def check_rejected(result: Result, exit_code: int, fragment: str) -> None:
    """The command failed with ``exit_code``, a message with ``fragment``, no leak."""
    assert result.exit_code == exit_code, (result.exit_code, result.output[-500:])
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert fragment in result.stderr, result.stderr[-500:]
    assert_no_leak(result.stderr)
    assert len(result.stderr) < 2000, result.stderr[:300]
    tally.add("cli")


USAGE_CASES = [
    (["items", "--limit", "abc"], "Invalid value for '--limit'"),
    (["items", "--page-size", "0"], "Invalid value for '--page-size'"),
    (["items", "--page-size", "1001"], "Invalid value for '--page-size'"),
    (["items", "--format", "xml"], "Invalid value for '--format'"),
    (["log", "--limit", "-1"], "Invalid value for '--limit'"),
    (["log", "--state", "lost"], "Invalid value for '--state'"),
    (["sync", "--batch-size", "1001"], "Invalid value for '--batch-size'"),
    (["sync", "--batch-size", "x"], "Invalid value for '--batch-size'"),
    (["sync", "--max-attempts", "0"], "Invalid value for '--max-attempts'"),
    (["sync", "--timeout", "soon"], "Invalid value for '--timeout'"),
    (["sync", "--dry-run", "--watch"], "--dry-run sends nothing"),
    (["status", "set"], "Missing argument 'STATUS'"),
    (["status", "set", "completed"], "exactly one of --item, --filter-json or --all"),
    (["status", "set", "completed", "--all"], "--all needs --task NAME"),
    (
        ["status", "set", "completed", "--all", "--item", ITEM, "--task", TASK],
        "exactly one of",
    ),
    (["status", "clear", "--task", TASK], "exactly one of"),
    (["clone", "http://127.0.0.1:9"], "Missing option '--project'"),
    (["task", "create"], "Missing option '--name'"),
    (["task", "create", "--name", "x", "--type", "review"], "Invalid value"),
    (["items", "--filter-json", '{"filter": '], "not JSON"),
    (["items", "--filter-json", "[1, 2]"], "expected a JSON object"),
    (["items", "--filter-json", "NaN"], "expected a JSON object"),
    (["items", "--filter-json", DEEP_JSON], "JSON nested too deeply to read"),
    (
        ["status", "set", "completed", "--filter-json", DEEP_JSON],
        "JSON nested too deeply",
    ),
]


@pytest.mark.parametrize(("args", "fragment"), USAGE_CASES, ids=lambda v: str(v)[:40])
def test_usage_error_changes_nothing(
    store: Path, args: list[str], fragment: str
) -> None:
    before = replica_fingerprint(store)
    check_rejected(invoke(store, *args), 2, fragment)
    assert replica_fingerprint(store) == before


ERROR_CASES = [
    (
        ["status", "set", "needs_review", "--all", "--task", TASK],
        "Status 'needs_review' is not allowed in task 'review'; use one of: "
        "completed, discard",
    ),
    (
        ["status", "set", "completed", "--all", "--task", CUSTOM_TASK],
        "use one of: needs-review, blurry, sharp",
    ),
    (
        ["status", "set", "COMPLETED", "--item", ITEM, "--task", TASK],
        "'COMPLETED' is not allowed",
    ),
    (
        ["status", "set", "completed", "--item", ITEM, "--task", "nope"],
        "Task 'nope' not found in this replica",
    ),
    (
        ["status", "set", "completed", "--item", MISSING_ITEM, "--task", TASK],
        "Item not found",
    ),
    (
        ["status", "set", "completed", "--item", ITEM],
        "must provide assignment_id or task_id",
    ),
    (["items", "--filter-json", '{"filter": {"dir": {"$near": 1}}}'], "$near"),
    (["items", "--filter-json", '{"filter": 3}'], "'filter' must be a JSON object"),
    (["items", "--filter-json", '{"filter": {"$and": {"dir": 1}}}'], "must be a list"),
    (["items", "--filter-json", '{"filter": {"x": 1e999}}'], "is not finite"),
    (["items", "--filter-json", '{"filter": {"x": 1' + "0" * 30 + "}}"], "64 bits"),
    (["items", "--filter-json", '{"filter": {}, "page": -1}'], "page must be"),
    (["items", "--filter-json", NESTED_400], "nested too deeply"),
    (["items", "--filter-json", '{"filter": {"dir": "\\ud800"}}'], "surrogate"),
    (["items", "--filter-json", '{"filter": {"\\udfff": 1}}'], "surrogate"),
    (
        ["status", "set", "completed", "--task", TASK, "--filter-json", NESTED_400],
        "nested too deeply",
    ),
    (
        [
            "status",
            "set",
            "completed",
            "--task",
            TASK,
            "--filter-json",
            '{"filter": {"dir": "\\ud800"}}',
        ],
        "surrogate",
    ),
    (["items", "--task", "nope"], "Task 'nope' not found"),
]


@pytest.mark.parametrize(("args", "fragment"), ERROR_CASES, ids=lambda v: str(v)[:40])
def test_bad_value_is_error_and_changes_nothing(
    store: Path, args: list[str], fragment: str
) -> None:
    before = replica_fingerprint(store)
    check_rejected(invoke(store, *args), 1, fragment)
    assert replica_fingerprint(store) == before


def test_huge_malformed_filter_is_short_error(store: Path) -> None:
    values = json.dumps([f"{n:024x}" for n in range(HUGE_BYTES // 28)])
    huge = '{"filter": {"id": {"$in": ' + values  # never closed
    assert len(huge) > HUGE_BYTES
    before = replica_fingerprint(store)

    result = invoke(store, "status", "set", "completed", "--filter-json", huge)

    check_rejected(result, 2, "not JSON")
    assert f"({len(huge):,} characters)" in result.stderr
    assert replica_fingerprint(store) == before


def test_huge_filter_with_many_values_is_rejected(store: Path) -> None:
    values = [f"{n:024x}" for n in range(HUGE_BYTES // 28)]
    huge = json.dumps({"filter": {"id": {"$in": values}}})
    assert len(huge) > HUGE_BYTES
    before = replica_fingerprint(store)

    for args in (
        ["items", "--filter-json", huge],
        ["status", "set", "completed", "--task", TASK, "--filter-json", huge],
    ):
        check_rejected(invoke(store, *args), 1, "more than 10000 values")
    assert replica_fingerprint(store) == before


def test_huge_string_filter_matches_nothing(store: Path) -> None:
    huge = json.dumps({"filter": {"dir": "a" * HUGE_BYTES}})
    before = replica_fingerprint(store)

    listed = invoke(store, "items", "--filter-json", huge)
    updated = invoke(
        store, "status", "set", "completed", "--task", TASK, "--filter-json", huge
    )

    assert listed.exit_code == 0, listed.output[-300:]
    assert json.loads(listed.stdout) == []
    assert updated.exit_code == 0, updated.output[-300:]
    assert json.loads(updated.stdout)["changed"] == 0
    assert replica_fingerprint(store) == before
    tally.add("cli", 2)


def test_subprocess_errors_have_no_traceback(store: Path) -> None:
    """The installed entry point, not only the click group, exits cleanly."""
    before = journal_count(store)
    cases = [
        (["items", "--filter-json", DEEP_JSON], 2, "nested too deeply"),
        (["status", "set", "unknown", "--all", "--task", TASK], 1, "not allowed"),
        (["items", "--filter-json", '{"filter": {"dir": "\\ud800"}}'], 1, "surrogate"),
        (["log", "--state", "lost"], 2, "Invalid value"),
    ]
    for args, exit_code, fragment in cases:
        result = run_cli(*args, "--store", str(store))
        assert result.returncode == exit_code, result.stderr[-500:]
        assert fragment in result.stderr
        assert_no_leak(result.stderr)
        tally.add("cli")
    assert journal_count(store) == before


def test_store_path_errors(tmp_path: Path) -> None:
    directory = tmp_path / "folder"
    directory.mkdir()
    missing = tmp_path / "missing.db"

    as_directory = CliRunner().invoke(main, ["log", "--store", str(directory)])
    not_there = CliRunner().invoke(main, ["log", "--store", str(missing)])

    check_rejected(as_directory, 2, "is a directory")
    check_rejected(not_there, 1, "does not exist")
    assert not missing.exists()

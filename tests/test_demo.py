"""The end-to-end demo, on the real exports and on generated ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from localsync import demo
from localsync.cli import main
from localsync.demo import ANNOTATION_TASK, QA_TASK, run_demo


def check_summary(summary: dict, merino: int, suffolk: int) -> None:
    annotation = summary["statuses"][ANNOTATION_TASK]
    # Alice completes /Merino. Bob discards 20 of them and carol 10 more online.
    # Bob completes /Suffolk, and alice completes 10 /Poll Dorset items after carol.
    expected = {"completed": merino - 30 + suffolk + 10, "discard": 30}
    for view in ("server", "alice", "bob"):
        assert annotation[view] == expected, view
        assert summary["statuses"][QA_TASK][view] == {"approved": 50, "discard": 0}, (
            view
        )
    conflicts = summary["conflicts"]["alice@example.com"]
    winners = sorted(
        {(c["winner"]["creator"], c["winner"]["source"]) for c in conflicts}
    )
    assert len(conflicts) == 30
    assert winners == [("bob@example.com", "replica"), ("carol@example.com", "rest")]
    assert summary["conflicts"]["bob@example.com"] == []
    assert summary["converged"] is True


def test_demo_on_real_exports(exports_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []

    summary = run_demo(exports_dir, tmp_path, echo=lines.append)

    check_summary(summary, merino=420, suffolk=420)
    assert any("sync failed as expected" in line for line in lines)
    assert (tmp_path / "alice.db").exists()
    assert summary["workdir"] == str(tmp_path)
    assert f"Work folder (kept afterwards): {tmp_path}" in lines

    # A second run in the same folder stops before it changes anything.
    before = {name: (tmp_path / name).read_bytes() for name in demo.DEMO_FILES}
    again = CliRunner().invoke(
        main, ["demo", "--exports", str(exports_dir), "--workdir", str(tmp_path)]
    )
    assert again.exit_code == 1
    assert "already contains an earlier demo run" in again.output
    assert "pass a new or empty folder" in again.output
    assert before == {name: (tmp_path / name).read_bytes() for name in demo.DEMO_FILES}


def test_demo_without_shared_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "default_exports", lambda: None)
    lines: list[str] = []

    summary = run_demo(None, tmp_path, echo=lines.append)

    generated = tmp_path / "generated-exports"
    files = len(list(generated.rglob("*.json")))
    assert files == demo.GENERATED_ITEMS
    assert any("generating" in line for line in lines)
    assert summary["converged"] is True
    assert len(summary["conflicts"]["alice@example.com"]) == 30

"""Smoke test of scripts/bench --quick: it runs and writes well-formed results.

Speed targets are the benchmark's business; nothing here checks a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUERY_SCENARIOS = {
    "query_dir_annotated",
    "query_score_count",
    "query_score_range",
    "query_refs_match",
    "query_label_join",
}
LOCAL_SCENARIOS = QUERY_SCENARIOS | {"status_bulk"}
CORE_SCENARIOS = LOCAL_SCENARIOS | {
    "sync_vs_update_status",
    "sync_vs_task_set_status",
    "sync_noop",
    "watch_push",
    "clone",
    "demo",
}


def run_bench(
    *args: str | Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LOCALSYNC_BENCH_NO_REEXEC="1")
    return subprocess.run(
        [sys.executable, str(BENCH), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bench")
    out = root / "out" / "benchmarks.md"
    completed = run_bench("--quick", "--data-dir", root / "data", "--out", out)
    assert completed.returncode == 0, completed.stderr
    results = json.loads((root / "out" / "benchmarks" / "results.json").read_text())
    return out, results


def test_quick_records_machine(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    machine = results["machine"]

    assert results["mode"] == "quick"
    assert machine["cores"] >= 1
    assert machine["memory_bytes"] > 0
    assert machine["python"].count(".") == 2
    assert machine["sqlite"].count(".") == 2


def test_quick_covers_core_scenarios(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    measured = {figure["scenario"] for figure in results["figures"]}
    skipped = {entry["scenario"] for entry in results["skipped"]}

    assert CORE_SCENARIOS <= measured | skipped
    for entry in results["skipped"]:
        assert entry["reason"]


def test_quick_figures_well_formed(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run

    assert results["figures"]
    for figure in results["figures"]:
        sides = [side for side in ("localsync", "reference", "http") if side in figure]
        for side in sides:
            summary = figure[side]
            assert summary["runs"] >= 1
            assert 0 < summary["min"] <= summary["median"] <= summary["max"]
        if "reference" in figure:
            assert figure["ratio"] > 0
        else:
            assert figure["ratio"] is None
        assert figure["size"] >= 1
        assert figure["items"] >= 0
        for check in figure["checks"]:
            assert isinstance(check["met"], bool)
            assert check["target"]


def test_quick_references_match(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    checked = [f for f in results["figures"] if "reference_matches" in f]

    assert {f["scenario"] for f in checked} == LOCAL_SCENARIOS
    for figure in checked:
        assert figure["reference_matches"], figure["scenario"]


def test_quick_http_queries_match(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    queries = [f for f in results["figures"] if f["scenario"] in QUERY_SCENARIOS]

    for figure in queries:
        assert "http" in figure, figure["scenario"]
        assert figure["http_matches"], figure["scenario"]


def test_quick_sync_pushes_every_change(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    _, results = quick_run
    figures = {f["scenario"]: f for f in results["figures"]}
    changes = figures["sync_vs_update_status"]

    assert changes["items"] > 0
    assert changes["pushed"] == [changes["items"]] * changes["localsync"]["runs"]
    assert figures["sync_vs_task_set_status"]["reference"]["runs"] >= 1
    assert figures["watch_push"]["localsync"]["min"] > 0
    assert figures["sync_noop"]["command"]["runs"] >= 1


def test_quick_clone_reports_memory(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    (clone,) = [f for f in results["figures"] if f["scenario"] == "clone"]

    assert clone["items"] == clone["size"]
    assert 10 < clone["peak_mb"] < 10_000
    assert clone["checks"][0]["target"] == "peak RSS under 300 MB"


def test_quick_queries_find_items(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    queries = [f for f in results["figures"] if f["scenario"] in QUERY_SCENARIOS]

    assert queries
    for figure in queries:
        assert figure["matches"] > 0, figure["scenario"]
        assert figure["plans"]


def test_quick_writes_page_and_plots(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    text = out.read_text()

    assert text.startswith("# Benchmarks")
    assert "## Machine and run" in text
    assert "## Bulk status update" in text
    plots = sorted((out.parent / "benchmarks").glob("*.png"))
    assert {path.stem for path in plots} == {f["scenario"] for f in results["figures"]}
    for path in plots:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert f"benchmarks/{path.name}" in text


def test_render_only_rewrites_page(
    quick_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = quick_run
    page = tmp_path / "again.md"

    completed = run_bench(
        "--render-only", out.parent / "benchmarks" / "results.json", "--out", page
    )

    assert completed.returncode == 0, completed.stderr
    assert page.read_text().startswith("# Benchmarks")
    assert (tmp_path / "again" / "status_bulk.png").is_file()


def test_generated_fallback_without_exports(tmp_path: Path) -> None:
    out = tmp_path / "out.md"

    completed = run_bench(
        "--quick",
        "--sizes",
        "300",
        "--phases",
        "local",
        "--data-dir",
        tmp_path / "data",
        "--exports-dir",
        tmp_path / "missing",
        "--out",
        out,
    )

    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["data"]["source"] == "generated"
    assert "not found" in results["data"]["note"]
    assert {f["scenario"] for f in results["figures"]} == LOCAL_SCENARIOS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "ten"], "invalid --sizes 'ten'"),
        (["--sizes", "0"], "sizes must be >= 1"),
        (["--runs", "0"], "must be at least 1"),
        (["--phases", "local,cloud"], "invalid --phases 'local,cloud'"),
    ],
)
def test_bad_options_rejected(tmp_path: Path, args: list[str], message: str) -> None:
    completed = run_bench(
        *args, "--data-dir", tmp_path / "data", "--out", tmp_path / "o.md"
    )

    assert completed.returncode == 2
    assert message in completed.stderr
    assert not (tmp_path / "o.md").exists()
    assert not (tmp_path / "data").exists()

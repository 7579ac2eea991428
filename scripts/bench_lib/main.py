"""Command-line options of ``scripts/bench`` and writing its outputs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from bench_lib.report import render
from bench_lib.suite import PHASES, Settings, Suite

REPO = Path(__file__).resolve().parents[2]
DEFAULT_EXPORTS = REPO.parent / "shared" / "datasets" / "dataloop-exports"
QUICK_SIZES = [2_000]


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"invalid --sizes {text!r}: expected integers separated by commas, "
            "such as 10000,100000"
        ) from exc
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(
            f"invalid --sizes {text!r}: sizes must be >= 1"
        )
    return sorted(set(sizes))


def parse_phases(text: str) -> tuple[str, ...]:
    phases = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [phase for phase in phases if phase not in PHASES]
    if unknown or not phases:
        raise argparse.ArgumentTypeError(
            f"invalid --phases {text!r}: use a comma-separated subset of "
            f"{','.join(PHASES)}"
        )
    return phases


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure localsync against plain SQLite and the dtlpy SDK.",
    )
    commands.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and one run each, for CI smoke tests (under a minute)",
    )
    commands.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="dataset sizes in items, comma-separated (default 10000,100000,1000000)",
    )
    commands.add_argument(
        "--runs",
        type=positive_int,
        default=None,
        help="timed runs per figure below 1,000,000 items (default 5)",
    )
    commands.add_argument(
        "--large-runs",
        type=positive_int,
        default=None,
        help="timed runs per figure at 1,000,000 items and more (default 3)",
    )
    commands.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="cap on the total run time in minutes; what does not fit is skipped "
        "(default 30, or 1 with --quick)",
    )
    commands.add_argument(
        "--phases",
        type=parse_phases,
        default=PHASES,
        help="phases to run, comma-separated (default local,sync,demo,server): "
        "local queries and status updates, status changes through a server, "
        "the demo, HTTP queries and clones",
    )
    commands.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("LOCALSYNC_BENCH_DATA", "/tmp/localsync-bench")),
        help="cache folder for the built replicas (default /tmp/localsync-bench)",
    )
    commands.add_argument(
        "--exports-dir",
        type=Path,
        default=Path(os.environ.get("LOCALSYNC_EXPORTS", DEFAULT_EXPORTS)),
        help="real Dataloop exports to synthesize from; generated records are used "
        "when the folder is missing",
    )
    commands.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown page to write; its plots go to the folder of the same name "
        "(default docs/benchmarks.md, or <data-dir>/quick/benchmarks.md with --quick)",
    )
    commands.add_argument(
        "--json",
        type=Path,
        default=None,
        help="results file (default results.json in the plots folder)",
    )
    commands.add_argument(
        "--render-only",
        type=Path,
        metavar="RESULTS_JSON",
        help="write the page and plots from an earlier results file and exit",
    )
    return commands


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.getLogger("bench").setLevel(logging.INFO)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    out = args.out or (
        args.data_dir / "quick" / "benchmarks.md"
        if args.quick
        else REPO / "docs" / "benchmarks.md"
    )
    json_path = args.json or out.parent / out.stem / "results.json"

    if args.render_only:
        results = json.loads(args.render_only.read_text())
        render(results, out)
        return 0

    settings = Settings(
        sizes=args.sizes
        or (QUICK_SIZES if args.quick else [10_000, 100_000, 1_000_000]),
        runs=args.runs or (1 if args.quick else 5),
        large_runs=args.large_runs or (1 if args.quick else 3),
        quick=args.quick,
        data_dir=args.data_dir,
        exports_dir=args.exports_dir,
        max_minutes=args.max_minutes or (1.0 if args.quick else 30.0),
        command=shlex.join(["scripts/bench", *argv]),
        phases=args.phases,
    )
    results = Suite(settings).run()
    results["results_file"] = os.path.relpath(json_path, out.parent)

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    render(results, out)
    logging.getLogger("bench").info("wrote %s and %s", out, json_path)
    return 0

"""Facts about the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any


def memory_bytes() -> int | None:
    """Return the machine's total memory from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def free_disk_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def code_version(repo: Path) -> dict[str, Any]:
    """Return the commit measured and whether the package differs from it.

    ``LOCALSYNC_BENCH_COMMIT`` names the commit for a tree exported without
    ``.git`` (such as ``git archive`` output).
    """
    exported = os.environ.get("LOCALSYNC_BENCH_COMMIT")
    if exported:
        return {"commit": exported, "modified": False, "exported": True}
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--",
                "localsync",
                "schema",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None, "exported": False}
    return {"commit": commit, "modified": bool(changes.strip()), "exported": False}


def machine_facts(data_dir: Path) -> dict[str, Any]:
    """Return cores, memory, CPU, OS, Python and SQLite versions, load and free disk."""
    return {
        "cores": usable_cores(),
        "cpu": cpu_model(),
        "memory_bytes": memory_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": load_average(),
        "data_dir": str(data_dir),
        "free_disk_bytes_at_start": free_disk_bytes(data_dir),
    }

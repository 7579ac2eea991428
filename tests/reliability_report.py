"""Counts of the reliability tests, written to a JSON file for docs/reliability.md.

Set ``LOCALSYNC_RELIABILITY_REPORT=PATH`` and each test module adds what it tried
(histories, faults by kind, kills, bad inputs, ops lost) under its own section.
Without the variable nothing is written. Several pytest processes may write the
same file, so each write takes an exclusive lock and adds to what is there.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

REPORT_ENV = "LOCALSYNC_RELIABILITY_REPORT"


class Tally:
    """Counts of one test module, added to the report file by :meth:`flush`."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def add_all(self, counts: Mapping[str, int], *, prefix: str = "") -> None:
        for name, amount in counts.items():
            self.counts[prefix + name] += amount

    def flush(self) -> None:
        """Add the counts to the report file (if one is set) and reset them."""
        if self.counts:
            record(self.section, self.counts)
        self.counts = Counter()


def record(section: str, counts: Mapping[str, int]) -> None:
    """Add ``counts`` to ``section`` of the report file named by the environment."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read()
        report = json.loads(text) if text.strip() else {}
        totals = Counter(report.get(section, {}))
        totals.update(counts)
        report[section] = dict(sorted(totals.items()))
        report["updatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(report, indent=2, sort_keys=True) + "\n")

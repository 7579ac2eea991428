"""A test hook: kill the process with SIGKILL at a named step of a sync.

Crash tests set ``LOCALSYNC_TEST_CRASH_AT=STEP`` (or ``STEP:N``, to crash the N-th
time the step is reached) in the environment of a ``localsync sync`` or
``localsync serve`` process. That process then kills itself with SIGKILL at the
step, as a power cut or the OOM killer would, so a test can show that a crash at
that step loses and doubles nothing. Without the variable (the default) every
:func:`crash_point` call returns at once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

CRASH_ENV = "LOCALSYNC_TEST_CRASH_AT"

# Every step with a crash point, in the order a sync reaches them.
STEPS = (
    # Replica: after the remote committed a push batch, before its results are read.
    "push-committed",
    # Replica: ops of a batch marked from its results, before that commit.
    "push-results-marking",
    # Replica: a pulled page applied to the local view, before its cursor is saved.
    "pull-page-applying",
    # Replica: the page's cursor saved, before the page's transaction commits.
    "pull-cursor-saved",
    # Replica: a page and its cursor committed, before the next page is requested.
    "pull-page-committed",
    # Server: half of a push batch decided, before anything is written.
    "server-push-applying",
    # Server: a push batch committed, before the response is sent.
    "server-push-committed",
)

_reached: Counter[str] = Counter()


def crash_point(step: str) -> None:
    """Kill this process with SIGKILL if ``LOCALSYNC_TEST_CRASH_AT`` names ``step``."""
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    name, _, count = target.partition(":")
    if name != step:
        return
    _reached[step] += 1
    if _reached[step] < int(count or 1):
        return
    sys.stderr.write(f"{CRASH_ENV}={target}: killing process {os.getpid()}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

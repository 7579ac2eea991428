"""Run a command and write its peak resident set size, measured from a small process.

    python peak_rss.py RESULT_JSON COMMAND [ARG...]

Linux counts the memory of the process that forked a child into the child's
``ru_maxrss``, because exec keeps the larger of the old and new high-water marks.
A command started straight from the benchmark process would therefore report at
least the benchmark's own size. Started from this small process instead, the
figure is the command's own peak, or this process's size (about 11 MB) if that is
larger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: peak_rss.py RESULT_JSON COMMAND [ARG...]", file=sys.stderr)
        return 2
    result_path, command = argv[0], argv[1:]
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    with open(result_path, "w", encoding="utf-8") as result:
        # Linux reports ru_maxrss in KiB.
        json.dump(
            {"max_rss_bytes": usage.ru_maxrss * 1024, "returncode": returncode}, result
        )
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

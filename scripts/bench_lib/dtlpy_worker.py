"""Time status changes made with the real ``dtlpy`` SDK against a localsync server.

Run as a child process (dtlpy reads its environment at import):

    python dtlpy_worker.py < request.json

The request names the server, token, dataset, task, the method, the statuses to
set (one per run) and the file to write the result to, since dtlpy prints to the
standard streams. Only the status calls are timed: the items are listed and the
task fetched before the clock starts. Connections to hosts other than 127.0.0.1
raise, and proxies point at a closed loopback port, so no request leaves the
machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLOSED_PROXY = "http://127.0.0.1:9"
PAGE_SIZE = 1000


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_only(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _is_loopback(str(address[0])):
            raise RuntimeError(f"dtlpy worker tried to connect to {address!r}")
    elif event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if host and not _is_loopback(str(host)):
            raise RuntimeError(f"dtlpy worker tried to resolve {host!r}")


def connect(api: str, token: str, home: Path) -> Any:
    """Import dtlpy logged in to ``api``: its cookie file is written before import."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ[name] = CLOSED_PROXY
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    os.environ["DATALOOP_PATH"] = str(home)
    gate = api.removesuffix("/api/v1")
    cookie = {
        "url": api,
        "login_parameters": {
            api: {
                "alias": "local",
                "gate_url": gate,
                "token": token,
                "refresh_token": None,
                "verify_ssl": False,
                "url": gate + "/",
            }
        },
    }
    (home / "cookie.json").write_text(json.dumps(cookie))
    import dtlpy

    return dtlpy


def time_update_status(dl: Any, request: dict[str, Any]) -> list[float]:
    """Time ``dataset.items.update_status`` on lists of at most 1,000 items.

    dtlpy 1.126.5 fails on inputs of more than one page, so each page of the
    listing is passed as its own list, as a user of that version has to.
    """
    dataset = dl.datasets.get(dataset_id=request["dataset_id"])
    filters = dl.Filters()
    filters.page_size = PAGE_SIZE
    pages = [list(page) for page in dataset.items.list(filters=filters)]
    count = sum(len(page) for page in pages)
    if count != request["items"]:
        raise RuntimeError(f"listed {count} items, expected {request['items']}")

    seconds = []
    for status in request["statuses"]:
        start = time.perf_counter()
        for page in pages:
            dataset.items.update_status(status=status, items=page)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_task_set_status(dl: Any, request: dict[str, Any]) -> list[float]:
    """Time ``task.set_status`` with all item ids in one call (one request)."""
    task = dl.tasks.get(task_id=request["task_id"])
    item_ids = request["item_ids"]

    seconds = []
    for status in request["statuses"]:
        start = time.perf_counter()
        done = task.set_status(status=status, operation="create", item_ids=item_ids)
        seconds.append(time.perf_counter() - start)
        if done is not True:
            raise RuntimeError(f"task.set_status returned {done!r}, expected True")
    return seconds


def main() -> int:
    request = json.load(sys.stdin)
    sys.addaudithook(_loopback_only)
    with tempfile.TemporaryDirectory(prefix="dtlpy-home-") as home:
        os.chdir(home)
        dl = connect(request["api"], request["token"], Path(home))
        started = time.perf_counter()
        if request["method"] == "update_status":
            seconds = time_update_status(dl, request)
        elif request["method"] == "task_set_status":
            seconds = time_task_set_status(dl, request)
        else:
            raise SystemExit(f"unknown method {request['method']!r}")
        elapsed = time.perf_counter() - started
    result = {"seconds": seconds, "elapsed": elapsed, "dtlpy": dl.__version__}
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

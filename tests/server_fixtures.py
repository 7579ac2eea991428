"""Pytest fixtures for tests that need a running localsync server.

Use it as a plugin (``pytest_plugins = ["tests.server_fixtures"]``) or import the
fixtures by name. Each test module runs once per storage backend: on a temporary
SQLite database, and on a fresh PostgreSQL database (skipped when
``LOCALSYNC_TEST_PG_URL`` is not set). It gets one server on a free 127.0.0.1 port;
``server_storage`` opens the same database, for seeding it and for checking what
requests changed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn

from localsync.server.app import create_app
from localsync.server.auth import issue_token
from localsync.server.sqlite_storage import SQLiteStorage
from localsync.server.storage import Storage
from tests.pg_fixtures import fresh_database, postgres_fingerprint

FIXTURE_PROJECT = "fixture-project"
FIXTURE_USER = "annotator@example.com"
EXPORTS_DIR = (
    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dataloop-exports"
)

LOOPBACK_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class RequestLog(logging.Handler):
    """Collects the server's access-log lines: ``METHOD PATH STATUS``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        method, path, status = record.args[:3]  # type: ignore[index]
        self.lines.append(f"{method} {path} {status}")

    def count(self, prefix: str = "") -> int:
        return sum(1 for line in self.lines if line.startswith(prefix))


@dataclass
class LiveServer:
    """A uvicorn server running the localsync app in a background thread."""

    storage: Storage
    url: str
    secret: str
    project: dict[str, Any]
    requests: RequestLog
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(
    storage: Storage, *, secret: str
) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Start the app on a free 127.0.0.1 port; return once it accepts requests."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        create_app(storage, secret=secret),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [listener]},
        daemon=True,
        name="localsync-server",
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("localsync test server did not start within 20 s")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def database_fingerprint(storage: Storage) -> tuple[Any, ...]:
    """Return a value that changes when any item, register, history or feed row does."""
    if not isinstance(storage, SQLiteStorage):
        return postgres_fingerprint(storage)
    with sqlite3.connect(storage.db.path) as connection:
        digest = hashlib.sha256()
        for table in (
            "items",
            "registers",
            "register_history",
            "changes",
            "pushed_ops",
        ):
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                digest.update(repr(tuple(row)).encode())
        max_seq = connection.execute("SELECT max(seq) FROM changes").fetchone()[0]
    return max_seq, digest.hexdigest()


BACKENDS = ("sqlite", "postgres")


@contextmanager
def new_storage(backend: str, folder: Path) -> Iterator[Storage]:
    """Open a fresh server database of ``backend``; close (and drop) it afterwards."""
    if backend == "sqlite":
        storage: Storage = SQLiteStorage(folder / "server.db")
        try:
            yield storage
        finally:
            storage.close()
        return
    from localsync.server.postgres_storage import PostgresStorage

    with fresh_database() as url:
        storage = PostgresStorage(url)
        try:
            yield storage
        finally:
            storage.close()


@pytest.fixture(scope="module", params=BACKENDS)
def server_storage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Storage]:
    """A fresh server database, with the project ``fixture-project`` in it."""
    with new_storage(request.param, tmp_path_factory.mktemp("server")) as storage:
        storage.ensure_project(FIXTURE_PROJECT, creator="admin@localsync")
        yield storage


@pytest.fixture(scope="module")
def live_server(server_storage: Storage) -> Iterator[LiveServer]:
    """A running server over ``server_storage``; ``requests`` counts what it served."""
    secret = server_storage.meta().secret
    requests = RequestLog()
    access = logging.getLogger("localsync.server.access")
    access.addHandler(requests)
    previous_level = access.level
    access.setLevel(logging.INFO)
    server, thread, url = start_server(server_storage, secret=secret)
    project = server_storage.project_named(FIXTURE_PROJECT)
    assert project is not None
    live = LiveServer(server_storage, url, secret, project, requests, server, thread)
    yield live
    live.stop()
    access.removeHandler(requests)
    access.setLevel(previous_level)


TokenFactory = Callable[..., str]


@pytest.fixture(scope="module")
def token_factory(live_server: LiveServer) -> TokenFactory:
    """Return ``make(email=..., projects=[ids], expires_in=s)``, issuing tokens."""

    def make(
        email: str = FIXTURE_USER,
        projects: list[str] | None = None,
        expires_in: int = 3600,
        now: float | None = None,
    ) -> str:
        project_ids = [live_server.project["id"]] if projects is None else projects
        return issue_token(
            live_server.secret,
            email=email,
            project_ids=project_ids,
            expires_in=expires_in,
            now=now,
        )

    return make


def _refuse_non_loopback(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: raise on any connection or lookup that would leave loopback."""
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _is_loopback(str(address[0])):
            raise RuntimeError(f"test tried to connect to {address!r}")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode()
        if host and not _is_loopback(str(host)):
            raise RuntimeError(f"test tried to resolve {host!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_guard_installed = False


def install_loopback_guard() -> None:
    """Refuse non-loopback sockets for the rest of the process (audit hooks stay)."""
    global _guard_installed
    if not _guard_installed:
        sys.addaudithook(_refuse_non_loopback)
        _guard_installed = True


def connect_dtlpy(api: str, token: str, home: Path) -> ModuleType:
    """Point the real ``dtlpy`` at ``api`` with ``token`` and return the module.

    Before the first import this writes ``$DATALOOP_PATH/cookie.json``, so dtlpy
    starts on the local environment with no setup call. Once dtlpy is imported,
    it registers the environment and logs in instead.
    """
    gate = api.removesuffix("/api/v1")
    if "dtlpy" not in sys.modules:
        os.environ["DATALOOP_PATH"] = str(home)
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
    import dtlpy

    dtlpy.add_environment(
        environment=api,
        verify_ssl=False,
        alias=f"local-{gate}",
        gate_url=gate,
        url=gate + "/",
    )
    dtlpy.setenv(api)
    dtlpy.login_token(token)
    return dtlpy


@pytest.fixture(scope="module")
def dtlpy_client(
    live_server: LiveServer,
    token_factory: TokenFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ModuleType]:
    """The real ``dtlpy`` module, logged in to ``live_server`` as ``FIXTURE_USER``.

    Proxies point at a closed loopback port and an audit hook refuses other hosts,
    so no request can leave 127.0.0.1.
    """
    install_loopback_guard()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOOPBACK_ENV.items():
            patch.setenv(name, value)
        home = tmp_path_factory.mktemp("dataloop")
        patch.chdir(home)
        yield connect_dtlpy(live_server.api, token_factory(), home)


def synthetic_records(
    count: int, *, folder: str = "/synthetic", prefix: str = "5"
) -> list[dict[str, Any]]:
    """Return ``count`` export records with 24-hex ids that sort in creation order."""
    return [
        {
            "_id": f"{prefix}{index:023x}",
            "filename": f"{folder}/image-{index:05d}.jpg",
            "annotations": [],
            "itemMetadata": {
                "system": {"mimetype": "image/jpeg"},
                "user": {"index": index},
            },
        }
        for index in range(count)
    ]


def seed_dataset(
    storage: Storage,
    records: list[dict[str, Any]],
    *,
    dataset: str,
    project: str = FIXTURE_PROJECT,
) -> dict[str, Any]:
    """Import export records into a dataset of ``project``; return the dataset JSON."""
    from localsync.exports import exported_items
    from localsync.statuses import iso_timestamp

    project_json = storage.ensure_project(project, creator="admin@localsync")
    dataset_json = storage.ensure_dataset(
        project_json["id"], dataset, creator="admin@localsync"
    )
    now = iso_timestamp()
    entries = exported_items(records, dataset_id=dataset_json["id"], now=now)
    storage.import_items(dataset_json["id"], entries, now=now)
    return dataset_json

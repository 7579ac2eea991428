"""Security of the server and the replica files.

The server tests run on each storage backend of ``tests.server_fixtures``: SQLite,
and PostgreSQL when ``LOCALSYNC_TEST_PG_URL`` is set.

* SQL and JSON-path injection through filter field names and values, on the
  replica and on the server. Every query returns exactly what the Python
  evaluator of the query language returns, or a 400 that shows no SQL, and
  changes nothing. NUL characters, which PostgreSQL text cannot hold, get 400.
* Tokens that are unsigned, badly signed, tampered with, expired or of the wrong
  shape get 401 on every route the app has; ``api_routes()`` is enumerated, so a
  new route without a case here fails the test.
* A token for one project reads and writes nothing of another, on every route.
* ``localsync serve`` listens on 127.0.0.1 unless told otherwise.
* Replica files (and their ``-wal`` and ``-shm``) and the server database are
  mode 0600, even when made under a umask of 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from localsync.dql import run_query
from localsync.errors import InvalidQuery
from localsync.server.app import api_routes
from localsync.server.auth import issue_token
from localsync.server.storage import NewTask
from localsync.store import Replica
from localsync.sync import clone
from tests.abuse_support import assert_no_leak
from tests.reliability_report import Tally
from tests.server_fixtures import (
    FIXTURE_PROJECT,
    FIXTURE_USER,
    LiveServer,
    database_fingerprint,
    seed_dataset,
    synthetic_records,
)
from tests.sync_support import cli_env, fast_retry, free_port, localsync_command

tally = Tally("security")

SECRET_PROJECT = "secret-project"
SECRET_MARKERS = ("bravo-secret", "/secret-folder/", "secret-task", "secret note")


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


def records() -> list[dict[str, Any]]:
    """Items whose user metadata has keys that look like SQL or JSON paths."""
    tricky_keys = ["a'b", 'x"y', "$", "a.b", "[0]", "*", "--", "a b"]
    documents = synthetic_records(12, folder="/alpha", prefix="a")
    for index, document in enumerate(documents):
        user = document["itemMetadata"]["user"]
        user["note"] = ["plain", "it's", 'say "hi"', "100%", "a_b", "*star"][index % 6]
        user[tricky_keys[index % len(tricky_keys)]] = index
    return documents


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> dict[str, Any]:
    storage = live_server.storage
    alpha = seed_dataset(storage, records(), dataset="alpha")
    task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=alpha["id"],
            name="alpha-task",
            statuses=("completed", "discard"),
            assignees=("ann@example.com",),
        )
    )
    secret_records = synthetic_records(3, folder="/secret-folder", prefix="b")
    for document in secret_records:
        document["itemMetadata"]["user"]["text"] = "secret note"
    bravo = seed_dataset(
        storage, secret_records, dataset="bravo-secret", project=SECRET_PROJECT
    )
    secret_task = storage.create_task(
        NewTask(
            project_id=bravo["projects"][0],
            dataset_id=bravo["id"],
            name="secret-task",
            statuses=("completed", "discard"),
            assignees=("bob@example.com",),
        )
    )
    storage.set_statuses(
        secret_task["id"],
        [document["_id"] for document in secret_records],
        "completed",
        user_email="bob@example.com",
    )
    [assignment] = storage.assignments(
        [bravo["projects"][0]], task_id=secret_task["id"]
    )
    [own_assignment] = storage.assignments(
        [live_server.project["id"]], task_id=task["id"]
    )
    return {
        "alpha": alpha,
        "task": task,
        "own_assignment": own_assignment,
        "bravo": bravo,
        "secret_project": storage.project(bravo["projects"][0]),
        "secret_task": secret_task,
        "secret_assignment": assignment,
        "secret_item": secret_records[0]["_id"],
        "alpha_item": f"a{0:023x}",
    }


@pytest.fixture(scope="module")
def client(live_server: LiveServer, token_factory) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=30,
    ) as http:
        yield http


# Injection through filters

FIELD_PAYLOADS = [
    "dir') OR 1=1 --",
    "dir' OR '1'='1",
    'dir" OR "1"="1',
    "name; DROP TABLE items; --",
    "metadata.user.index') OR ('a'='a",
    "id) UNION SELECT key, value FROM settings --",
    "$.dir",
    "$",
    "dir[0]",
    "metadata.user.a'b",
    'metadata.user.x"y',
    "metadata.user.$",
    "metadata.user.[0]",
    "metadata.user.*",
    "metadata.user.--",
    "metadata.user.a b",
    "metadata.user.a.b",
    "metadata.**",
    "metadata..user",
    ".dir",
    "dir.",
    "metadata.user.index\\",
    "json",
    "items.json",
    "rowid",
    "metadata.system.refs.0.id",
]
VALUE_PAYLOADS = [
    "' OR '1'='1",
    '") OR 1=1 --',
    "'; DROP TABLE items; --",
    "x' UNION SELECT value FROM settings --",
    "'||(SELECT value FROM settings LIMIT 1)||'",
    "%",
    "_",
    "*",
    "\\*",
    "it's",
    '$.dir") --',
    "/alpha/image-00001.jpg' --",
]
VALUE_FIELDS = ["dir", "filename", "name", "metadata.user.note"]


def injection_bodies() -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for field in FIELD_PAYLOADS:
        bodies.append({"filter": {field: "/alpha"}})
        bodies.append({"filter": {field: {"$exists": True}}})
        bodies.append({"filter": {field: {"$gt": 0}}})
        bodies.append({"filter": {}, "sort": {field: "ascending"}})
        bodies.append({"filter": {"metadata.user": {"$match": {field: 1}}}})
    for field in VALUE_FIELDS:
        for value in VALUE_PAYLOADS:
            bodies.append({"filter": {field: value}})
            bodies.append({"filter": {field: {"$ne": value}}})
            bodies.append({"filter": {field: {"$in": [value, "/alpha"]}}})
            bodies.append({"filter": {field: {"$nin": [value]}}})
            bodies.append({"filter": {field: {"$lt": value}}})
    for body in bodies:
        body.update(page=0, pageSize=1000)
    return bodies


def expected_ids(body: dict[str, Any], items: list[dict[str, Any]]) -> set[str] | None:
    """Return the ids the evaluator selects, or ``None`` when it rejects the body."""
    try:
        window, _ = run_query(body, items, {})
    except InvalidQuery:
        return None
    return {item["id"] for item in window}


def check_query(
    body: dict[str, Any],
    items: list[dict[str, Any]],
    run: Callable[[dict[str, Any]], tuple[int, Any]],
) -> None:
    """Compare one query's result with the evaluator's: same ids, or a clean 400."""
    status, result = run(body)
    expected = expected_ids(body, items)
    if status == 400:
        assert expected is None, (body, result)
        assert_no_leak(str(result))
        tally.add("injection_queries_rejected")
        return
    assert status == 200, (body, status, result)
    assert expected is not None, (body, "the evaluator rejects it")
    assert set(result) == expected, body
    tally.add("injection_queries")


def alpha_items(live_server: LiveServer, dataset_id: str) -> list[dict[str, Any]]:
    page = live_server.storage.query_items(dataset_id, {"pageSize": 1000})
    assert page.total == 13  # 12 files and their folder
    return page.items


def test_injection_over_rest(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    dataset_id = world["alpha"]["id"]
    items = alpha_items(live_server, dataset_id)
    before = database_fingerprint(live_server.storage)

    def run(body: dict[str, Any]) -> tuple[int, Any]:
        response = client.post(f"/datasets/{dataset_id}/query", json=body)
        data = response.json()
        if response.status_code != 200:
            return response.status_code, data["message"]
        return 200, [item["id"] for item in data["items"]]

    for body in injection_bodies():
        check_query(body, items, run)
    assert database_fingerprint(live_server.storage) == before


def test_injection_on_replica(
    live_server: LiveServer, world: dict[str, Any], token_factory, tmp_path: Path
) -> None:
    path = tmp_path / "replica.db"
    clone(
        path,
        live_server.url,
        token=token_factory(),
        project=FIXTURE_PROJECT,
        dataset="alpha",
        retry=fast_retry(),
    )
    with Replica(path) as replica:
        items = all_replica_items(replica)
        before = replica_tables(replica)

        def run(body: dict[str, Any]) -> tuple[int, Any]:
            try:
                documents, _ = replica.query(body)
            except InvalidQuery as exc:
                return 400, exc.message
            return 200, [document["id"] for document in documents]

        for body in injection_bodies():
            check_query(body, items, run)
        assert replica_tables(replica) == before


def all_replica_items(replica: Replica) -> list[dict[str, Any]]:
    rows = replica.conn.execute("SELECT json FROM items ORDER BY id").fetchall()
    return [json.loads(row[0]) for row in rows]


def replica_tables(replica: Replica) -> str:
    digest = hashlib.sha256()
    for table in ("items", "journal", "settings", "tasks", "remote_registers"):
        for row in replica.conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def nul_requests(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Requests with a NUL character in the path, the query string or the body."""
    dataset_id = ids["dataset_id"]
    return [
        ("GET", "/items/a%00b", {}),
        ("GET", "/projects/%00/name", {}),
        ("GET", "/sync/pull", {"params": {"dataset": f"{dataset_id}\x00"}}),
        ("GET", "/sync/history", {"params": {"item": "\x00"}}),
        (
            "POST",
            f"/datasets/{dataset_id}/query",
            {"json": {"filter": {"dir": "a\x00"}}},
        ),
        ("POST", f"/datasets/{dataset_id}/query", {"json": {"filter": {"\x00": 1}}}),
        (
            "POST",
            f"/assignments/items/tasks/{ids['task_id']}/status",
            {
                "json": {
                    "itemIds": ["\x00"],
                    "statusPayload": {"operation": "create", "status": "completed"},
                }
            },
        ),
    ]


def check_nul_rejected(
    base_url: str, token: str, ids: dict[str, str], fingerprint: Callable[[], Any]
) -> None:
    before = fingerprint()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for method, path, options in nul_requests(ids):
            response = http.request(method, path, **options)
            assert response.status_code == 400, (path, response.text)
            assert "NUL character" in response.json()["message"]
            tally.add("nul_requests")
    assert fingerprint() == before


def test_nul_characters_are_400(
    live_server: LiveServer, world: dict[str, Any], token_factory
) -> None:
    check_nul_rejected(
        live_server.api,
        token_factory(),
        own_ids(live_server, world),
        lambda: database_fingerprint(live_server.storage),
    )


# Tokens on every route

ROUTE_TEMPLATES = {
    "/users/me",
    "/projects/{name}/name",
    "/projects/{project_id}",
    "/datasets/query",
    "/datasets/{dataset_id}",
    "/datasets/{dataset_id}/query",
    "/items/{item_id}",
    "/annotationtasks/query",
    "/annotationtasks/{task_id}",
    "/assignments",
    "/assignments/items/tasks/{task_id}/status",
    "/assignments/{assignment_id}",
    "/assignments/{assignment_id}/items/{item_id}/status",
    "/sync/push",
    "/sync/pull",
    "/sync/history",
}
PUBLIC_ROUTES = {"/health"}


def protected_routes() -> list[tuple[str, str]]:
    """Return ``(path template, method)`` for every route that needs a token."""
    found = []
    for route in api_routes():
        if route.path in PUBLIC_ROUTES:
            continue
        assert route.path in ROUTE_TEMPLATES, (
            f"route {route.path} has no security case; add it to ROUTE_TEMPLATES "
            "and to the requests built in route_request"
        )
        for method in sorted(route.methods or ()):
            found.append((route.path, method))
    return found


def route_request(
    template: str, method: str, ids: dict[str, str], epoch: str
) -> tuple[str, dict[str, Any]]:
    """Return the URL path and request options that call ``template`` on ``ids``."""
    path = template.format(**ids)
    options: dict[str, Any] = {}
    if template == "/datasets/query":
        options["json"] = {"filter": {}, "context": {"projects": [ids["project_id"]]}}
    elif template == "/datasets/{dataset_id}/query":
        options["json"] = {"filter": {}}
    elif template == "/annotationtasks/query":
        options["json"] = {"filter": {}, "context": {"projectIds": [ids["project_id"]]}}
    elif template == "/items/{item_id}" and method == "PATCH":
        options["json"] = {"metadata": {"user": {"owned": True}}}
    elif template == "/assignments":
        options["params"] = {"projects": ids["project_id"]}
    elif template == "/assignments/items/tasks/{task_id}/status":
        options["json"] = {
            "itemIds": [ids["item_id"]],
            "statusPayload": {"operation": "create", "status": "discard"},
        }
    elif template == "/assignments/{assignment_id}/items/{item_id}/status":
        options["json"] = {"operation": "delete", "status": "completed"}
    elif template == "/sync/push":
        options["json"] = {
            "replicaId": "e" * 32,
            "epoch": epoch,
            "datasetId": ids["dataset_id"],
            "ops": [
                {
                    "opId": "security-op",
                    "seq": 1,
                    "itemId": ids["item_id"],
                    "taskId": ids["task_id"],
                    "status": "discard",
                    "hlc": f"{time.time_ns() // 1_000_000:015d}-000000-{'e' * 32}",
                    "creator": None,
                }
            ],
        }
    elif template == "/sync/pull":
        options["params"] = {"dataset": ids["dataset_id"]}
    elif template == "/sync/history":
        options["params"] = {"item": ids["item_id"]}
    return path, options


def secret_ids(world: dict[str, Any]) -> dict[str, str]:
    return {
        "name": SECRET_PROJECT,
        "project_id": world["secret_project"]["id"],
        "dataset_id": world["bravo"]["id"],
        "item_id": world["secret_item"],
        "task_id": world["secret_task"]["id"],
        "assignment_id": world["secret_assignment"]["id"],
    }


def own_ids(live_server: LiveServer, world: dict[str, Any]) -> dict[str, str]:
    return {
        "name": FIXTURE_PROJECT,
        "project_id": live_server.project["id"],
        "dataset_id": world["alpha"]["id"],
        "item_id": world["alpha_item"],
        "task_id": world["task"]["id"],
        "assignment_id": world["own_assignment"]["id"],
    }


def encode_segment(part: dict[str, Any]) -> str:
    raw = json.dumps(part, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def bad_tokens(secret: str, project_id: str) -> dict[str, str]:
    claims = {"email": FIXTURE_USER, "projects": [project_id], "exp": 4_000_000_000}
    good = issue_token(secret, email=FIXTURE_USER, project_ids=[project_id])
    header, payload, signature = good.split(".")
    other_project = encode_segment({**claims, "projects": ["f" * 24]})
    with warnings.catch_warnings():
        # PyJWT warns that the secret is short for HS512; the token is refused anyway.
        warnings.simplefilter("ignore")
        resigned_hs512 = jwt.encode(claims, secret, algorithm="HS512")
    hs256_header = encode_segment({"alg": "HS256", "typ": "JWT"})
    forged_body = f"{hs256_header}.{encode_segment(claims)}"
    forged = hmac.new(b"guessed-secret", forged_body.encode(), hashlib.sha256)
    return {
        "alg none": f"{encode_segment({'alg': 'none', 'typ': 'JWT'})}."
        f"{encode_segment(claims)}.",
        "alg None": f"{encode_segment({'alg': 'None'})}.{encode_segment(claims)}.",
        "alg none with signature": f"{encode_segment({'alg': 'none'})}."
        f"{encode_segment(claims)}.{signature}",
        "empty signature": f"{header}.{payload}.",
        "wrong secret": jwt.encode(
            claims, "another-secret-long-enough-for-hs256", algorithm="HS256"
        ),
        "guessed secret": f"{forged_body}."
        + base64.urlsafe_b64encode(forged.digest()).rstrip(b"=").decode(),
        "tampered projects": f"{header}.{other_project}.{signature}",
        "HS512 with the secret": resigned_hs512,
        "expired": issue_token(
            secret, email=FIXTURE_USER, project_ids=[project_id], now=1_000_000
        ),
        "no exp": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"
        ),
        "projects not a list": jwt.encode(
            {**claims, "projects": project_id}, secret, algorithm="HS256"
        ),
        "email not a string": jwt.encode(
            {**claims, "email": ["a@x"]}, secret, algorithm="HS256"
        ),
        "not a JWT": "definitely-not-a-token",
    }


def test_bad_tokens_get_401_on_every_route(
    live_server: LiveServer, world: dict[str, Any]
) -> None:
    tokens = bad_tokens(live_server.secret, live_server.project["id"])
    ids = own_ids(live_server, world)
    epoch = live_server.storage.meta().epoch
    before = database_fingerprint(live_server.storage)
    failures = []
    with httpx.Client(base_url=live_server.api, timeout=30) as http:
        for template, method in protected_routes():
            path, options = route_request(template, method, ids, epoch)
            for name, token in tokens.items():
                headers = {"Authorization": f"Bearer {token}"}
                response = http.request(method, path, headers=headers, **options)
                if response.status_code != 401:
                    failures.append((method, template, name, response.status_code))
                elif method != "HEAD":
                    assert_no_leak(response.json()["message"])
                tally.add("bad_token_requests")
            missing = http.request(method, path, **options)
            if missing.status_code != 401:
                failures.append((method, template, "no token", missing.status_code))
    assert failures == []
    assert database_fingerprint(live_server.storage) == before


# Cross-project access

LIST_ROUTES = {"/users/me", "/datasets/query", "/annotationtasks/query", "/assignments"}


def test_other_project_unreachable_on_all_routes(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    """With a token for the fixture project, the secret project's entities can be
    neither read nor written through any route."""
    ids = secret_ids(world)
    epoch = live_server.storage.meta().epoch
    before = database_fingerprint(live_server.storage)
    failures = []
    for template, method in protected_routes():
        path, options = route_request(template, method, ids, epoch)
        response = client.request(method, path, **options)
        text = response.text
        if template in LIST_ROUTES and template != "/users/me":
            expected = {403}
        elif template == "/users/me":
            expected = {200}
        else:
            expected = {403, 404}
        if response.status_code not in expected:
            failures.append((method, template, response.status_code, text[:200]))
        leaked = [marker for marker in SECRET_MARKERS if marker in text]
        if leaked:
            failures.append((method, template, "leaked", leaked))
        tally.add("cross_project_requests")
    assert failures == []
    assert database_fingerprint(live_server.storage) == before


def test_lists_without_context_hold_only_own_project(
    client: httpx.Client, world: dict[str, Any]
) -> None:
    responses = [
        client.get("/users/me"),
        client.post("/datasets/query", json={"filter": {}}),
        client.post("/annotationtasks/query", json={"filter": {}}),
        client.get("/assignments"),
        client.post("/datasets/query", json={"filter": {"name": "bravo-secret"}}),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        for marker in SECRET_MARKERS:
            assert marker not in response.text
        assert world["secret_project"]["id"] not in response.text
        tally.add("cross_project_requests")
    names = [dataset["name"] for dataset in responses[1].json()["items"]]
    assert "alpha" in names
    assert responses[4].json()["totalItemsCount"] == 0


def test_item_query_cannot_reach_other_dataset(
    client: httpx.Client, world: dict[str, Any]
) -> None:
    """A filter on datasetId or id cannot pull another dataset's items in."""
    dataset_id = world["alpha"]["id"]
    bodies = [
        {"filter": {"datasetId": world["bravo"]["id"]}},
        {"filter": {"id": world["secret_item"]}},
        {"filter": {"$or": [{"datasetId": world["bravo"]["id"]}, {"dir": "/alpha"}]}},
        {"filter": {"dir": "/secret-folder"}},
        {"filter": {}, "join": {"on": {"resource": "annotations"}, "filter": {}}},
    ]
    for body in bodies:
        response = client.post(f"/datasets/{dataset_id}/query", json=body)
        assert response.status_code in (200, 400), response.text
        for marker in SECRET_MARKERS:
            assert marker not in response.text
        tally.add("cross_project_requests")


# Listening address and file modes


def listening_addresses(port: int) -> list[str]:
    """Return the local addresses of sockets listening on ``port`` (Linux)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local, state = fields[1], fields[3]
                address, _, port_hex = local.partition(":")
                if state == "0A" and int(port_hex, 16) == port:
                    addresses.append(address)
    return addresses


def test_serve_binds_loopback_by_default(tmp_path: Path) -> None:
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("reading listening sockets needs Linux's /proc/net/tcp")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            localsync_command(
                "serve", "--db", str(tmp_path / "server.db"), "--port", str(port)
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    try:
        deadline = time.monotonic() + 60
        while not listening_addresses(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        addresses = listening_addresses(port)
        # 0100007F is 127.0.0.1 as /proc/net/tcp writes it (little-endian hex).
        assert addresses == ["0100007F"], addresses
        assert mode_of(tmp_path / "server.db") == 0o600
        tally.add("bind_checks")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def with_umask_zero() -> None:
    os.umask(0)


def test_replica_files_are_private_under_open_umask(
    live_server: LiveServer, world: dict[str, Any], token_factory, tmp_path: Path
) -> None:
    path = tmp_path / "private.db"
    env = cli_env()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            localsync_command(*args, "--store", str(path)),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=with_umask_zero,
            check=False,
        )

    cloned = run(
        "clone",
        live_server.url,
        *("--project", FIXTURE_PROJECT, "--dataset", "alpha"),
        *("--token", token_factory()),
    )
    assert cloned.returncode == 0, cloned.stderr
    assert mode_of(path) == 0o600
    changed = run("status", "set", "completed", "--all", "--task", "alpha-task")
    assert changed.returncode == 0, changed.stderr

    # A watch process keeps the replica open, so its -wal and -shm files exist.
    watcher = subprocess.Popen(
        localsync_command("sync", "--watch", "--interval", "0.5", "--store", str(path)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=with_umask_zero,
    )
    try:
        companions = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        deadline = time.monotonic() + 60
        while not all(file.exists() for file in companions):
            assert watcher.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        wait_until_pushed(path)
        for file in (path, *companions):
            assert mode_of(file) == 0o600, (file, oct(mode_of(file)))
            tally.add("file_mode_checks")
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=30)
    assert mode_of(path) == 0o600


def wait_until_pushed(path: Path) -> None:
    deadline = time.monotonic() + 60
    with Replica(path) as replica:
        while replica.conn.execute(
            "SELECT COUNT(*) FROM journal WHERE state = 'pending'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the watch process pushed nothing"
            time.sleep(0.1)

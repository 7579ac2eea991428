"""Session calls, the default replica, handles on other files, and SDK calls
localsync does not offer."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import localsync as dl
from localsync.errors import NotSupportedError, StoreError
from localsync.store import Replica
from tests.store_helpers import make_replica


def jwt(claims: dict[str, Any]) -> str:
    """Return an unsigned three-part JWT with these claims."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "replica.db"
    replica, _ = make_replica(path, 4)
    replica.close()
    monkeypatch.setenv("LOCALSYNC_STORE", str(path))
    yield path
    dl.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network call attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def setting(path: Path, key: str) -> str | None:
    with Replica(path) as replica:
        return replica.setting(key)


def test_token_expiry_rules(store: Path, no_network: None) -> None:
    assert dl.token_expired() is True
    now = time.time()
    cases = [
        (jwt({"exp": now + 3600, "email": "a@example.com"}), False),
        (jwt({"exp": now + 30}), True),
        (jwt({"email": "a@example.com"}), True),
        (jwt({"exp": now - 10}), True),
    ]
    for token, expired in cases:
        dl.login_token(token)
        assert setting(store, "token") == token
        assert dl.token_expired() is expired, token
    dl.login_token(jwt({"exp": now + 30}))
    assert dl.token_expired(t=10) is False


def test_invalid_token_rejected(store: Path, no_network: None) -> None:
    good = jwt({"exp": time.time() + 3600})
    dl.login_token(good)
    for bad in ("not-a-token", "a.b", "a.!!!.c", ""):
        with pytest.raises(dl.exceptions.BadRequest, match="Invalid token"):
            dl.login_token(bad)
    assert setting(store, "token") == good


def test_token_email_is_creator(store: Path) -> None:
    dl.login_token(jwt({"exp": time.time() + 3600, "email": "ann@example.com"}))
    item = dl.items.list().items[0]
    item.update_status("completed")
    with Replica(store) as replica:
        assert replica.journal()[0]["creator"] == "ann@example.com"


def test_login_returns_at_once(store: Path, no_network: None) -> None:
    started = time.monotonic()
    assert dl.login() is False
    assert time.monotonic() - started < 1


def test_environments_recorded(store: Path, no_network: None) -> None:
    url = "http://127.0.0.1:9/api/v1"
    dl.add_environment(
        environment=url, alias="local", gate_url="http://127.0.0.1:9", verify_ssl=False
    )
    dl.setenv("local")
    assert setting(store, "environment") == url
    environments = json.loads(setting(store, "environments") or "{}")
    assert environments[url]["alias"] == "local"
    assert environments[url]["verify_ssl"] is False
    assert setting(store, "remote_url") is None


def test_default_store_follows_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    for path, count in ((first, 3), (second, 5)):
        replica, _ = make_replica(path, count)
        replica.close()
    monkeypatch.setenv("LOCALSYNC_STORE", str(first))
    assert dl.items.list().items_count == 3
    monkeypatch.setenv("LOCALSYNC_STORE", str(second))
    assert dl.items.list().items_count == 5
    dl.close()


def test_default_store_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALSYNC_STORE", raising=False)
    assert dl.default_store_path() == Path(".localsync/replica.db")


def test_handles_on_two_replicas(tmp_path: Path) -> None:
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for path in paths:
        replica, _ = make_replica(path, 2)
        replica.close()
    with dl.Replica(paths[0]) as one, dl.Replica(paths[1]) as two:
        item = one.items.list().items[0]
        item.update_status("approved")
        assert one.tasks.list()[0].status_counts()[("approved")] == 1
        assert two.tasks.list()[0].status_counts() == {None: 2}


def test_missing_replica_is_store_error(tmp_path: Path) -> None:
    with dl.Replica(tmp_path / "absent.db") as api:
        with pytest.raises(StoreError, match="does not exist"):
            api.projects.get()
    assert not (tmp_path / "absent.db").exists()


def test_unsupported_calls_named(store: Path) -> None:
    for name in ("annotations", "pipelines", "login_m2m"):
        with pytest.raises(
            NotSupportedError, match=f"dl.{name} is not available offline"
        ):
            getattr(dl, name)
        assert not hasattr(dl, name)
    item = dl.items.list().items[0]
    with pytest.raises(NotSupportedError, match="item.download is not available"):
        item.download()
    with pytest.raises(AttributeError) as caught:
        item.no_such_attribute  # noqa: B018
    assert not isinstance(caught.value, NotSupportedError)
    with pytest.raises(NotSupportedError, match="replica.services"):
        dl.Replica(store).services  # noqa: B018


def test_module_exports() -> None:
    assert dl.ITEM_STATUS_DISCARDED == "discard"
    assert dl.ItemStatus.DISCARDED is dl.ITEM_STATUS_DISCARDED
    assert dl.exceptions.NotFound is dl.errors.NotFound
    assert dl.Filters(field="annotated", values=True).prepare()["filter"] == {
        "$and": [{"hidden": False}, {"type": "file"}, {"annotated": True}]
    }
    assert dl.FILTERS_OPERATIONS_IN == "in"
    assert dl.ItemAction("needs_review").to_json()["displayName"] == "needs_review"
    assert dl.__version__ == "0.1.0"
    assert dl.Replica is dl.ReplicaApi


def test_login_as_other_user_is_rejected(store: Path) -> None:
    with Replica(store) as replica:
        replica.set_setting("user_email", "ann@example.com")
    ann = jwt({"exp": time.time() + 3600, "email": "ann@example.com"})
    dl.login_token(ann)

    with pytest.raises(dl.exceptions.BadRequest, match="belongs to ann@example.com"):
        dl.login_token(jwt({"exp": time.time() + 3600, "email": "bob@example.com"}))

    assert setting(store, "token") == ann

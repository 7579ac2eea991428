"""The server's request body limit: 413 before the body is read to the end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from localsync.cli import main
from localsync.hlc import Timestamp
from localsync.server.app import app_from_env
from localsync.server.limits import MAX_BODY_ENV
from tests.sync_support import World, make_world

LIMIT_MB = 1
OVER_LIMIT = b" " * (LIMIT_MB * 1024 * 1024 + 1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = make_world(tmp_path_factory.mktemp("limits"), 5)
    world.runner.stop()
    world.runner.app_options = {"max_body_mb": LIMIT_MB}
    world.runner.start()
    yield world
    world.runner.close()


def push_body(world: World, padding: bytes = b"") -> bytes:
    """Return a valid one-op push body, with whitespace padding after the JSON."""
    body = {
        "replicaId": "a" * 32,
        "epoch": world.storage.meta().epoch,
        "datasetId": world.dataset["id"],
        "ops": [
            {
                "opId": "b" * 32,
                "seq": 1,
                "itemId": world.item_ids[0],
                "taskId": world.task["id"],
                "status": "completed",
                "hlc": str(Timestamp(1_733_400_000_000, 0, "a" * 32)),
                "creator": None,
            }
        ],
    }
    return json.dumps(body).encode() + padding


def post_push(world: World, content, *, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or world.token}"}
    return httpx.post(
        f"{world.url}/api/v1/sync/push",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_declared_length_over_limit_is_413(world: World) -> None:
    pushed = world.server_count("SELECT COUNT(*) FROM pushed_ops")

    response = post_push(world, push_body(world, OVER_LIMIT))

    assert response.status_code == 413
    message = response.json()["message"]
    assert "limit of 1 MiB" in message
    assert "--max-body-mb" in message
    assert world.server_count("SELECT COUNT(*) FROM pushed_ops") == pushed


def test_chunked_body_over_limit_is_413(world: World) -> None:
    pushed = world.server_count("SELECT COUNT(*) FROM pushed_ops")

    response = post_push(world, chunks(push_body(world, OVER_LIMIT)))

    assert response.status_code == 413
    assert "limit of 1 MiB" in response.json()["message"]
    assert world.server_count("SELECT COUNT(*) FROM pushed_ops") == pushed


def test_body_under_limit_is_applied(world: World) -> None:
    response = post_push(world, chunks(push_body(world, b" " * 1000)))

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [result["outcome"] for result in results] == ["applied"]


def test_large_body_without_token_is_401(world: World) -> None:
    response = post_push(world, push_body(world, OVER_LIMIT), token="not-a-token")

    assert response.status_code == 401


def test_serve_rejects_zero_limit(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--db", str(tmp_path / "s.db"), "--max-body-mb", "0"]
    )

    assert result.exit_code == 2
    assert "--max-body-mb" in result.output
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_bad_limit_variable_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LOCALSYNC_DB", str(tmp_path / "s.db"))
    monkeypatch.setenv(MAX_BODY_ENV, value)

    with pytest.raises(RuntimeError) as raised:
        app_from_env()

    assert f"{MAX_BODY_ENV}={value!r}" in str(raised.value)
    assert not (tmp_path / "s.db").exists()

"""A new epoch for a restored server database, on both storage backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localsync.server.storage import open_storage
from tests.pg_fixtures import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "server.db")
    else:
        with fresh_database("localsync_epoch") as url:
            yield url


def test_renew_epoch_survives_reopen(database: str) -> None:
    storage = open_storage(database)
    old = storage.meta().epoch

    new = storage.renew_epoch()
    storage.close()
    reopened = open_storage(database)

    assert new != old
    assert len(new) == 32
    assert reopened.meta().epoch == new
    reopened.close()

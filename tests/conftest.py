"""Fixtures shared by the test modules: real export data and fresh replicas."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.server_fixtures"]

REPO = Path(__file__).resolve().parent.parent
EXPORTS = Path(
    os.environ.get(
        "LOCALSYNC_EXPORTS", REPO.parent / "shared" / "datasets" / "dataloop-exports"
    )
)


@pytest.fixture(scope="session")
def exports_dir() -> Path:
    """The real Dataloop exports; tests that need them skip when they are absent."""
    if not EXPORTS.is_dir():
        pytest.skip(
            f"real Dataloop exports not found at {EXPORTS}; set LOCALSYNC_EXPORTS"
        )
    return EXPORTS


@pytest.fixture
def replica_path(tmp_path: Path) -> Path:
    return tmp_path / "replica.db"

"""Fixtures of the integration tests: a store on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.db import Store, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on SQLite (a file in tmp_path) and on PostgreSQL (a schema of its own)."""
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else None
    opened = open_store(url or request.getfixturevalue("pg_schema_url"))
    yield opened
    opened.close()

"""Fixtures of the integration tests: the store on each backend the gateway supports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.db import Store, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on SQLite (a file in tmp_path) and on PostgreSQL (a schema of its own)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_schema_url")
    opened = open_store(url)
    yield opened
    opened.close()

"""Fixtures of the fault tests: the system tests' gateways, and a private PostgreSQL cluster to stop."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg_cluster import PgCluster, new_cluster
from tests.system.conftest import gateways

__all__ = ["gateways", "pg_cluster", "store_url"]


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this test's own (never the shared server), destroyed afterwards.

    Its folder is outside pytest's ``tmp_path``, which the ``postgres`` user could not enter.
    """
    try:
        cluster = new_cluster(Path(tempfile.mkdtemp(prefix="mssgw-pg-")))
    except (RuntimeError, OSError) as error:
        if os.environ.get("MSSGW_REQUIRE_PG") == "1":
            raise
        pytest.skip(f"cannot start a private PostgreSQL cluster: {error}")
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The store under test: SQLite in the state dir (""), or a schema of its own on the shared server."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_schema_url")
    return url

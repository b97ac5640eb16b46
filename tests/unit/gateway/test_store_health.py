"""Store outages as weather: one log line per episode, a retry until the store answers, a full disk told
apart from other faults (no database: the faults are built as the drivers raise them)."""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from gateway.errors import SchemaMismatch
from gateway.store.faults import describe, is_disk_full
from gateway.store_health import Abandoned, Reported, StoreHealth


def sqlite_full() -> OperationalError:
    """What SQLAlchemy raises when SQLite finds no room (``SQLITE_FULL``)."""
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA max_page_count=1")
    try:
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as error:
        return OperationalError("INSERT", {}, error)
    raise AssertionError("SQLite found room")


def test_a_full_disk_is_told_apart_from_a_lost_connection() -> None:
    assert is_disk_full(sqlite_full()) and describe(sqlite_full()) == "disk-full"
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    lost = OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))
    assert not is_disk_full(lost) and describe(lost) == "OperationalError"


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    changes: list[tuple[bool, str]] = []
    health = StoreHealth(backoff_initial=0.001, on_change=lambda up, reason: changes.append((up, reason)))
    failures = iter([sqlite_full(), sqlite_full(), sqlite_full()])

    async def call() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "done"

    with caplog.at_level(logging.INFO, logger="gateway.store_health"):
        assert asyncio.run(health.retry("claim-due", call)) == "done"
    assert [r.getMessage() for r in caplog.records] == ["store-unavailable", "store-back"]
    assert changes == [(False, "disk-full"), (True, "")]
    assert health.up and not health.disk_full


def test_a_stopping_caller_stops_waiting_and_a_schema_mismatch_is_not_weather() -> None:
    async def down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionError("refused"))

    async def mismatch() -> None:
        raise SchemaMismatch("the store has schema version 1, this mssgw expects 2")

    health = StoreHealth(backoff_initial=0.001)
    with pytest.raises(Abandoned):
        asyncio.run(health.retry("claim-due", down, abandon=lambda: True))
    assert not health.up
    with pytest.raises(SchemaMismatch):
        asyncio.run(health.retry("open-store", mismatch))


def test_a_fault_the_call_already_reported_is_waited_for_without_being_told_again() -> None:
    """The IMAP bridge's case: the intake told the health (a full disk); the retry must not forget it."""
    health = StoreHealth(backoff_initial=0.001)
    disk_full_at_each_try: list[bool] = []

    async def ingest() -> str:
        disk_full_at_each_try.append(health.disk_full)
        if len(disk_full_at_each_try) < 3:
            health.failed("intake-commit", sqlite_full())
            raise Reported("452 4.3.1")
        return "stored"

    assert asyncio.run(health.retry("imap-import", ingest)) == "stored"
    assert disk_full_at_each_try == [False, True, True]
    assert health.up and not health.disk_full

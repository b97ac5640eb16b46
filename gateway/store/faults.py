"""Telling a store fault — the database, not our code, failed — and a full disk among them (pure).

The relay, the scheduler and the intake treat these as weather (``gateway.store_health``); anything else
is a bug and is handled as one.
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StoreError

STORE_FAULTS: tuple[type[BaseException], ...] = (SQLAlchemyError, StoreError)
"""What a store call raises when the database, not our code, is at fault (SQLAlchemy wraps the drivers'
errors: a PostgreSQL connection lost, SQLite's disk full)."""


_NO_ROOM = ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE")
"""SQLite's words for a full disk: no page to write, or no room for the WAL index at opening."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the disk holding the store is full."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorname", "") in _NO_ROOM:
            return True
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else (seen.__cause__ or seen.__context__)
    return False


def describe(error: BaseException) -> str:
    """A one-line, content-free reason for logs: the error class and whether the disk is full."""
    return "disk-full" if is_disk_full(error) else type(error).__name__

"""Store outages are weather: a failed store call waits (backoff) and tries again; the daemon stays up.

A PostgreSQL restart or failover, or SQLite's disk filling up, must not end the daemon: the relay's store
calls go through ``StoreHealth.retry``, the intake reports its commits here, and the listeners keep
answering (451, or 452 on a full disk) until the store is back. One episode — from the first failure to
the first success after it — logs ``store-unavailable`` once and ``store-back`` once, never a line per
attempt; ``up`` is what ``mssgw_store_up`` and systemd's ``STATUS=`` show meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StoreError
from gateway.logsetup import log_event

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_FAULTS: tuple[type[BaseException], ...] = (SQLAlchemyError, StoreError, sqlite3.Error, OSError)
"""What a store call raises when the database, not our code, is at fault (OSError: a disk full on SQLite,
or a socket to PostgreSQL)."""


class Abandoned(Exception):
    """The caller stopped waiting for the store (the daemon is stopping); nothing was done."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the disk holding the store is full."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorname", "") == "SQLITE_FULL":
            return True
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else (seen.__cause__ or seen.__context__)
    return False


def describe(error: BaseException) -> str:
    """A one-line, content-free reason for logs: the error class and whether the disk is full."""
    return "disk-full" if is_disk_full(error) else type(error).__name__


class StoreHealth:
    """Tracks whether the store answers; ``on_change`` hears each episode's start and end."""

    def __init__(
        self,
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        on_change: Callable[[bool, str], None] = lambda up, reason: None,
    ) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_change = on_change
        self.up = True
        self.disk_full = False

    def failed(self, what: str, error: BaseException) -> None:
        """A store call failed; the first failure of an episode is logged and announced."""
        self.disk_full = is_disk_full(error)
        if not self.up:
            return
        self.up = False
        reason = describe(error)
        log_event(log, "store-unavailable", logging.ERROR, call=what, error=reason)
        self.on_change(False, reason)

    def succeeded(self) -> None:
        """A store call worked: an episode, if one was running, is over."""
        self.disk_full = False
        if self.up:
            return
        self.up = True
        log_event(log, "store-back")
        self.on_change(True, "")

    async def retry(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        abandon: Callable[[], bool] = lambda: False,
        interrupt: asyncio.Event | None = None,
    ) -> T:
        """``await call()`` until it does not fail for a store fault; raises ``Abandoned`` if ``abandon()``
        turns true between two tries. ``interrupt`` cuts a backoff wait short (then ``abandon`` is asked)."""
        failures = 0
        while True:
            try:
                result = await call()
            except STORE_FAULTS as error:
                self.failed(what, error)
                failures += 1
            else:
                self.succeeded()
                return result
            if abandon():
                raise Abandoned(what)
            delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 30))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((interrupt or asyncio.Event()).wait(), delay)
            if abandon():
                raise Abandoned(what)

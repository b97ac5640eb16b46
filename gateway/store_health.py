"""Store outages are weather: a failed store call waits (backoff) and tries again; the daemon stays up.

A PostgreSQL restart or failover, or SQLite's disk filling up, must not end the daemon: the relay's store
calls go through ``StoreHealth.retry``, the intake reports its commits here, and the listeners keep
answering (451, or 452 on a full disk) until the store is back. One episode — from the first failure to
the first success after it — logs ``store-unavailable`` once and ``store-back`` once, never a line per
attempt; ``up`` is what ``mssgw_store_up`` and systemd's ``STATUS=`` show meanwhile. On SQLite a full
disk also gives back the room the daemon set aside (``gateway.store.reserve``), so that the relay goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.errors import SchemaMismatch, StoreError
from gateway.logsetup import log_event
from gateway.store.faults import STORE_FAULTS, describe, is_disk_full
from gateway.store.reserve import SpaceReserve

log = logging.getLogger(__name__)

T = TypeVar("T")


class Abandoned(Exception):
    """The caller stopped waiting for the store (the daemon is stopping); nothing was done."""


class Reported(StoreError):
    """A store fault the failing call already told its ``StoreHealth`` (the intake does, with the cause):
    ``retry`` backs off without telling it again, which would lose what the cause said (a full disk)."""


class StoreHealth:
    """Tracks whether the store answers; ``on_change`` hears each episode's start and end."""

    def __init__(
        self,
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        on_change: Callable[[bool, str], None] = lambda up, reason: None,
        reserve: SpaceReserve | None = None,
    ) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_change = on_change
        self.up = True
        self.disk_full = False
        self.reserve = reserve

    def failed(self, what: str, error: BaseException) -> None:
        """A store call failed; the first failure of an episode is logged and announced."""
        self.disk_full = is_disk_full(error)
        if self.disk_full and self.reserve is not None:
            self.reserve.release()
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

    @property
    def room_set_aside(self) -> bool:
        """Whether the reserve is held (or there is none): the intake's check without touching the disk."""
        return self.reserve is None or self.reserve.held

    def room_for_intake(self) -> bool:
        """Whether new mail may be stored: not while the reserve is given back and cannot be set aside
        again (the room left is the relay's). Touches the disk: call it from a worker thread."""
        return self.reserve is None or self.reserve.ensure()

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
            except SchemaMismatch:
                raise
            except Reported:
                failures += 1
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

"""Coarse periodic jobs (trust-list refresh, certificate checks, later channel expiry and retention).

One APScheduler ``AsyncIOScheduler`` in the daemon's loop, as a daemon service; the job bodies live with
their subject and are coroutines. Each run is a loop boundary (STYLE.md §5): an exception is logged and the
job runs again at its next time — a store fault is weather, told to ``StoreHealth`` (logged once per
outage, no traceback). Never used for the relay, which wakes on events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.logsetup import log_event
from gateway.settings import Settings
from gateway.store.faults import STORE_FAULTS
from gateway.store_health import StoreHealth

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class Scheduler:
    """Runs registered jobs every so many seconds; a job registered again replaces the previous one."""

    def __init__(self, health: StoreHealth | None = None) -> None:
        self.health = health or StoreHealth()
        self._scheduler: AsyncIOScheduler | None = None
        self._pending: dict[str, tuple[float, Job, bool]] = {}

    def every(self, name: str, seconds: float, job: Job, *, now: bool = False) -> None:
        """Run ``job`` every ``seconds`` (and once at once with ``now``); usable before ``start``."""
        if self._scheduler is None:
            self._pending[name] = (seconds, job, now)
            return
        # Without ``next_run_time`` the trigger computes the first run (passing None would pause the job).
        first: dict[str, datetime] = {"next_run_time": datetime.now(UTC)} if now else {}
        self._scheduler.add_job(
            _guarded(name, job, self.health),
            "interval",
            seconds=seconds,
            id=name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            **first,
        )

    def cancel(self, name: str) -> None:
        """Stop running ``name`` (nothing if it is not scheduled)."""
        self._pending.pop(name, None)
        if self._scheduler is not None and self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        self._scheduler.start()
        pending, self._pending = self._pending, {}
        for name, (seconds, job, now) in pending.items():
            self.every(name, seconds, job, now=now)

    async def stop(self, grace: float) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        # The services owning the jobs register them again with their new intervals.
        return lambda: None


def _guarded(name: str, job: Job, health: StoreHealth) -> Job:
    async def run() -> None:
        try:
            await job()
        except STORE_FAULTS as error:
            health.failed(f"job:{name}", error)
        except Exception:
            # A loop boundary (STYLE.md §5): the job failed this time; it runs again at its next time.
            log_event(log, "job-failed", logging.ERROR, exc_info=True, job=name)

    return run

"""The scheduler service: coarse periodic jobs of the daemon (channel expiry; later trust-list refresh,
certificate checks, retention), on APScheduler in the daemon's own event loop.

A job is a coroutine given the current settings and the time of the injected clock, so tests drive it
with any date and never sleep; each job runs once at start, then every ``interval(settings)`` seconds, never
twice at once. A failing job is logged and runs again at its next time: it never stops the daemon.
Other services' work (the queue) never waits on a job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gateway.logsetup import log_event
from gateway.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
JobFunction = Callable[[Settings, datetime], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: its name (for logs), its interval read from the settings, and its work."""

    name: str
    interval: Callable[[Settings], float]
    run: JobFunction


class Scheduler:
    """Runs registered jobs periodically; add jobs before ``start``."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._done: dict[str, asyncio.Event] = {}

    def add(self, job: Job) -> None:
        """Register a job (names are unique)."""
        if job.name in self.jobs:
            raise ValueError(f"a job named {job.name!r} is already registered")
        self.jobs[job.name] = job

    async def start(self) -> None:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        for job in self.jobs.values():
            scheduler.add_job(
                self.run_now,
                IntervalTrigger(seconds=max(job.interval(self.settings), 1.0), timezone=UTC),
                args=[job.name],
                id=job.name,
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
            )
        scheduler.start()
        self._scheduler = scheduler

    async def run_now(self, name: str) -> object:
        """Run one job with the clock's time, logging (not raising) its failure; its result or ``None``."""
        job = self.jobs[name]
        result: object = None
        try:
            result = await job.run(self.settings, self.clock())
        except Exception as error:
            # A job boundary (STYLE.md §5): the job runs again at its next time.
            log_event(log, "job-failed", logging.ERROR, job=name, error=type(error).__name__)
        self.completed(name).set()
        return result

    def completed(self, name: str) -> asyncio.Event:
        """Set each time ``name`` finishes a run (tests and the daemon wait on it instead of sleeping)."""
        return self._done.setdefault(name, asyncio.Event())

    async def stop(self, grace: float) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings
            if self._scheduler is None:
                return
            for job in self.jobs.values():
                self._scheduler.reschedule_job(
                    job.name, trigger=IntervalTrigger(seconds=max(job.interval(settings), 1.0), timezone=UTC)
                )

        return apply

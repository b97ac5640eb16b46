"""The daemon's side of the directory: says at start which directory is in force, and refreshes it from
``directory.url`` on schedule, in a worker thread (the import commits batch by batch, so deliveries and
lookups go on meanwhile; they switch to the new directory in one transaction at its end)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.directory.update import update_directory
from gateway.errors import GatewayError
from gateway.logsetup import log_event
from gateway.scheduler import Scheduler
from gateway.settings import Settings
from gateway.store.directory import DirectoryStore

log = logging.getLogger(__name__)

JOB = "directory-refresh"


class DirectoryService:
    """A daemon service (start, stop, prepare_reload) over the store's directory."""

    def __init__(self, settings: Settings, directory: DirectoryStore, scheduler: Scheduler) -> None:
        self.settings = settings
        self.directory = directory
        self.scheduler = scheduler

    async def start(self) -> None:
        current = await asyncio.to_thread(self.directory.current)
        if current is not None:
            log_event(
                log,
                "directory-in-force",
                addresses=current.addresses,
                file=current.file_timestamp.isoformat(timespec="minutes") if current.file_timestamp else None,
            )
        self._schedule(self.settings, current.finished_at if current else None)

    async def stop(self, grace: float) -> None:
        self.scheduler.cancel(JOB)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings
            current = self.directory.current()
            self._schedule(settings, current.finished_at if current else None)

        return apply

    def _schedule(self, settings: Settings, loaded: datetime | None) -> None:
        if not settings.directory.url:
            self.scheduler.cancel(JOB)
            return
        refresh = settings.directory.refresh
        stale = loaded is None or (datetime.now(UTC) - loaded).total_seconds() >= refresh
        self.scheduler.every(JOB, refresh, self.refresh, now=stale)

    async def refresh(self) -> None:
        """Import ``directory.url``; a file that cannot be fetched or is refused leaves the one in force."""
        settings = self.settings
        url = settings.directory.url
        try:
            record = await asyncio.to_thread(
                update_directory, self.directory, url, settings, datetime.now(UTC)
            )
        except GatewayError as error:
            log_event(log, "directory-refresh-failed", logging.ERROR, url=url, reason=str(error))
            return
        log_event(
            log,
            "directory-updated",
            url=url,
            addresses=record.addresses,
            lines=record.lines,
            duplicates=record.duplicates,
        )

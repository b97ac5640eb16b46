"""Channel expiry: a daemon service whose scheduler job closes the citizen channels idle too long.

No reply window is published (MSSANTE.md §7.7), so ``channels.inactivity`` is a setting (90 days, a local
choice). The job runs at start and every ``channels.expiry_check``, and reads only the clock it is given:
tests move time forward instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.logsetup import audit
from gateway.scheduler import Scheduler
from gateway.settings import Settings
from gateway.store.channels import ChannelStore

JOB_NAME = "channel-expiry"


class ChannelExpiry:
    """Registers the expiry job with the scheduler; ``ran`` is set after each run (tests wait on it)."""

    def __init__(
        self, settings: Settings, channels: ChannelStore, scheduler: Scheduler, clock: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.channels = channels
        self.scheduler = scheduler
        self.clock = clock
        self.ran = asyncio.Event()

    async def start(self) -> None:
        self.scheduler.every(JOB_NAME, self.settings.channels.expiry_check, self.run, now=True)

    async def stop(self, grace: float) -> None:
        self.scheduler.cancel(JOB_NAME)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings
            self.scheduler.every(JOB_NAME, settings.channels.expiry_check, self.run, now=True)

        return apply

    async def run(self) -> None:
        """Expire the channels idle since ``inactivity`` before the clock's now."""
        now = self.clock()
        idle_since = now - timedelta(seconds=self.settings.channels.inactivity)
        try:
            expired = await asyncio.to_thread(self.channels.expire, now, idle_since)
        finally:
            self.ran.set()
        for channel in expired:
            audit("channel-expired", channel=channel, idle_since=idle_since.isoformat(timespec="seconds"))

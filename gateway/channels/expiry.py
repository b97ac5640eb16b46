"""Channel expiry: the scheduler job that closes citizen channels idle for ``channels.inactivity``.

No reply window is published (MSSANTE.md §7.7), so the duration is a setting (default 90 days, a local
choice). The job only reads the clock it is given: tests move time forward instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from gateway.logsetup import log_event
from gateway.scheduler import Job
from gateway.settings import Settings
from gateway.store.channels import ChannelStore

log = logging.getLogger(__name__)

JOB_NAME = "channel-expiry"


def expiry_job(channels: ChannelStore) -> Job:
    """The job to add to the scheduler."""

    async def run(settings: Settings, now: datetime) -> int:
        idle_since = now - timedelta(seconds=settings.channels.inactivity)
        count = await asyncio.to_thread(channels.expire, now, idle_since)
        if count:
            log_event(
                log, "channels-expired", count=count, idle_since=idle_since.isoformat(timespec="seconds")
            )
        return count

    return Job(JOB_NAME, lambda settings: settings.channels.expiry_check, run)

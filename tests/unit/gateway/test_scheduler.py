"""The scheduler service: jobs run at start with the injected clock's time, a failing job is logged and does
not stop the others, a reload takes the new settings; nothing here sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime

import pytest

from gateway import settings as settings_module
from gateway.scheduler import Job, Scheduler
from gateway.settings import Settings

NOW = datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
SETTINGS = settings_module.from_mapping({"routes": [{"domain": "*", "transport": "folder", "path": "/x"}]})


async def test_jobs_run_at_start_with_the_clock_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, datetime]] = []

    async def good(settings: Settings, now: datetime) -> None:
        seen.append(("good", now))

    async def bad(settings: Settings, now: datetime) -> None:
        raise RuntimeError("boom")

    scheduler = Scheduler(SETTINGS, lambda: NOW)
    scheduler.add(Job("good", lambda s: 60.0, good))
    scheduler.add(Job("bad", lambda s: 60.0, bad))
    with pytest.raises(ValueError, match="already registered"):
        scheduler.add(Job("good", lambda s: 60.0, good))
    await scheduler.start()
    try:
        await asyncio.wait_for(
            asyncio.gather(scheduler.completed("good").wait(), scheduler.completed("bad").wait()), 10
        )
    finally:
        await scheduler.stop(0)
    assert seen == [("good", NOW)]
    [failure] = [r for r in caplog.records if r.getMessage() == "job-failed"]
    assert failure.levelno == logging.ERROR
    assert failure.mssgw_fields == {"job": "bad", "error": "RuntimeError"}


async def test_a_reload_gives_jobs_the_new_settings() -> None:
    got: list[float] = []

    async def record(settings: Settings, now: datetime) -> None:
        got.append(settings.channels.inactivity)

    scheduler = Scheduler(SETTINGS, lambda: NOW)
    scheduler.add(Job("record", lambda s: s.channels.expiry_check, record))
    await scheduler.start()
    try:
        await asyncio.wait_for(scheduler.completed("record").wait(), 10)
        fresh = dataclasses.replace(
            SETTINGS, channels=dataclasses.replace(SETTINGS.channels, inactivity=3600.0, expiry_check=120.0)
        )
        scheduler.prepare_reload(fresh)()
        await scheduler.run_now("record")
    finally:
        await scheduler.stop(0)
    assert got == [90 * 86400.0, 3600.0]

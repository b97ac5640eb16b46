"""The scheduler keeps running a job that failed once; the metric functions other modules call record
under the names and labels the dashboards use."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway import metrics
from gateway.scheduler import Scheduler


async def test_a_failing_job_is_logged_and_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    again = asyncio.Event()

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        again.set()

    scheduler = Scheduler()
    scheduler.every("flaky", 0.05, job, now=True)
    await scheduler.start()
    try:
        await asyncio.wait_for(again.wait(), 10)
    finally:
        await scheduler.stop(0)
    assert len(runs) >= 2
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and "job-failed" in r.getMessage()]
    assert failed and failed[0].mssgw_fields == {"job": "flaky"}  # type: ignore[attr-defined]


def test_listener_and_imap_functions_record_under_stable_names() -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("mssgw_messages_refused_total", listener="operator", reason="trust-list")
    metrics.message_refused("operator", "trust-list")
    metrics.message_accepted("submission")
    metrics.imap_lag("bal-app@hopital.mssante.fr", 12.5)
    assert sample("mssgw_messages_refused_total", listener="operator", reason="trust-list") == before + 1
    assert sample("mssgw_messages_accepted_total", listener="submission") >= 1
    assert sample("mssgw_imap_lag_seconds", account="bal-app@hopital.mssante.fr") == 12.5

"""Sends the ZAM owed to HL7 producers (``gateway.store.zams``) to each producer's ``zam_host:zam_port``.

A scheduler job: every ``CHECK_INTERVAL`` it claims the due ZAM (a lease, so a crash mid-send retries them),
builds each from its row (``mappers.hl7_zam``), sends it over MLLP and waits for the producer's ACK. AA
marks it done; any other code, no answer within the producer's ``zam_ack_timeout`` or no connection puts
it back after the next delay of its ``zam_retry_schedule`` (the last one repeats: a ZAM is never dropped).
The row stays in the store either way, visible in ``mssgw queue show`` of the original message. Store
faults are the scheduler's (StoreHealth). Counted in ``mssgw_hl7_zams_total{kind,outcome}``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from gateway import metrics
from gateway.logsetup import log_event
from gateway.outbound.retry import next_attempt_at
from gateway.outbound.transports.mllp import NoAck, acknowledged
from gateway.scheduler import Scheduler
from gateway.settings import Hl7ProducerSettings, Settings
from gateway.store.zams import OwedZam, ZamQueue
from gateway.tls import client_context
from mappers.hl7_zam import ZamEvent, ZamFailure, ZamHeader, ZamReceipt, build_zam

log = logging.getLogger(__name__)
_DEFAULTS: Final = Hl7ProducerSettings(name="", application="")

JOB_NAME: Final = "zam-sender"
CHECK_INTERVAL: Final = 2.0
BATCH: Final = 100


class ZamSender:
    """The daemon service; ``ran`` is set after each run (tests wait on it)."""

    def __init__(
        self, settings: Settings, zams: ZamQueue, scheduler: Scheduler, clock: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.zams = zams
        self.scheduler = scheduler
        self.clock = clock
        self.ran = asyncio.Event()

    async def start(self) -> None:
        self.scheduler.every(JOB_NAME, CHECK_INTERVAL, self.run, now=True)

    async def stop(self, grace: float) -> None:
        self.scheduler.cancel(JOB_NAME)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings

        return apply

    async def run(self) -> None:
        """Send every due ZAM once."""
        try:
            due = await asyncio.to_thread(self.zams.claim_due, self.clock(), self._lease(), BATCH)
            for zam in due:
                await self._send(zam)
        finally:
            self.ran.set()

    async def _send(self, zam: OwedZam) -> None:
        producer = self._producer(zam.producer)
        if producer is None or not producer.zam_host:
            await self._later(zam, "no zam_host configured for this producer", producer)
            return
        hl7 = self.settings.hl7
        header = ZamHeader(hl7.application, hl7.facility, producer.application, producer.facility)
        failure = None
        if zam.failure_code is not None:
            failure = ZamFailure(zam.failure_code, zam.failure_text or "")
        receipt = ZamReceipt(ZamEvent(zam.event), zam.control_id, zam.address, failure)
        control_id = f"ZAM{zam.id}-{uuid.uuid4().hex[:12]}"
        text = build_zam(header, receipt, self.clock(), control_id)
        context = client_context(self.settings.tls) if producer.zam_tls else None
        try:
            ack = await acknowledged(
                producer.zam_host,
                producer.zam_port,
                text.encode("utf-8"),
                context,
                producer.zam_ack_timeout,
                control_id,
            )
        except NoAck as error:
            await self._later(zam, str(error), producer)
            return
        if ack.code == "AA":
            await asyncio.to_thread(self.zams.acked, zam.id, self.clock())
            metrics.zam_sent(zam.event, "acked")
            log_event(log, "zam-acked", zam=zam.id, producer=zam.producer, zam_event=zam.event)
        else:
            await self._later(zam, f"ACK {ack.code}", producer)

    async def _later(self, zam: OwedZam, error: str, producer: Hl7ProducerSettings | None) -> None:
        # A producer gone from the settings keeps its ZAM on the default schedule until it comes back.
        schedule = (producer or _DEFAULTS).zam_retry_schedule
        at = next_attempt_at(self.clock(), zam.attempts + 1, schedule)
        await asyncio.to_thread(self.zams.retry_later, zam.id, at, error)
        metrics.zam_sent(zam.event, "deferred")
        log_event(
            log,
            "zam-deferred",
            logging.WARNING,
            zam=zam.id,
            producer=zam.producer,
            zam_event=zam.event,
            error=error,
            next_attempt=at.isoformat(timespec="seconds"),
        )

    def _lease(self) -> timedelta:
        """Longer than one exchange with the slowest producer: a ZAM being sent is never claimed again."""
        timeouts = [p.zam_ack_timeout for p in self.settings.hl7.producers] or [_DEFAULTS.zam_ack_timeout]
        return timedelta(seconds=2 * max(timeouts))

    def _producer(self, name: str) -> Hl7ProducerSettings | None:
        return next((p for p in self.settings.hl7.producers if p.name == name), None)

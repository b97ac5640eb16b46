"""Sends the MDMs owed to HL7 consumers (``gateway.store.mdms``) over MLLP and turns their ACKs into the MDN.

A scheduler job: every ``CHECK_INTERVAL`` each consumer's due MDMs are sent one at a time, in order of
arrival (the store holds back an MDM whose document an earlier one names), each claimed under a lease so a
crash mid-send sends it again after the lease. What the consumer answers:

- ``AA``/``CA`` or ``AE``/``CE``: settled with ``mappers.hl7_consumer_ack.document_result``;
- ``AR``/``CR`` ("il peut être réémis plus tard"), no connection, no ACK within ``ack_timeout`` or an
  answer that is not an ACK of this MDM: sent again after the next delay of ``retry_schedule``; once the
  schedule is spent, settled with the last AR's result, or 906 when the consumer never answered (a warning
  log line and ``mssgw_hl7_consumer_messages_total{outcome="unanswered"}``: never silence).

The settlement of a mail's last MDM commits its MDN (``gateway.receipts.consumers.consumer_mdn``), and the
relay is woken to send it. Store faults are the scheduler's (StoreHealth).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from gateway import metrics
from gateway.logsetup import log_event
from gateway.outbound.retry import next_attempt_at
from gateway.outbound.transports.mllp import NoAck, acknowledged
from gateway.receipts.consumers import consumer_mdn
from gateway.scheduler import Scheduler
from gateway.settings import Hl7ConsumerSettings, Settings
from gateway.store.mdms import ClaimedMdm, MdmQueue
from gateway.tls import client_context
from mappers.hl7_consumer_ack import (
    ConsumerAck,
    DocumentResult,
    document_result,
    no_answer,
)

log = logging.getLogger(__name__)

JOB_NAME: Final = "mdm-sender"
CHECK_INTERVAL: Final = 1.0


class MdmSender:
    """The daemon service; ``ran`` is set after each run (tests wait on it)."""

    def __init__(
        self,
        settings: Settings,
        mdms: MdmQueue,
        scheduler: Scheduler,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.mdms = mdms
        self.scheduler = scheduler
        self.clock = clock
        self.on_commit = on_commit
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
        """Send every consumer's due MDMs, the consumers side by side, each one's MDMs one after another."""
        try:
            await asyncio.gather(*(self._drain(c) for c in self.settings.hl7.consumers))
        finally:
            self.ran.set()

    async def _drain(self, consumer: Hl7ConsumerSettings) -> None:
        # Longer than one exchange: an MDM still being sent is never claimed again.
        lease = timedelta(seconds=2 * consumer.ack_timeout + 10)
        while True:
            mdm = await asyncio.to_thread(self.mdms.claim_next, consumer.name, self.clock(), lease)
            if mdm is None:
                return
            await self._send(consumer, mdm)

    async def _send(self, consumer: Hl7ConsumerSettings, mdm: ClaimedMdm) -> None:
        context = None
        if consumer.tls:
            tls = self.settings.tls
            if consumer.ca_bundle is not None:
                tls = dataclasses.replace(tls, ca_bundle=consumer.ca_bundle)
            context = client_context(tls)
        try:
            ack = await acknowledged(
                consumer.host, consumer.port, mdm.payload, context, consumer.ack_timeout, mdm.control_id
            )
        except NoAck as error:
            await self._unanswered(consumer, mdm, str(error))
            return
        if ack.retry_advised and mdm.attempts < len(consumer.retry_schedule):
            # What the consumer wrote stays out of the log line; its codes say enough to act.
            await self._later(consumer, mdm, f"ACK {ack.code} {document_result(ack).code}", ack.code)
            return
        await self._settle(consumer, mdm, ack)

    async def _unanswered(self, consumer: Hl7ConsumerSettings, mdm: ClaimedMdm, error: str) -> None:
        if mdm.attempts < len(consumer.retry_schedule):
            await self._later(consumer, mdm, error, "deferred")
            return
        # The schedule is spent: the sender learns it (906), the sysadmin too.
        log_event(
            log,
            "mdm-unanswered",
            logging.ERROR,
            mdm=mdm.id,
            consumer=consumer.name,
            hl7_event=mdm.event,
            attempts=mdm.attempts + 1,
            error=error,
        )
        await self._write(consumer, mdm, None, no_answer(error), "unanswered")

    async def _settle(self, consumer: Hl7ConsumerSettings, mdm: ClaimedMdm, ack: ConsumerAck) -> None:
        result = document_result(ack)
        log_event(
            log,
            "mdm-acknowledged",
            logging.INFO if result.integrated else logging.WARNING,
            mdm=mdm.id,
            consumer=consumer.name,
            hl7_event=mdm.event,
            ack=ack.code,
            code=result.code or "",
        )
        await self._write(consumer, mdm, ack.code, result, ack.code)

    async def _write(
        self,
        consumer: Hl7ConsumerSettings,
        mdm: ClaimedMdm,
        ack_code: str | None,
        result: DocumentResult,
        outcome: str,
    ) -> None:
        now = self.clock()
        writer = functools.partial(consumer_mdn, hostname=self.settings.gateway.hostname, now=now)
        mdn = await asyncio.to_thread(self.mdms.settle, mdm.id, ack_code, result, now, writer)
        metrics.hl7_consumer_message(consumer.name, outcome)
        if mdn is not None:
            log_event(log, "mdm-reported", message=mdm.message_pk, mdn=mdn, consumer=consumer.name)
            self.on_commit()

    async def _later(self, consumer: Hl7ConsumerSettings, mdm: ClaimedMdm, error: str, outcome: str) -> None:
        at = next_attempt_at(self.clock(), mdm.attempts + 1, consumer.retry_schedule)
        await asyncio.to_thread(self.mdms.retry_later, mdm.id, at, error)
        metrics.hl7_consumer_message(consumer.name, outcome)
        log_event(
            log,
            "mdm-deferred",
            logging.WARNING,
            mdm=mdm.id,
            consumer=consumer.name,
            hl7_event=mdm.event,
            error=error,
            next_attempt=at.isoformat(timespec="seconds"),
        )

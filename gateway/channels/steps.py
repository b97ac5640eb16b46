"""What the intake does for citizen channels and receipts, as two steps it calls for every arrival.

``recipient_refusal`` judges one recipient before anything is stored: outgoing mail to a patient must
pass the patient rules; mail from a patient (SMTP) needs an open channel, else ``550 5.7.1`` and why.
``finish`` shapes the message just before its commit: outgoing mail gets ``X-MSS-MES: FIN`` and its
channel change; a received DSN/MDN or automatic reply updates the original's recipients and is forwarded to
the original's sender the way that sender came (``gateway.report_routes``) — a patient's automatic reply is
patient mail that is no exchange on the channel; patient mail that came by IMAP on a
closed channel is kept ``refused``; a read-receipt request on a package gets its MDN, committed together;
the documents received on a mailbox an HL7 consumer serves become its MDMs, committed together, and the
MDN waits for the consumer's answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from gateway.channels.gate import ChannelGate, patient_matricule
from gateway.channels.outgoing import PatientMailRefused, admit_outgoing
from gateway.channels.rules import Refusal, check_patient_mail
from gateway.directory.check import DirectoryCheck
from gateway.inbound.arrival import Arrival, Verdict
from gateway.inbound.intake import Intake, build_policy
from gateway.inbound.policy import INTERNAL_SOURCES, refuse
from gateway.inbound.trust import DomainTrust, OfficialTrust
from gateway.receipts.answer import build_answer
from gateway.receipts.consumers import SentMasks, hand_over, never_sent
from gateway.receipts.reading import read_receipt
from gateway.report_routes import NO_NOTIFY, ReportRoutes
from gateway.settings import Settings
from gateway.store.channels import ChannelStore
from gateway.store.db import Store
from gateway.store.receipts import AUTO_REPLY, ReceiptUpdate
from gateway.store.repository import NewMessage, OriginalSender, Recipient
from gateway.store_health import StoreHealth
from mappers.records import MessageRecord


def citizen_intake(
    settings: Settings,
    store: Store,
    clock: Callable[[], datetime],
    on_commit: Callable[[], None] = lambda: None,
    official: OfficialTrust | None = None,
    health: StoreHealth | None = None,
    mssante: DomainTrust | None = None,
) -> tuple[Intake, CitizenSteps]:
    """The intake of ``settings`` with the citizen-channel and receipt steps and the national directory's
    recipient check (daemon and ``mssgw send``); ``official`` is the trust list the daemon keeps up to date,
    ``mssante`` one that only tells the directory check which domains are MSSanté (``mssgw send``'s copy)."""
    steps = CitizenSteps(
        settings, store.channels, clock, store.repository.receipt_original, store.mdms.sent_masks
    )
    directory = DirectoryCheck(
        lambda: steps.settings,
        lambda: intake.policy,
        store.directory,
        store.repository.delivered_to,
        lambda domain: intake.trusts(domain) or (mssante is not None and mssante.is_trusted(domain)),
    )
    intake = Intake(
        build_policy(settings, recipient_rules=[steps.rule, directory.rule], official=official),
        store.repository.add_messages,
        clock,
        on_commit,
        max_batch=settings.store.group_commit_max,
        gateway=settings.gateway,
        finish=steps.finish_arrival,
        health=health,
        documents=settings.documents.header_defaults(),
    )
    return intake, steps


def with_arrival_patient(arrival: Arrival, record: MessageRecord) -> MessageRecord:
    """``record`` with the patient named beside the message when the message itself names none."""
    if record.patient is not None or arrival.patient is None:
        return record
    return dataclasses.replace(record, patient=arrival.patient)


class CitizenSteps:
    """The intake steps of citizen channels and receipts, over the store's channels.

    A daemon service only so that a reload reaches it (test mode, size limit); it has nothing to run.
    """

    def __init__(
        self,
        settings: Settings,
        channels: ChannelStore,
        clock: Callable[[], datetime],
        originals: Callable[[ReceiptUpdate], OriginalSender | None] = lambda _: None,
        sent_masks: SentMasks = never_sent,
    ) -> None:
        self.settings = settings
        self.gate = ChannelGate(channels, clock)
        self.clock = clock
        self.originals = originals
        self.sent_masks = sent_masks

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self, grace: float) -> None:
        """Nothing to stop."""

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings

        return apply

    async def recipient_refusal(
        self, source: str, sender: str, recipient: str, record: MessageRecord | None, size: int
    ) -> Refusal | None:
        """The refusal of ``recipient``; ``record`` is None before the data (SMTP RCPT time)."""
        if source in INTERNAL_SOURCES:
            if record is None:
                return None
            return check_patient_mail(
                record,
                [recipient],
                size,
                test_mode=self.settings.gateway.test_mode,
                max_size=self.settings.channels.patient_max_size,
            )
        if source == "imap":
            return None  # kept as ``refused`` by ``finish``: an IMAP message cannot be bounced back
        return await self.gate.check(sender, recipient)

    async def rule(self, arrival: Arrival, recipient: str, record: MessageRecord | None) -> Verdict | None:
        """``recipient_refusal`` as the intake's ``RecipientRule`` (add it to ``Policy.recipient_rules``)."""
        if record is not None:
            record = with_arrival_patient(arrival, record)
        refusal = await self.recipient_refusal(
            arrival.source, arrival.envelope_from, recipient, record, len(arrival.raw)
        )
        return None if refusal is None else refuse(recipient, refusal.smtp_reply)

    async def finish_arrival(
        self, arrival: Arrival, record: MessageRecord, new: NewMessage, accepted: Sequence[str]
    ) -> NewMessage | str:
        """``finish`` as the intake's ``Finish`` step: the message to commit, or the refusal reply."""
        record = with_arrival_patient(arrival, record)
        new = dataclasses.replace(new, patient=new.patient or record.patient)
        try:
            return await self.finish(new, record, accepted)
        except PatientMailRefused as error:
            return error.refusal.smtp_reply

    async def _forward_receipt(self, new: NewMessage, receipt: ReceiptUpdate) -> NewMessage:
        """``new`` with a queue row taking the receipt on to the original's sender, when there is a way."""
        original = await asyncio.to_thread(self.originals, receipt)
        if original is None:
            return new
        routes = ReportRoutes(self.settings.inbound, self.settings.submission.clients)
        route = routes.route(original.envelope_from, original.source, original.client)
        sender = original.envelope_from.lower()
        if route.via is None or any(r.address.lower() == sender for r in new.recipients):
            return new
        back = Recipient(original.envelope_from, NO_NOTIFY, via=route.delivery_via)
        return dataclasses.replace(new, recipients=(*new.recipients, back))

    async def finish(self, new: NewMessage, record: MessageRecord, ours: Sequence[str]) -> NewMessage:
        """``new`` as it must be committed; ``ours`` are its accepted recipients in our mailboxes.

        Raises:
            PatientMailRefused: outgoing patient mail that breaks a rule (not caught by the recipient step).
        """
        if new.source in INTERNAL_SOURCES:
            return admit_outgoing(new, record, self.settings)
        receipt = await asyncio.to_thread(read_receipt, new.raw)
        if (
            receipt is not None
            and receipt.kind == AUTO_REPLY
            and patient_matricule(new.envelope_from, record.author.address)
        ):
            # A patient's absence reply is still patient mail (refused on a closed channel, on every path)
            # but never an exchange: it neither keeps the channel alive nor closes it, whatever it quotes.
            admitted = await self.gate.admit(new, record, ours)
            return dataclasses.replace(admitted, kind=receipt.kind, receipt=receipt, channel=None)
        if receipt is not None:
            new = dataclasses.replace(new, kind=receipt.kind, receipt=receipt)
            return await self._forward_receipt(new, receipt)
        new = await self.gate.admit(new, record, ours)
        if new.state != "stored" or not ours:
            return new
        if self.settings.hl7.consumers:
            handed = await asyncio.to_thread(
                hand_over, self.settings, new, record, ours, self.clock(), self.sent_masks
            )
            if handed is not None:
                return handed
        if not self.settings.channels.answer_mdn:
            return new
        answer = await asyncio.to_thread(
            build_answer,
            new.raw,
            record,
            new.envelope_from,
            ours[0],
            self.settings.gateway.hostname,
            self.clock(),
        )
        return new if answer is None else dataclasses.replace(new, follow_ups=(answer,))

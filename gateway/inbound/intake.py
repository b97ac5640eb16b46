"""Intake: the single entry into the store for every inbound path (SMTP listeners, IMAP, ``mssgw send``).

    arrival = Arrival(raw, envelope_from, recipients, source, peer=, envid=, ret=, authenticated_as=)
    result = await intake.receive(arrival)  # IntakeResult(message_pk, duplicate, verdicts: one per rcpt)

Steps: size → sender → parse (``mappers.mime.parse_message``) → From → internal senders' instructions and
their one patient (``instructions``, ``mappers.patient_match``) → recipients (``policy.Policy`` and the
rules the daemon adds; a refusal the sender cannot hear per recipient refuses the whole message) → one
commit shared with the messages arriving together (``batching.Batcher`` over ``Repository.add_messages``)
→ wake the relay. A verdict is ``accepted`` only after the commit; a store failure turns every accepted
verdict into ``451 4.3.0`` (``452 4.3.1`` when the store's disk is full) and keeps nothing; the next message
tries the store again, so mail is taken as soon as it is back. Mail for outside recipients gets queue rows
for the relay (direction ``outbound``); mail for our mailboxes is stored (``inbound``) and gets a queue row
only when the mailbox forwards it or drops it into a folder. Never answers for a message it did not commit,
never logs content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from gateway import metrics
from gateway.batching import Batcher
from gateway.inbound import replies
from gateway.inbound.arrival import Arrival, Decision, IntakeResult, Recipient, Verdict
from gateway.inbound.instructions import apply_instructions
from gateway.inbound.policy import (
    AUTHORS_CHECKED,
    INTERNAL_SOURCES,
    Policy,
    RecipientRule,
    SenderRule,
    refuse,
)
from gateway.inbound.trust import OfficialTrust, load_trust_list
from gateway.logsetup import log_event
from gateway.notices import Failure, Original, delivery_notice
from gateway.report_routes import ReportRoutes, wants
from gateway.settings import GatewaySettings, Settings
from gateway.store.repository import AttachmentInfo, NewMessage, StoredMessage
from gateway.store_health import StoreHealth
from mappers.documents import HeaderDefaults
from mappers.errors import MappingError
from mappers.headers import header_block
from mappers.mime import Authors, MimeLimits, parse_message, parse_with_authors
from mappers.patient_match import PatientMismatchError, settle_patient
from mappers.records import MessageRecord

SINGLE_REPLY_SOURCES = ("submission", "operator")
"""Sources that answer once for every recipient (SMTP after DATA): a late refusal needs a DSN."""
WHOLE_MESSAGE_SOURCES = ("cli", "hl7")
"""Sources answering once for the whole message with no DSN to follow (an exit code, an HL7 ACK): one
refused recipient refuses the message."""

__all__ = [
    "Arrival",
    "Decision",
    "Intake",
    "IntakeResult",
    "Recipient",
    "Verdict",
    "attachment_infos",
    "build_policy",
]

log = logging.getLogger(__name__)

Persist = Callable[[Sequence[NewMessage], datetime], Sequence[StoredMessage]]
Finish = Callable[[Arrival, MessageRecord, NewMessage, Sequence[str]], Awaitable[NewMessage | str]]
"""The last step before the commit (citizen channels, receipts): the message to commit, or a refusal reply
line for every accepted recipient. Gets the addresses accepted so far."""


PARSES_AT_ONCE = 2
"""MIME parses running at once. They are pure Python under the GIL: more threads add no throughput, only
the memory of each parse (measured: 50 messages of 20 MiB at once, 6 worker threads parsing, ~330 MiB)."""
READ_ON_LOOP = 16 * 1024
"""Octets up to which a plain message is read on the event loop rather than in a worker thread: about a
millisecond of work at most (measured 0.7 ms at 1 KiB, 1.2 ms at 64 KiB of text), within the interpreter's
5 ms switch interval, so a worker thread running it would hold the GIL, and the loop, as long."""
_NOT_PLAIN = re.compile(rb"(?im)^(?:x-mssgw-|content-type[ \t]*:(?![ \t]*text/))")
"""A header field that makes reading slow whatever the size: instructions (a package to build), or a body
other than one text part (attachments and documents are decoded and read: 9 ms for a 5 KiB message with a
PDF, 13 ms with an IHE_XDM.zip, 17 ms to package a 12 KiB one)."""


class Intake:
    """Judges arrivals and commits the accepted ones; one instance per daemon, shared by every listener."""

    def __init__(
        self,
        policy: Policy,
        persist: Persist,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
        *,
        max_batch: int = 500,
        gateway: GatewaySettings | None = None,
        finish: Finish | None = None,
        health: StoreHealth | None = None,
        documents: HeaderDefaults | None = None,
    ) -> None:
        self.policy = policy
        self.health = health or StoreHealth()
        self.gateway = gateway or GatewaySettings()
        self.documents = documents or HeaderDefaults()
        self.clock = clock
        self.on_commit = on_commit
        self.finish = finish
        self.limits = MimeLimits(max_bytes=max(policy.inbound.max_message_size, 1))
        self._parses = asyncio.Semaphore(PARSES_AT_ONCE)
        self._batcher: Batcher[NewMessage, StoredMessage] = Batcher(
            lambda batch: persist(batch, self.clock()), max_batch
        )

    async def start(self) -> None:
        """Nothing to start: intake works when called (it is a service so that reload reaches it)."""

    async def stop(self, grace: float) -> None:
        """Let the commit under way end: the batcher's thread would not outlive the process to finish it."""
        await self._batcher.drained()

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        """New domains, mailboxes, clients, trust list, document defaults; composed extra rules are kept."""
        current = self.policy
        policy = build_policy(settings, current.recipient_rules, current.sender_rules, current.official)
        documents = settings.documents.header_defaults()

        def apply() -> None:
            self.policy = policy
            self.gateway = settings.gateway
            self.documents = documents

        return apply

    def trusts(self, domain: str) -> bool:
        """Whether ``domain`` is on the official or the local trust list in force (the relay asks too)."""
        return self.policy.trusted(domain)

    async def check_sender(self, arrival: Arrival) -> Verdict | None:
        """The refusal of ``arrival``'s envelope sender before any data (MAIL FROM time), if any."""
        reply = self.policy.sender(arrival.source, arrival.authenticated_as, arrival.envelope_from)
        if reply is not None:
            return refuse(arrival.envelope_from, reply)
        for rule in self.policy.sender_rules:
            verdict = await _outcome(rule(arrival, None))
            if verdict is not None:
                return verdict
        return None

    async def check_recipient(
        self, arrival: Arrival, address: str, record: MessageRecord | None = None
    ) -> Verdict:
        """The verdict on one recipient (RCPT TO time: ``record`` is None); accepted is not yet stored."""
        verdict = self.policy.recipient(arrival.source, arrival.authenticated_as, address)
        if verdict.decision is not Decision.ACCEPTED:
            return verdict
        for rule in self.policy.recipient_rules:
            refused = await _outcome(rule(arrival, address, record))
            if refused is not None:
                return refused
        return verdict

    async def receive(self, arrival: Arrival) -> IntakeResult:
        """Judge, then commit for the accepted recipients; one verdict per recipient, in order."""
        addresses = [r.address for r in arrival.recipients]
        reply = self.policy.too_big(len(arrival.raw))
        if reply is None:
            refused = await self.check_sender(arrival)
            reply = refused.reply if refused is not None else None
        read = reply if reply is not None else await self._read(arrival)
        if isinstance(read, str):
            return self._refuse_all(arrival, read, [refuse(a, read) for a in addresses])
        raw, record = read
        del read  # it holds the record as well (see below)
        verdicts = [await self.check_recipient(arrival, a, record) for a in addresses]
        prepared = await self._prepare(arrival, raw, record, verdicts)
        # The record holds every decoded part (about 0.75 times a base64 message): not while the commit
        # is waited for, which for a burst of large mail is most of the time (issue 11).
        del record
        if isinstance(prepared, IntakeResult):
            return prepared
        return await self._commit(arrival, prepared, verdicts)

    async def _read(self, arrival: Arrival) -> tuple[bytes, MessageRecord] | str:
        """The message to keep and its record (after the internal sender's instructions), or the refusal.

        CPU work that grows with the message (up to tens of MB): off the event loop and only a few at once
        (each holds about 2.7 times its message while it runs), in one hop. A small plain message is read
        on the loop: the work holds the GIL whichever thread runs it, and each hop is two wake-ups that
        wait for a CPU on a busy machine (three hops took 1.6 ms of a 1 KiB message's 250, on the loop
        1.1 ms).
        """
        if len(arrival.raw) <= READ_ON_LOOP and not _NOT_PLAIN.search(header_block(arrival.raw)):
            return self._read_now(arrival)
        async with self._parses:
            return await asyncio.to_thread(self._read_now, arrival)

    def _read_now(self, arrival: Arrival) -> tuple[bytes, MessageRecord] | str:
        authors: Authors | None = None
        try:
            if arrival.source in AUTHORS_CHECKED:
                record, authors = parse_with_authors(arrival.raw, limits=self.limits)
            else:
                record = parse_message(arrival.raw, limits=self.limits)
        except MappingError as error:
            return replies.UNREADABLE.format(str(error).splitlines()[0][:200])
        reply = self.policy.author(arrival, authors)
        if reply is not None:
            return reply
        if arrival.source in INTERNAL_SOURCES:
            return self._instructions(arrival, record)
        return arrival.raw, record

    def _instructions(self, arrival: Arrival, record: MessageRecord) -> tuple[bytes, MessageRecord] | str:
        """The message an internal sender asked for (``X-MSSGW-*``), with its one patient, or the refusal.

        Packaging and reading CDAs grow with the message (``_read`` runs it off the loop when large).
        """
        try:
            raw, record = apply_instructions(
                arrival.raw,
                record,
                nil_reference=self.gateway.nil_reference,
                hostname=self.gateway.hostname,
                now=self.clock(),
                defaults=self.documents,
            )
            named = settle_patient(record, arrival.patient, "the patient given with the message")
        except PatientMismatchError as error:
            # Every difference, within the 512 octets of a reply line (RFC 5321 § 4.5.3.1.5).
            return replies.PATIENT_MISMATCH.format(replies.ascii_line(str(error))[:480])
        except MappingError as error:
            # Room for every missing value of a CDA wrapper, within the 512 octets of a reply line.
            return replies.BAD_INSTRUCTION.format(replies.ascii_line(str(error).splitlines()[0][:400]))
        if named is None or named == record.patient:
            return raw, record  # a copy of the record for nothing was 2 % of the daemon's CPU at 1 KiB
        return raw, dataclasses.replace(record, patient=named)

    async def _prepare(
        self, arrival: Arrival, raw: bytes, record: MessageRecord, verdicts: list[Verdict]
    ) -> NewMessage | IntakeResult:
        """The message to commit for the accepted recipients, or the result when nothing is to be kept."""
        accepted = [
            r for r, v in zip(arrival.recipients, verdicts, strict=True) if v.decision is Decision.ACCEPTED
        ]
        if not accepted:
            return IntakeResult(None, False, tuple(verdicts))
        unheard = await self._unheard_refusals(arrival, verdicts)
        if unheard and arrival.source in INTERNAL_SOURCES:
            # All or nothing: a sender told "refused" (exit 65, or SMTP's one reply after DATA) retries the
            # whole message, so a copy queued for the others would go twice.
            return self._refuse_all(arrival, replies.ascii_line(unheard[0].reply), verdicts)
        new = self._new_message(arrival, raw, record, accepted)
        if self.finish is not None:
            finished = await self.finish(arrival, record, new, [r.address for r in accepted])
            if isinstance(finished, str):
                return IntakeResult(None, False, tuple(_refused(v, finished) for v in verdicts))
            new = finished
        late: list[Verdict] = []
        if arrival.envelope_from:
            # Refused once the message was read, after a 250 at RCPT time: a DSN, unless NOTIFY=NEVER.
            notify = {r.address: r.notify for r in arrival.recipients}
            late = [v for v in unheard if wants(notify.get(v.recipient), "FAILURE")]
        if late:
            new = dataclasses.replace(
                new, follow_ups=(*new.follow_ups, self._late_notice(arrival, raw, late))
            )
        return new

    async def _commit(self, arrival: Arrival, new: NewMessage, verdicts: list[Verdict]) -> IntakeResult:
        if not self.health.room_set_aside and not await asyncio.to_thread(self.health.room_for_intake):
            return self._not_stored(arrival, verdicts, replies.STORE_FULL)
        try:
            stored = await self._batcher.submit(new)
        except Exception as error:  # noqa: BLE001 - any failed commit is a 451: nothing was kept
            if self.health.up:
                # Once per episode, beside ``store-unavailable``: not a line per refused message or retry.
                log_event(
                    log, "store-failed", logging.ERROR, source=arrival.source, error=type(error).__name__
                )
            self.health.failed("intake-commit", error)
            unavailable = replies.STORE_FULL if self.health.disk_full else replies.STORE_UNAVAILABLE
            return self._not_stored(arrival, verdicts, unavailable)
        self.health.succeeded()
        if new.recipients or new.follow_ups:
            # At the loop's next turn: the SMTP 250 is written before it, so the relay's claim does not
            # take the GIL from the reply (bench latency, 6 pairs: commit → 250 written 0.41 → 0.36 ms).
            asyncio.get_running_loop().call_soon(self.on_commit)
        if not stored.duplicate:
            metrics.message_accepted(arrival.source)
        log_event(
            log,
            "accepted",
            queue_id=stored.pk,
            duplicate=stored.duplicate,
            source=arrival.source,
            peer=arrival.peer,
            direction=new.direction,
            recipients=sum(v.decision is Decision.ACCEPTED for v in verdicts),
            deliveries=len(new.recipients),
        )
        template = replies.QUEUED_DUPLICATE if stored.duplicate else replies.QUEUED
        done = template.format(stored.pk).split(" ", 1)[1]
        return IntakeResult(
            stored.pk,
            stored.duplicate,
            tuple(
                Verdict(v.recipient, v.decision, 250, done) if v.decision is Decision.ACCEPTED else v
                for v in verdicts
            ),
        )

    @staticmethod
    def _not_stored(arrival: Arrival, verdicts: Sequence[Verdict], reply: str) -> IntakeResult:
        """The store could not take the message: every recipient gets the temporary refusal."""
        metrics.message_refused(arrival.source, replies.reason(reply))
        return IntakeResult(None, False, tuple(_refused(v, reply) for v in verdicts))

    async def _unheard_refusals(self, arrival: Arrival, verdicts: Sequence[Verdict]) -> list[Verdict]:
        """The refusals the sender cannot have heard of recipient by recipient.

        ``mssgw send`` answers with one exit code, MLLP with one ACK. After SMTP DATA one reply speaks for
        every recipient: the refusals that count are of recipients accepted at RCPT time, before the message
        could be read (RCPT-time refusals the client heard about itself).
        """
        refused = [v for v in verdicts if v.decision is not Decision.ACCEPTED]
        if arrival.source not in SINGLE_REPLY_SOURCES:
            return refused if arrival.source in WHOLE_MESSAGE_SOURCES else []
        late = []
        for verdict in refused:
            early = await self.check_recipient(arrival, verdict.recipient)
            if early.decision is Decision.ACCEPTED:
                late.append(verdict)
        return late

    def _refuse_all(self, arrival: Arrival, reply: str, verdicts: Sequence[Verdict]) -> IntakeResult:
        """Nothing stored: every recipient still accepted gets ``reply``, the others keep their own."""
        log_event(log, "refused", source=arrival.source, peer=arrival.peer, reply=reply[:9])
        metrics.message_refused(arrival.source, replies.reason(reply))
        return IntakeResult(None, False, tuple(_refused(v, reply) for v in verdicts))

    def _late_notice(self, arrival: Arrival, raw: bytes, late: list[Verdict]) -> NewMessage:
        """A DSN for recipients refused once the message was read, committed with the message itself.

        After SMTP DATA one reply speaks for every recipient: the 250 the others get must not silently
        drop these, so their sender hears of them as of any other failed delivery.
        """
        now = self.clock()
        orcpts = {r.address: r.orcpt for r in arrival.recipients}
        failures = [
            Failure(
                v.recipient,
                f"{v.code} {v.text}",
                v.decision is Decision.PERMANENT,
                v.code,
                orcpt=orcpts.get(v.recipient),
            )
            for v in late
        ]
        original = Original(raw, arrival.envelope_from, now, arrival.envid, arrival.ret)
        routes = ReportRoutes(self.policy.inbound, self.policy.clients)
        route = routes.route(arrival.envelope_from, arrival.source, _client_of(arrival))
        return delivery_notice(original, failures, self.gateway, now, "intake", route)

    def _new_message(
        self, arrival: Arrival, raw: bytes, record: MessageRecord, accepted: list[Recipient]
    ) -> NewMessage:
        outside = [r for r in accepted if self.policy.leaves(arrival.source, r.address)]
        forwarded = [
            r for r in accepted if (box := self.policy.mailbox(r.address)) is not None and box.delivered
        ]
        return NewMessage(
            raw=raw,
            envelope_from=arrival.envelope_from,
            direction="outbound" if outside else "inbound",
            source=arrival.source,
            recipients=tuple(outside + forwarded),
            message_id=record.message_id,
            envid=arrival.envid,
            ret=arrival.ret,
            patient=record.patient,
            attachments=attachment_infos(record),
            client=_client_of(arrival),
            hl7_control=arrival.hl7_control,
            zam_events=arrival.zam_events,
        )


def build_policy(
    settings: Settings,
    recipient_rules: Sequence[RecipientRule] = (),
    sender_rules: Sequence[SenderRule] = (),
    official: OfficialTrust | None = None,
) -> Policy:
    """The policy of ``settings`` (reads the local trust-list file), with the official trust list the
    daemon keeps up to date and the extra rules it composes."""
    return Policy(
        settings.inbound,
        settings.submission.clients,
        load_trust_list(settings.inbound),
        recipient_rules,
        sender_rules,
        official,
    )


def attachment_infos(record: MessageRecord) -> tuple[AttachmentInfo, ...]:
    """What the store describes beside a message: its plain attachments and its health documents."""
    plain = tuple(AttachmentInfo.of(a.filename, a.content_type, a.content) for a in record.attachments)
    return plain + tuple(
        AttachmentInfo.of(
            d.filename,
            d.mime_type,
            d.content,
            {"type_code": d.type_code.code, "type_label": d.type_code.label, "unique_id": d.unique_id},
        )
        for d in record.documents
    )


def _client_of(arrival: Arrival) -> str | None:
    """The submission client an arrival came from (its reports go back there)."""
    return arrival.authenticated_as if arrival.source == "submission" else None


def _refused(verdict: Verdict, reply: str) -> Verdict:
    return refuse(verdict.recipient, reply) if verdict.decision is Decision.ACCEPTED else verdict


async def _outcome(value: Verdict | None | Awaitable[Verdict | None]) -> Verdict | None:
    if inspect.isawaitable(value):
        return await value
    return value

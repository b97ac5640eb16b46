"""The relay: claims due deliveries from the store, sends them, and records each outcome.

It wakes when work arrives (``wake()``) or when the earliest retry or lease expiry is due; it never polls
on a tick. Each claim is a write transaction (on SQLite it holds the write lock intake's commits wait
for), so the relay claims again at once only after a full claim, and an outcome wakes it only when it
makes work due sooner (a deferral, a notice): a claim per commit woken by, not one per message sent.
Deliveries of one message to one destination go in one SMTP transaction, and the transports reuse
connections. A delivery is marked sent only after the next hop's 250; a failure (or a success the
sender asked to hear of) writes a DSN for the sender in the same transaction, queued back the way the sender
came (``gateway.report_routes``). An unexpected error while handling a message holds its deliveries.

Leases mean what they say: the relay claims no more deliveries than it has free transaction slots, and a
heartbeat renews the lease of every delivery it still holds, so a lease expires only when its owner is
gone. A store that fails is waited for (``StoreHealth``): claims back off, and an outcome that could not
be recorded is kept in memory and recorded once the store answers, never held and never sent again.
A stop is orderly: no claim in progress, transactions finish (or reach the grace time), then the leases
go back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from gateway import memory, metrics
from gateway.batching import Batcher
from gateway.logsetup import audit, log_event
from gateway.notices import Failure, Original, Success, delivery_notice, patient_refusal
from gateway.outbound.retry import gives_up, next_attempt_at
from gateway.outbound.routing import Destination, Router
from gateway.outbound.signing import DkimSigner, build_signer
from gateway.outbound.transports.base import (
    OutboundMessage,
    OutboundRecipient,
    Outcome,
    RecipientResult,
    all_recipients,
)
from gateway.outbound.transports.registry import TransportRegistry
from gateway.report_routes import wants
from gateway.settings import Settings
from gateway.store.faults import STORE_FAULTS, describe
from gateway.store.repository import (
    ClaimedDelivery,
    DeliveryOutcome,
    Envelope,
    Notice,
    Repository,
)
from gateway.store.states import DeliveryState
from gateway.store_health import Abandoned, StoreHealth
from mappers import headers, wire
from mappers.errors import MappingError

log = logging.getLogger(__name__)


Clock = Callable[[], datetime]
T = TypeVar("T")

HEARTBEATS_PER_LEASE = 3
"""Lease renewals per lease period: two may be lost (a store blip) before a live lease could expire."""

CRLF_SOURCES = frozenset({"submission", "operator"})
"""Sources whose stored copy is in CRLF throughout: what the SMTP listeners take (their ``ListenerKind``).
The listener refuses DATA with a bare CR or LF; intake stores it as it came, without whole header fields
(``headers.remove_fields``), or rebuilt by the email package with CRLF line ends (``mappers.mime``). The
relay sends those copies without searching them again (1.5 ms a MiB; issue 16); everything else (the IMAP
bridge stores the server's octets as given, the gateway's own notices) goes through ``wire.crlf``."""

# The audit trail's words for what happened to a delivery (the store keeps the state names).
_AUDIT_EVENTS = {
    DeliveryState.SENT: "delivered",
    DeliveryState.DEFERRED: "deferred",
    DeliveryState.FAILED: "bounced",
}


@dataclass(frozen=True, slots=True)
class _Report:
    """Outcomes of one transaction and the notice they call for, recorded together."""

    outcomes: tuple[DeliveryOutcome, ...]
    notice: Notice | None


class Relay:
    """Works the outbound queue until stopped."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        transports: TransportRegistry,
        signer: DkimSigner | None,
        clock: Clock,
        *,
        trusts: Callable[[str], bool],
        health: StoreHealth | None = None,
    ) -> None:
        self.settings = settings
        self.health = health or StoreHealth()
        self.trusts = trusts
        self.repository = repository
        self.router = Router(settings)
        self.transports = transports
        self.signer = signer
        self.clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._held_leases: set[int] = set()
        """Deliveries claimed and not yet recorded: the heartbeat renews their leases."""
        self._runner: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._recorder: Batcher[_Report, None] = Batcher(self._record, max_batch=200)

    def wake(self) -> None:
        """Tell the relay new work may be due (called after a commit, or by the wake socket)."""
        self._wake.set()

    async def start(self) -> asyncio.Task[None]:
        """Start working the queue; the task ends only if the relay crashes."""
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="relay-heartbeat")
        self._runner = asyncio.create_task(self.run(), name="relay")
        return self._runner

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        """Build what new settings need (may raise); the returned call switches to them.

        Transactions in flight finish on the old transports, whose idle connections are then closed.
        """
        transports = TransportRegistry(settings)
        signer = build_signer(settings)

        def apply() -> None:
            old = self.transports
            self.settings = settings
            self.router = Router(settings)
            self.transports = transports
            self.signer = signer
            task = asyncio.get_running_loop().create_task(old.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return apply

    async def run(self) -> None:
        """Claim and dispatch until ``stop`` is called."""
        owner = self.settings.gateway.owner
        with contextlib.suppress(Abandoned):
            # Leases a previous, dead incarnation of this owner held (a clean stop leaves none). Here, not
            # before the start, so that a store that is down or full does not keep the daemon from starting.
            relay = self.settings.relay
            recovered = await self._store(
                "recover-leases",
                lambda: self.repository.recover_owner(owner, self.clock(), relay.crash_limit),
            )
            log_event(log, "leases-recovered", count=recovered)
            while not self._stopping:
                self._wake.clear()
                relay = self.settings.relay
                free = relay.concurrency - len(self._in_flight)
                if free <= 0:
                    # A claimed delivery waiting for a slot would hold a lease it is not using.
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                asked = min(relay.claim_batch, free)
                claimed = await self._store("claim-due", functools.partial(self._claim, asked))
                self._held_leases.update(c.pk for c in claimed)
                if self._stopping:
                    await self._unclaim(owner, claimed)
                    break
                self._dispatch(claimed)
                if len(claimed) < asked:
                    # Nothing more was due: claiming again now would be a write transaction (on SQLite
                    # the store's one write lock) for nothing. What makes work due says so: a commit's
                    # wake, an outcome that defers or queues a notice, or the next due time.
                    await self._sleep_until_due(owner)
                # A full claim may have left due work behind: claim again, once a slot is free.

    async def _unclaim(self, owner: str, claimed: Sequence[ClaimedDelivery]) -> None:
        """Claimed as the stop began: back to the queue, the attempt not counted. Before ``stop`` goes on
        (it waits for this task), so never beside its own release; if the store fails, ``stop`` gives
        them back as it does any lease, attempt counted."""
        if not claimed:
            return
        pks = [c.pk for c in claimed]
        try:
            await asyncio.to_thread(self.repository.unclaim, owner, pks, self.clock())
        except STORE_FAULTS as error:
            self.health.failed("unclaim", error)
        else:
            self._held_leases.difference_update(pks)

    def _claim(self, free: int) -> list[ClaimedDelivery]:
        relay = self.settings.relay
        return self.repository.claim_due(
            self.settings.gateway.owner,
            self.clock(),
            timedelta(seconds=relay.lease),
            min(relay.claim_batch, free),
            relay.crash_limit,
        )

    async def _store(self, what: str, call: Callable[[], T]) -> T:
        """``call`` in a worker thread, waiting out store faults; ``Abandoned`` once stopping."""
        return await self.health.retry(
            what, lambda: asyncio.to_thread(call), abandon=lambda: self._stopping, interrupt=self._stopped
        )

    async def _renew_leases(self) -> None:
        """The heartbeat: every lease/3, extend the lease of every delivery this relay still holds."""
        owner = self.settings.gateway.owner
        while not self._stopping:
            lease = self.settings.relay.lease
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), lease / HEARTBEATS_PER_LEASE)
            held = sorted(self._held_leases)
            if self._stopping or not held:
                continue
            until = self.clock() + timedelta(seconds=lease)
            try:
                await asyncio.to_thread(self.repository.renew_leases, owner, held, until)
            except STORE_FAULTS as error:
                # Tried again at the next beat; a lease lasts HEARTBEATS_PER_LEASE beats.
                self.health.failed("renew-leases", error)
            else:
                self.health.succeeded()

    async def _sleep_until_due(self, owner: str) -> None:
        if self._wake.is_set():
            return  # woken during the claim: its commit may have come after the claim looked
        wake_at = await self._store("next-wakeup", lambda: self.repository.next_wakeup(owner))
        timeout = None
        if wake_at is not None:
            # Leases are claimed by rows whose time has come; a tiny margin avoids waking a hair early.
            timeout = max((wake_at - self.clock()).total_seconds(), 0.0) + 0.01
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch(self, claimed: Sequence[ClaimedDelivery]) -> None:
        # At most one transaction per claimed delivery, and no more claimed than free slots: every
        # transaction starts at once.
        groups: dict[tuple[int, Destination], list[ClaimedDelivery]] = defaultdict(list)
        for claim in claimed:
            groups[(claim.message_pk, self.router.destination(claim.recipient, claim.via))].append(claim)
        for (message_pk, destination), claims in groups.items():
            task = asyncio.create_task(self._deliver(message_pk, destination, claims))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slot_freed.set()
        if not self._in_flight:
            # The burst's messages were freed after the listeners last went idle: give them back too.
            memory.release()

    async def _deliver(
        self, message_pk: int, destination: Destination, claims: list[ClaimedDelivery]
    ) -> None:
        try:
            envelope = claims[0].envelope or await self._load(message_pk)
            stored = envelope.raw if envelope.source in CRLF_SOURCES else wire.crlf(envelope.raw)
            fields = b""
            reference = self.settings.gateway.nil_reference
            if destination.kind != "local" and reference.strip():
                # Every message leaving the gateway names the product, as MSSanté asks (ECO.2.4.3); mail
                # for our own mailboxes keeps the reference its sender wrote.
                fields = headers.nil_field(stored, reference)
            if self.signer is not None:
                signed = fields + stored if fields else stored
                fields = await asyncio.to_thread(self.signer.signature, signed) + fields
            # The fields in front and the stored copy in one join, or the stored copy itself: each copy of a
            # large message costs (issue 16). What is sent is that, not the stored copy beside it (up to
            # ``relay.concurrency`` messages of tens of MB each, issue 11); a delivery report quotes the
            # stored copy back from what was sent.
            content = b"".join((fields, stored)) if fields else stored
            del stored
            envelope = dataclasses.replace(envelope, raw=b"")
            added = len(fields)
            message = OutboundMessage(
                envelope_from=envelope.envelope_from,
                recipients=tuple(OutboundRecipient(c.recipient, c.notify, c.orcpt) for c in claims),
                content=content,
                envid=envelope.envid,
                ret=envelope.ret,
                queue_id=envelope.pk,
                # CRLF throughout (the stored copy made so above, the fields written so): the transport
                # need not search it again.
                crlf=True,
            )
            if destination.kind == "mx" and not self.trusts(destination.host):
                # DESIGN.md §3.3: in operator mode nothing leaves for a domain off the MSSanté trust list.
                reply = f"5.7.1 {destination.host} is not on the MSSanté trust list: the message was not sent"
                results = all_recipients(message, Outcome.PERMANENT, reply)
            else:
                results = await self.transports.get(destination).send(message)
            report = self._report(envelope, claims, results, destination, lambda: message.content[added:])
        except Abandoned:
            return  # stopping while the store is down: nothing was sent, the lease goes back
        except Exception as error:
            # A loop boundary (STYLE.md §5): whatever broke, hold the deliveries for a person to look at.
            log_event(log, "delivery-crashed", logging.ERROR, exc_info=True, queue_id=message_pk)
            now = self.clock()
            held = tuple(
                DeliveryOutcome(c.pk, DeliveryState.HELD, now, reply=f"internal error: {error!r}")
                for c in claims
            )
            for claim in claims:
                metrics.delivery_recorded(DeliveryState.HELD.value, claim.attempts)
                audit("held", logging.ERROR, queue_id=message_pk, delivery=claim.pk, reason="internal error")
            report = _Report(held, None)
        # The next hop's answer is kept until the store has it: never forgotten, never sent again.
        await self.health.retry("record-outcomes", lambda: self._recorder.submit(report))
        self._held_leases.difference_update(c.pk for c in claims)
        if report.notice is not None or any(o.state is DeliveryState.DEFERRED for o in report.outcomes):
            # A retry time, or a notice's own deliveries due now: the queue is next due sooner than the
            # loop, asleep since its last claim, may know. Other outcomes make nothing due.
            self.wake()

    async def _load(self, message_pk: int) -> Envelope:
        """A message the claim did not bring (past its ``PRELOAD_BYTES``): loaded per delivery, not per
        claimed batch, so that at most ``concurrency`` large messages are in memory at once."""
        envelopes = await self._store(
            "load-envelope", functools.partial(self.repository.load_envelopes, [message_pk])
        )
        return envelopes[message_pk]

    def _report(
        self,
        envelope: Envelope,
        claims: list[ClaimedDelivery],
        results: list[RecipientResult],
        destination: Destination,
        original: Callable[[], bytes],
    ) -> _Report:
        """The outcomes to record and the delivery report to send; ``original`` gives the stored message
        (copied only when a report quotes it)."""
        now = self.clock()
        relay = self.settings.relay
        outcomes: list[DeliveryOutcome] = []
        reported: list[Failure | Success] = []
        failed_pks: list[int] = []
        for claim, result in zip(claims, results, strict=True):
            state, retry_at = DeliveryState.SENT, None
            if result.outcome is Outcome.TEMPORARY:
                if gives_up(claim.created_at, now, relay.max_lifetime):
                    state = DeliveryState.FAILED
                else:
                    state = DeliveryState.DEFERRED
                    retry_at = next_attempt_at(now, claim.attempts, relay.retry_schedule)
            elif result.outcome is Outcome.PERMANENT:
                state = DeliveryState.FAILED
            refusal = None
            if state is DeliveryState.FAILED:
                failure = Failure(
                    claim.recipient,
                    result.reply,
                    result.outcome is Outcome.PERMANENT,
                    result.code,
                    result.peer,
                    claim.orcpt,
                )
                if wants(claim.notify, "FAILURE"):
                    reported.append(failure)
                    failed_pks.append(claim.pk)
                refusal = patient_refusal(failure)
            elif wants(claim.notify, "SUCCESS") and not result.reports_onward:
                # RFC 3461 § 5.2.2: past a next hop without DSN, "relayed" is the last report there is.
                relayed = destination.kind in ("smtp", "mx")
                reported.append(Success(claim.recipient, result.reply, relayed, result.peer, claim.orcpt))
            outcomes.append(
                DeliveryOutcome(
                    claim.pk, state, now, result.code, result.reply, result.peer, retry_at, refusal
                )
            )
            latency = (now - claim.created_at).total_seconds() if state is DeliveryState.SENT else None
            metrics.delivery_recorded(state.value, claim.attempts, latency)
            audit(
                _AUDIT_EVENTS[state],
                logging.INFO if state is DeliveryState.SENT else logging.WARNING,
                queue_id=envelope.pk,
                delivery=claim.pk,
                recipient=claim.recipient,
                attempt=claim.attempts,
                peer=result.peer,
                code=result.code,
                reply=None if state is DeliveryState.SENT else result.reply,
                retry_at=retry_at.isoformat(timespec="seconds") if retry_at else None,
            )
        notice = None
        if reported and envelope.envelope_from:
            # Never answer a bounce with a bounce (RFC 5321 §4.5.5): null senders get no DSN.
            quoted = Original(
                original(),
                envelope.envelope_from,
                envelope.created_at,
                envelope.envid,
                envelope.ret,
                envelope.pk,
            )
            route = self.router.reports.route(envelope.envelope_from, envelope.source, envelope.client)
            try:
                message = delivery_notice(quoted, reported, self.settings.gateway, now, "relay", route)
            except MappingError as error:
                # A sender no report can be addressed to (a control character in it): the outcomes stand.
                log_event(log, "dsn-impossible", logging.WARNING, queue_id=envelope.pk, reason=str(error))
            else:
                notice = Notice(message, tuple(failed_pks))
        return _Report(tuple(outcomes), notice)

    def _record(self, reports: Sequence[_Report]) -> list[None]:
        # In delivery order, as the heartbeat renews them: two transactions never lock rows crosswise.
        outcomes = sorted((o for report in reports for o in report.outcomes), key=lambda o: o.delivery_pk)
        notices = [report.notice for report in reports if report.notice is not None]
        notice_pks = self.repository.record_outcomes(outcomes, notices, self.clock())
        for notice, pk in zip(notices, notice_pks, strict=True):
            audit("dsn-queued", queue_id=pk, about=notice.message.related_message_pk)
        return [None] * len(reports)

    async def stop(self, grace: float) -> None:
        """Stop claiming, let transactions in flight finish for up to ``grace`` seconds, then give the
        unfinished leases back so the next start (or another instance) sends them at once.

        In that order, one after the other: a release running beside a claim would miss the rows the
        claim commits (the next start would count them as crashes), and on PostgreSQL the two can
        deadlock."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        self._slot_freed.set()
        for task in (self._runner, self._heartbeat):
            if task is not None:
                await asyncio.wait({task})
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        # Outcomes already handed to the store are committed (or failed) before any lease goes back.
        await self._recorder.drained()
        try:
            released = await asyncio.to_thread(
                self.repository.release_claims, self.settings.gateway.owner, self.clock()
            )
        except STORE_FAULTS as error:
            # The next start of this owner takes them back (``recover_owner``).
            log_event(log, "leases-kept", logging.ERROR, error=describe(error))
        else:
            log_event(log, "leases-released", count=released)
        await self.transports.close()

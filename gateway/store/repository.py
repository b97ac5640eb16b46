"""Writing messages into the store and working the outbound queue, in short transactions.

Every function here is synchronous and runs in a worker thread (``asyncio.to_thread``); callers above the
store see value types only. Two rules hold everywhere: a batch of messages is committed as one transaction
(group commit), and a delivery leaves ``sending`` only through ``record_outcomes`` or a lease expiry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, and_, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.logsetup import audit
from gateway.store import pg_batch, sqlite_batch
from gateway.store.audit import AUDIT_EVENTS, audit_detail, write_audit
from gateway.store.channels import ChannelIntent, apply_intent
from gateway.store.family import Family
from gateway.store.mdms import NewMdm, queue_mdms
from gateway.store.reads import read_engine
from gateway.store.receipts import UNMATCHED, ReceiptUpdate, apply_receipt, original_of
from gateway.store.states import KEPT_ASIDE, WAITING, DeliveryState
from gateway.store.tables import (
    Attachment,
    Delivery,
    DeliveryAttempt,
    Hl7Transmission,
    Message,
    Patient,
    UtcDateTime,
)
from gateway.store.zams import owe_relay_failures
from mappers.patient import Patient as PatientRecord

# The hot paths' statements name the tables, not the mapped classes: Core statements skip the ORM's
# per-statement work (bulk-insert and synchronize-session planning), which showed in the profile.
MESSAGES = cast(Table, Message.__table__)
DELIVERIES = cast(Table, Delivery.__table__)
ATTACHMENTS = cast(Table, Attachment.__table__)
ATTEMPTS = cast(Table, DeliveryAttempt.__table__)

CRASH_LIMIT = "crash-limit"
"""Why a delivery was held when its leases expired ``relay.crash_limit`` times (the daemon died with it)."""

PRELOAD_BYTES = 256 * 1024
"""Raw bytes a claim brings back at most with its deliveries: the relay sends small mail without reading
it again, and a claim of large mail holds no more than this in memory (the rest is loaded per delivery)."""

RECLAIM_RECHECK = timedelta(seconds=30)
"""How late another instance's lease taken since the last look may be seen: claims look for expired leases
only when one can have expired (the earliest seen), or after this long."""

Executor = Session | Connection
"""What the hot statements run on: a plain connection where no ORM is needed, a session elsewhere."""

# The hot paths' statements, built once: building a Core statement costs several times what executing a
# cached one does (measured: 120 against 30-50 µs on SQLite), and a built statement is reused from the
# engine's compiled cache. Times are typed bind parameters so they go through ``UtcDateTime``.
_d = DELIVERIES.c
_m = MESSAGES.c
_SENDING = DeliveryState.SENDING.value
_NOW = bindparam("now", type_=UtcDateTime())

_DUE = (
    select(_d.id)
    .where(_d.state.in_([s.value for s in WAITING]), _d.next_attempt_at <= _NOW)
    .order_by(_d.next_attempt_at, _d.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
# One statement picks and leases (on SQLite, which serialises writers with ``BEGIN IMMEDIATE``: no
# ``FOR UPDATE`` there; PostgreSQL's claim, which also brings the envelopes, is ``pg_batch.claim``).
_CLAIM = (
    update(DELIVERIES)
    .where(_d.id.in_(_DUE.scalar_subquery()))
    .values(
        state=_SENDING,
        claimed_by=bindparam("owner"),
        claimed_until=bindparam("until", type_=UtcDateTime()),
        attempts=_d.attempts + 1,
        updated_at=_NOW,
    )
    .returning(_d.id, _d.message_pk, _d.recipient, _d.notify, _d.orcpt, _d.attempts, _d.created_at, _d.via)
)
_ENVELOPE_COLUMNS = (_m.id, _m.envelope_from, _m.message_id, _m.envid, _m.ret, _m.created_at)
_ENVELOPES = select(*_ENVELOPE_COLUMNS, _m.raw, _m.source, _m.client).where(
    _m.id.in_(bindparam("pks", expanding=True))
)
# The raw bytes of the claim's messages, in id order, while their running total fits in ``room``.
_PRELOAD = select(
    *_ENVELOPE_COLUMNS,
    case((func.sum(_m.size).over(order_by=_m.id) <= bindparam("room"), _m.raw)),
    _m.source,
    _m.client,
).where(_m.id.in_(bindparam("pks", expanding=True)))
_LEASED_BY_OTHERS = select(_d.id, _d.message_pk, _d.crashes, _d.claimed_until).where(
    _d.state == _SENDING, _d.claimed_by != bindparam("owner")
)
_STILL_SENDING = (
    select(_d.id, _d.message_pk)
    .where(_d.id.in_(bindparam("pks", expanding=True)), _d.state == _SENDING)
    .order_by(_d.id)
    .with_for_update()
)
_RECORD = update(DELIVERIES).where(_d.id == bindparam("pk"))
_STORED_IDS = select(_m.message_id, _m.digest, _m.id).where(
    _m.message_id.in_(bindparam("ids", expanding=True))
)
_INSERT_MESSAGES = insert(MESSAGES).returning(_m.id, sort_by_parameter_order=True)
_INSERT_ATTACHMENTS = insert(ATTACHMENTS)
_INSERT_DELIVERIES = insert(DELIVERIES)
_INSERT_ATTEMPTS = insert(ATTEMPTS)
_INSERT_AUDIT = insert(AUDIT_EVENTS)
_COPIES = ("message_pk", ("message_id", "digest"))
"""A batch's children name their message in ``message_pk``; a message is a copy by these columns."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """An envelope recipient with its RFC 3461 DSN parameters."""

    address: str
    notify: str | None = None
    orcpt: str | None = None
    via: str | None = None
    """A delivery report's way back to its sender (``gateway.report_routes``); None: by recipient."""


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """Description of an attachment kept beside the raw message for the store's readers: its size and
    digest, not its content (the raw message has it; a decoded copy waiting for the commit would double
    what large mail costs)."""

    filename: str
    content_type: str
    size: int
    sha1: str
    metadata: dict[str, str] | None = None

    @classmethod
    def of(
        cls, filename: str, content_type: str, content: bytes, metadata: dict[str, str] | None = None
    ) -> AttachmentInfo:
        return cls(
            filename,
            content_type,
            len(content),
            hashlib.sha1(content, usedforsecurity=False).hexdigest(),
            metadata,
        )


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to commit; ``recipients`` become queue rows when the message goes out."""

    raw: bytes
    envelope_from: str
    direction: str
    source: str
    recipients: tuple[Recipient, ...] = ()
    message_id: str | None = None
    kind: str = "message"
    envid: str | None = None
    ret: str | None = None
    patient: PatientRecord | None = None
    attachments: tuple[AttachmentInfo, ...] = ()
    related_message_pk: int | None = None
    state: str = "stored"
    state_reason: str | None = None
    channel: ChannelIntent | None = None
    receipt: ReceiptUpdate | None = None
    follow_ups: tuple[NewMessage, ...] = ()
    client: str | None = None
    """The submission client that handed the message in (where its delivery reports go back)."""
    hl7_control: tuple[str, str] | None = None
    """(producer, MSH-10) of the HL7 message this mail comes from: stored with it, a second one is a
    duplicate of the first whatever its bytes."""
    zam_events: str | None = None
    """The business acknowledgements its HL7 producer asked for (``mappers.hl7_zam.requested_events``)."""
    mdms: tuple[NewMdm, ...] = ()
    """Its documents as MDMs owed to HL7 consumers (``gateway.receipts.consumers``), committed with it."""

    @property
    def digest(self) -> str:
        """SHA-256 of the raw bytes: with the Message-ID, what makes two copies the same message."""
        return hashlib.sha256(self.raw).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What the store did with a ``NewMessage``: its id, and whether it already had it."""

    pk: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A queue row leased to this instance until ``claimed_until``."""

    pk: int
    message_pk: int
    recipient: str
    notify: str | None
    orcpt: str | None
    attempts: int
    created_at: datetime
    via: str | None = None
    envelope: Envelope | None = field(default=None, repr=False)
    """The message it carries, raw bytes included, when the claim had room for them (``PRELOAD_BYTES``;
    one object for every delivery of a message): the relay loads the others itself."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The stored message a delivery carries: envelope, identifiers and raw bytes."""

    pk: int
    envelope_from: str
    message_id: str | None
    envid: str | None
    ret: str | None
    created_at: datetime
    raw: bytes
    source: str = ""
    client: str | None = None


@dataclass(frozen=True, slots=True)
class OriginalSender:
    """Who sent the message a received receipt is about, and how it reached us."""

    envelope_from: str
    source: str
    client: str | None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What became of one claimed delivery; ``state`` is SENT, DEFERRED, FAILED or HELD."""

    delivery_pk: int
    state: DeliveryState
    at: datetime
    code: int | None = None
    reply: str | None = None
    peer: str | None = None
    next_attempt_at: datetime | None = None
    refusal: str | None = None
    """A Mon Espace Santé refusal recognised in the reply (``mailbox-closed`` …), kept as the receipt."""


def _outcome_values(outcome: DeliveryOutcome) -> dict[str, object]:
    """The delivery's columns an outcome sets."""
    values: dict[str, object] = {
        "state": outcome.state.value,
        "last_code": outcome.code,
        "last_reply": outcome.reply,
        "claimed_by": None,
        "claimed_until": None,
        "updated_at": outcome.at,
    }
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    if outcome.state is DeliveryState.SENT:
        values["sent_at"] = outcome.at
    if outcome.refusal is not None:
        values.update(receipt_status=outcome.refusal, receipt_detail=outcome.reply, receipt_at=outcome.at)
    return values


@dataclass(frozen=True, slots=True)
class Notice:
    """A DSN written for the sender, closing the failed deliveries it reports on."""

    message: NewMessage
    delivery_pks: tuple[int, ...] = field(default_factory=tuple)


def _is_plain(new: NewMessage) -> bool:
    """Whether storing ``new`` touches no other table than its own rows' (the batched path)."""
    return (
        new.patient is None
        and new.channel is None
        and new.receipt is None
        and not new.follow_ups
        and new.hl7_control is None
        and not new.mdms
    )


def _check_kept_aside(new: NewMessage) -> None:
    if new.state in KEPT_ASIDE and new.recipients:
        raise ValueError(f"a message kept {new.state!r} must have no deliveries")


def _message_row(new: NewMessage, digest: str, now: datetime, patient_pk: int | None) -> dict[str, object]:
    """``digest``: ``new.digest``, computed once by the caller (a hash of the whole message)."""
    return {
        "direction": new.direction,
        "source": new.source,
        "kind": new.kind,
        "state": new.state,
        "state_reason": new.state_reason,
        "message_id": new.message_id,
        "digest": digest,
        "envelope_from": new.envelope_from,
        "envid": new.envid,
        "ret": new.ret,
        "size": len(new.raw),
        "raw": new.raw,
        "patient_id": patient_pk,
        "related_message_id": new.related_message_pk,
        "created_at": now,
        "client": new.client,
    }


def _attachment_rows(new: NewMessage, pk: int) -> list[dict[str, object]]:
    return [
        {
            "message_pk": pk,
            "filename": a.filename,
            "content_type": a.content_type,
            "size": a.size,
            "sha1": a.sha1,
            "metadata_json": a.metadata,
        }
        for a in new.attachments
    ]


def _delivery_rows(new: NewMessage, pk: int, now: datetime) -> list[dict[str, object]]:
    return [
        {
            "message_pk": pk,
            "recipient": r.address,
            "notify": r.notify,
            "orcpt": r.orcpt,
            "via": r.via,
            "state": DeliveryState.QUEUED.value,
            "attempts": 0,
            "crashes": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for r in new.recipients
    ]


def _audit_rows(new: NewMessage, pk: int, now: datetime) -> list[dict[str, object]]:
    """The trail's events for a message just stored: accepted, and the state it was kept in."""
    events: list[tuple[str, dict[str, object]]] = [("accepted", {"source": new.source, "kind": new.kind})]
    if new.state != "stored":
        events.append((new.state, {"reason": new.state_reason}))
    return [
        {
            "at": now,
            "kind": kind,
            "message_pk": pk,
            "delivery_pk": None,
            "channel_pk": None,
            "detail": audit_detail(detail),
        }
        for kind, detail in events
    ]


def _dedup_key(new: NewMessage, digest: str) -> tuple[str, str] | None:
    """What makes two copies the same message (None: no Message-ID, never a copy)."""
    return None if new.message_id is None else (new.message_id, digest)


def _distinct(run: Sequence[NewMessage]) -> tuple[list[tuple[NewMessage, str]], list[tuple[int, bool]]]:
    """The messages of ``run`` but for copies of one earlier in it, each with its digest (computed once:
    a hash of the whole message, megabytes for large mail); and per message of ``run``, its place among
    them and whether it is such a copy."""
    firsts: list[tuple[NewMessage, str]] = []
    places: list[tuple[int, bool]] = []
    seen: dict[tuple[str, str], int] = {}
    for new in run:
        digest = new.digest
        key = _dedup_key(new, digest)
        if key is not None and key in seen:
            places.append((seen[key], True))
            continue
        if key is not None:
            seen[key] = len(firsts)
        places.append((len(firsts), False))
        firsts.append((new, digest))
    return firsts, places


def _results(outcomes: Sequence[tuple[int, bool]], places: Sequence[tuple[int, bool]]) -> list[StoredMessage]:
    """Per message of a run, from the (id, stored already) of the distinct ones and its ``places``."""
    return [StoredMessage(outcomes[n][0], later or outcomes[n][1]) for n, later in places]


class Repository:
    """The store's write and queue operations over one session factory."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.engine: Engine = sessions.kw["bind"]
        self.reads = read_engine(self.engine)
        """For look-ups that never write: on SQLite they take no write lock (``gateway.store.reads``)."""
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        """For a transaction of one statement on PostgreSQL: no ``BEGIN`` and ``COMMIT`` round trips."""
        self._reclaim_due: dict[str, datetime] = {}
        """Per owner: when its next claim looks for other owners' expired leases (``_reclaim_expired``)."""

    @contextlib.contextmanager
    def _orm(self, connection: Connection) -> Iterator[Session]:
        """The ORM inside ``connection``'s transaction, for the writes that need it (patients, channels,
        receipts, DSNs): flushed at the end, committed with the connection."""
        with self.sessions(bind=connection) as session:
            yield session
            session.flush()

    def add_messages(self, batch: Sequence[NewMessage], now: datetime) -> list[StoredMessage]:
        """Commit a batch of messages and their queue rows in one transaction.

        A message whose Message-ID and digest are already stored is not stored again: it gets the
        existing id and ``duplicate=True`` (a client that lost our 250 and sent again); so is one whose
        HL7 producer and MSH-10 are (a producer that lost our ACK). Plain mail (the bulk of a burst) goes
        in a few statements per batch, whatever its size, on a plain connection; the rest one message at a
        time, in order, through the ORM.
        """
        plain = all(_is_plain(new) for new in batch)
        if plain:
            return self._add_plain(batch, now)
        with self.engine.begin() as connection:
            known = self._stored_ids(connection, [new for new in batch if _is_plain(new)])
            with self._orm(connection) as session:
                return self._add_mixed(session, batch, now, known)

    def _add_mixed(
        self, session: Session, batch: Sequence[NewMessage], now: datetime, known: dict[tuple[str, str], int]
    ) -> list[StoredMessage]:
        """``add_messages`` for a batch with messages that touch other tables: runs of plain mail batched,
        the others one at a time."""
        results: list[StoredMessage] = []
        run: list[NewMessage] = []
        for new in batch:
            if _is_plain(new):
                run.append(new)
                continue
            results.extend(self._insert_plain(session, run, now, known))
            run = []
            existing = self._find_duplicate(session, new)
            if existing is not None:
                results.append(StoredMessage(existing, duplicate=True))
                continue
            pk = self._insert_message(session, new, now)
            if new.message_id is not None:
                known.setdefault((new.message_id, new.digest), pk)
            results.append(StoredMessage(pk, duplicate=False))
        results.extend(self._insert_plain(session, run, now, known))
        return results

    @staticmethod
    def _stored_ids(executor: Executor, batch: Sequence[NewMessage]) -> dict[tuple[str, str], int]:
        """(Message-ID, digest) → id of those of ``batch`` already stored, in one query."""
        ids = {new.message_id for new in batch if new.message_id is not None}
        if not ids:
            return {}
        known: dict[tuple[str, str], int] = {}
        for message_id, digest, pk in executor.execute(_STORED_IDS, {"ids": list(ids)}):
            known.setdefault((message_id, digest), pk)
        return known

    def _insert_plain(
        self, executor: Executor, run: Sequence[NewMessage], now: datetime, known: dict[tuple[str, str], int]
    ) -> list[StoredMessage]:
        """Store plain messages with one ``executemany`` per table; a copy of one stored already, or of
        one earlier in ``run``, is a duplicate."""
        firsts, places = _distinct(run)
        keys = [_dedup_key(new, digest) for new, digest in firsts]
        copies = [key is not None and key in known for key in keys]
        fresh = [first for first, copy in zip(firsts, copies, strict=True) if not copy]
        pks: Iterator[int] = iter(())
        if fresh:
            for new, _ in fresh:
                _check_kept_aside(new)
            rows = [_message_row(new, digest, now, None) for new, digest in fresh]
            inserted = list(executor.execute(_INSERT_MESSAGES, rows).scalars())
            self._insert_children(
                executor, [(new, pk) for (new, _), pk in zip(fresh, inserted, strict=True)], now
            )
            pks = iter(inserted)
        outcomes: list[tuple[int, bool]] = []
        for key, copy in zip(keys, copies, strict=True):
            if copy:
                assert key is not None
                outcomes.append((known[key], True))
                continue
            pk = next(pks)
            if key is not None:
                known.setdefault(key, pk)
            outcomes.append((pk, False))
        return _results(outcomes, places)

    def _add_plain(self, batch: Sequence[NewMessage], now: datetime) -> list[StoredMessage]:
        """Plain messages, their queue rows and audit events in one batch, copies of stored messages found
        by the batch's writer (``pg_batch``, ``sqlite_batch``). The rows of the children name their message
        by its place in the batch until the writer has its id. On PostgreSQL one statement: without
        attachments, it is the whole transaction, sent in autocommit, one round trip where ``BEGIN``, the
        look-up, the insert and ``COMMIT`` took four."""
        firsts, places = _distinct(batch)
        for new, _ in firsts:
            _check_kept_aside(new)
        rows = [_message_row(new, digest, now, None) for new, digest in firsts]
        deliveries = [row for n, (new, _) in enumerate(firsts) for row in _delivery_rows(new, n, now)]
        events = [row for n, (new, _) in enumerate(firsts) for row in _audit_rows(new, n, now)]
        children = [(DELIVERIES, deliveries), (AUDIT_EVENTS, events)]
        if self.engine.dialect.name != "postgresql":
            attachments = [row for n, (new, _) in enumerate(firsts) for row in _attachment_rows(new, n)]
            family = Family((MESSAGES, rows), [(ATTACHMENTS, attachments), *children], *_COPIES)
            with self.engine.begin() as connection:
                outcomes = sqlite_batch.insert_family(connection, family)
            return _results(outcomes, places)
        attached = any(new.attachments for new, _ in firsts)
        with (self.engine if attached else self._autocommit).begin() as connection:
            outcomes = pg_batch.insert_family(connection, Family((MESSAGES, rows), children, *_COPIES))
            if attached:
                stored = [
                    (new, pk) for (new, _), (pk, copy) in zip(firsts, outcomes, strict=True) if not copy
                ]
                self._insert_attachments(connection, stored)
        return _results(outcomes, places)

    @staticmethod
    def _insert_attachments(executor: Executor, stored: Sequence[tuple[NewMessage, int]]) -> None:
        attachments = [row for new, pk in stored for row in _attachment_rows(new, pk)]
        if attachments:
            executor.execute(_INSERT_ATTACHMENTS, attachments)

    @staticmethod
    def _insert_children(executor: Executor, stored: Sequence[tuple[NewMessage, int]], now: datetime) -> None:
        """The attachments, queue rows and audit events of messages just inserted, one statement each."""
        Repository._insert_attachments(executor, stored)
        deliveries = [row for new, pk in stored for row in _delivery_rows(new, pk, now)]
        events = [row for new, pk in stored for row in _audit_rows(new, pk, now)]
        if deliveries:
            executor.execute(_INSERT_DELIVERIES, deliveries)
        executor.execute(_INSERT_AUDIT, events)

    @staticmethod
    def _find_hl7(session: Session, key: tuple[str, str]) -> int | None:
        query = select(Hl7Transmission.message_pk).where(
            Hl7Transmission.producer == key[0], Hl7Transmission.control_id == key[1]
        )
        return session.execute(query).scalar()

    def _find_duplicate(self, session: Session, new: NewMessage) -> int | None:
        if new.hl7_control is not None:
            return self._find_hl7(session, new.hl7_control)
        if new.message_id is None:
            return None
        query = select(Message.id).where(Message.message_id == new.message_id, Message.digest == new.digest)
        return session.execute(query.limit(1)).scalar()

    def insert_message(self, session: Session, new: NewMessage, now: datetime) -> int:
        """Insert one message in the caller's transaction (an answer committed with what settles it)."""
        return self._insert_message(session, new, now)

    def _insert_message(self, session: Session, new: NewMessage, now: datetime) -> int:
        _check_kept_aside(new)
        patient_pk = self._upsert_patient(session, new.patient) if new.patient else None
        pk: int = session.execute(
            insert(MESSAGES).values(_message_row(new, new.digest, now, patient_pk)).returning(MESSAGES.c.id)
        ).scalar_one()
        self._insert_children(session, [(new, pk)], now)
        if new.hl7_control is not None:
            producer, control_id = new.hl7_control
            session.execute(
                insert(Hl7Transmission).values(
                    producer=producer,
                    control_id=control_id,
                    message_pk=pk,
                    received_at=now,
                    zam_events=new.zam_events,
                )
            )
        if new.channel is not None:
            apply_intent(session, new.channel, pk, now)
        if new.receipt is not None and not apply_receipt(session, new.receipt, pk, now):
            session.execute(update(Message).where(Message.id == pk).values(state=UNMATCHED))
            write_audit(session, now, UNMATCHED, pk)
        queue_mdms(session, pk, new.mdms, now)
        for follow_up in new.follow_ups:
            # An answer committed with what it answers (an MDN): both or neither.
            self._insert_message(session, dataclasses.replace(follow_up, related_message_pk=pk), now)
        return pk

    @staticmethod
    def _upsert_patient(session: Session, patient: PatientRecord) -> int:
        found = session.execute(
            select(Patient).where(Patient.matricule == patient.matricule, Patient.oid == patient.oid)
        ).scalar()
        if found is None:
            found = Patient(matricule=patient.matricule, oid=patient.oid)
            session.add(found)
        found.birth_name = patient.birth_name
        found.given_name = patient.given_name
        found.birth_date = patient.birth_date
        found.sex = patient.sex.value
        session.flush()
        return found.id

    def claim_due(
        self, owner: str, now: datetime, lease: timedelta, limit: int, crash_limit: int
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries to ``owner``, first reclaiming other owners' expired leases,
        each with its message's envelope and raw bytes while they fit in ``PRELOAD_BYTES``.

        A live owner renews its leases (``renew_leases``), so an expired one means its owner is gone: that
        counts as a crash. ``owner``'s own leases are never reclaimed here, whatever their time: this
        instance still holds them in memory (a restart takes them back with ``recover_owner``).
        On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED`` so several instances can share
        the queue without waiting on each other; SQLite serialises writers with ``BEGIN IMMEDIATE``.
        """
        postgresql = self.engine.dialect.name == "postgresql"
        # Without a look for expired leases, PostgreSQL's claim is one statement: the whole transaction, sent
        # in autocommit, one round trip where ``BEGIN``, the claim and ``COMMIT`` took three (issue 16).
        alone = postgresql and not self._looks_for_expired(owner, now)
        with (self._autocommit if alone else self.engine).begin() as connection:
            reclaim_due = self._reclaim_expired(connection, owner, now, crash_limit)
            params: dict[str, object] = {"now": now, "limit": limit, "owner": owner, "until": now + lease}
            envelopes: dict[int, Envelope] = {}
            rows: list[tuple[Any, ...]]
            if postgresql:
                found = pg_batch.claim(connection, {**params, "room": PRELOAD_BYTES})
                rows = [row[:8] for row in found]
                for row in found:
                    if row[13] is not None:
                        envelopes[row[1]] = Envelope(row[1], *row[8:])
            else:
                rows = [tuple(row) for row in connection.execute(_CLAIM, params)]
                envelopes = self._preload(connection, [row[1] for row in rows])
        if reclaim_due is not None:
            # Only once committed: a claim rolled back has reclaimed nothing.
            self._reclaim_due[owner] = reclaim_due
        claimed = [
            ClaimedDelivery(
                pk, message_pk, recipient, notify, orcpt, attempts, created_at, via, envelopes.get(message_pk)
            )
            for pk, message_pk, recipient, notify, orcpt, attempts, created_at, via in rows
        ]
        claimed.sort(key=lambda c: (c.message_pk, c.pk))
        return claimed

    @staticmethod
    def _preload(connection: Connection, message_pks: Sequence[int]) -> dict[int, Envelope]:
        """The envelopes of a claim's messages with their raw bytes, while these fit in ``PRELOAD_BYTES``."""
        if not message_pks:
            return {}
        envelopes: dict[int, Envelope] = {}
        for found in connection.execute(_PRELOAD, {"pks": sorted(set(message_pks)), "room": PRELOAD_BYTES}):
            if found[6] is not None:
                envelopes[found[0]] = Envelope(*found)
        return envelopes

    def _looks_for_expired(self, owner: str, now: datetime) -> bool:
        """Whether ``owner``'s claim at ``now`` looks for other owners' expired leases."""
        due = self._reclaim_due.get(owner)
        return due is None or now >= due

    def _reclaim_expired(
        self, connection: Connection, owner: str, now: datetime, crash_limit: int
    ) -> datetime | None:
        """Take back other owners' expired leases, when one can have expired since the last look; returns
        when the next claim must look again (None: not looked now).

        The look reads every lease of the other owners: the earliest still running is when one can
        expire next; leases they take afterwards last their ``relay.lease``, minutes, so a look every
        ``RECLAIM_RECHECK`` sees them in time.
        """
        if not self._looks_for_expired(owner, now):
            return None
        leases = connection.execute(_LEASED_BY_OTHERS, {"owner": owner}).all()
        expired = [(pk, message_pk, crashes) for pk, message_pk, crashes, until in leases if until < now]
        self._reclaim(connection, expired, now, crash_limit)
        running: list[datetime] = [until for *_, until in leases if until >= now]
        return min([*running, now + RECLAIM_RECHECK])

    def recover_owner(self, owner: str, now: datetime, crash_limit: int) -> int:
        """At start-up, take back the leases a previous (dead) incarnation of ``owner`` held.

        They count as a crash: a message that kills the daemon ``crash_limit`` times is held.
        """
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(_d.id, _d.message_pk, _d.crashes).where(_d.state == _SENDING, _d.claimed_by == owner)
            ).all()
            return self._reclaim(
                connection, [(pk, message_pk, crashes) for pk, message_pk, crashes in rows], now, crash_limit
            )

    @staticmethod
    def _reclaim(
        connection: Connection, leases: Sequence[tuple[int, int, int]], now: datetime, crash_limit: int
    ) -> int:
        """Put deliveries whose lease was lost (id, message id, crashes so far) back in the queue, or hold
        those that reached ``crash_limit``; returns how many."""
        for pk, message_pk, crashes in leases:
            held = crashes + 1 >= crash_limit
            state = DeliveryState.HELD if held else DeliveryState.QUEUED
            connection.execute(
                update(DELIVERIES)
                .where(_d.id == pk)
                .values(
                    state=state.value,
                    crashes=crashes + 1,
                    claimed_by=None,
                    claimed_until=None,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
            if held:
                # Nothing else says why a delivery stopped moving: the trail, the log and ``queue show``.
                detail: dict[str, object] = {"reason": CRASH_LIMIT, "crashes": crashes + 1}
                write_audit(connection, now, "held", message_pk, pk, detail=detail)
                audit("held", logging.WARNING, queue_id=message_pk, delivery=pk, **detail)
            else:
                write_audit(connection, now, "lease-reclaimed", message_pk, pk)
        return len(leases)

    def renew_leases(self, owner: str, delivery_pks: Sequence[int], until: datetime) -> int:
        """The heartbeat: extend ``owner``'s leases on deliveries it is still working on to ``until``."""
        if not delivery_pks:
            return 0
        with self.engine.begin() as connection:
            result = connection.execute(
                update(DELIVERIES)
                .where(_d.id.in_(delivery_pks), _d.state == _SENDING, _d.claimed_by == owner)
                .values(claimed_until=until)
            )
            return result.rowcount

    def unclaim(self, owner: str, pks: Sequence[int], now: datetime) -> None:
        """Give back deliveries claimed just as a stop began, before any transaction: their attempt never
        happened, so it is not counted (``claim_due`` counted it)."""
        with self.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(pks),
                    Delivery.state == DeliveryState.SENDING.value,
                    Delivery.claimed_by == owner,
                )
                .values(
                    state=DeliveryState.QUEUED.value,
                    claimed_by=None,
                    claimed_until=None,
                    attempts=Delivery.attempts - 1,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )

    def release_claims(self, owner: str, now: datetime) -> int:
        """On a clean stop, give back unfinished leases without counting a crash."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Delivery)
                .where(Delivery.state == DeliveryState.SENDING.value, Delivery.claimed_by == owner)
                .values(
                    state=DeliveryState.QUEUED.value,
                    claimed_by=None,
                    claimed_until=None,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def load_envelopes(self, message_pks: Iterable[int]) -> dict[int, Envelope]:
        """The raw messages and envelopes behind a set of claimed deliveries."""
        pks = sorted(set(message_pks))
        with self.reads.connect() as connection:
            if connection.dialect.name == "postgresql":
                rows: Sequence[tuple[Any, ...]] = pg_batch.load_envelopes(connection, pks)
            else:
                rows = connection.execute(_ENVELOPES, {"pks": pks}).all()
        return {row[0]: Envelope(*row) for row in rows}

    def receipt_original(self, receipt: ReceiptUpdate) -> OriginalSender | None:
        """The sender of the message ``receipt`` is about, when the store has it."""
        with self.sessions() as session:
            pk = original_of(session, receipt)
            if pk is None:
                return None
            row = session.execute(
                select(Message.envelope_from, Message.source, Message.client).where(Message.id == pk)
            ).one()
        return OriginalSender(*row)

    def record_outcomes(
        self, outcomes: Sequence[DeliveryOutcome], notices: Sequence[Notice], now: datetime
    ) -> list[int]:
        """Record what the next hops answered, and write DSNs, in one transaction.

        Returns the ids of the notice messages written. A delivery that was taken from this instance
        meanwhile (its lease expired and another claimed it) is left alone.
        """
        notice_pks: list[int] = []
        with self.engine.begin() as connection:
            recorded = self._record_outcomes(connection, outcomes)
            failed = [o.delivery_pk for o in recorded if o.state is DeliveryState.FAILED]
            if failed or notices:
                with self._orm(connection) as session:
                    self._settle_failures(session, failed, notices, now, notice_pks)
        return notice_pks

    def _settle_failures(
        self,
        session: Session,
        failed: Sequence[int],
        notices: Sequence[Notice],
        now: datetime,
        notice_pks: list[int],
    ) -> None:
        """The ZAM owed for failed deliveries and the DSNs written for their senders (``record_outcomes``);
        the notices' ids are appended to ``notice_pks``."""
        owe_relay_failures(session, failed, now)
        for notice in notices:
            pk = self._insert_message(session, notice.message, now)
            notice_pks.append(pk)
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(notice.delivery_pks),
                    Delivery.state == DeliveryState.FAILED.value,
                )
                .values(state=DeliveryState.NOTIFIED.value, notice_pk=pk)
            )

    @staticmethod
    def _record_outcomes(
        connection: Connection, outcomes: Sequence[DeliveryOutcome]
    ) -> list[DeliveryOutcome]:
        """The outcomes of a group in a few statements, whatever its size: which deliveries are still
        this instance's to record (locked until the commit: the write lock on SQLite, ``FOR UPDATE`` on
        PostgreSQL), then one ``executemany`` each for their updates, attempts and audit events; on
        PostgreSQL all of it in one statement (``pg_batch``). Returns the outcomes recorded (a delivery
        another instance took meanwhile is left alone)."""
        if not outcomes:
            return []
        if connection.dialect.name == "postgresql":
            recorded = pg_batch.record_outcomes(
                connection,
                [
                    (
                        o.delivery_pk,
                        o.state.value,
                        o.at,
                        o.code,
                        o.reply,
                        o.peer,
                        o.next_attempt_at,
                        o.refusal,
                        audit_detail({"code": o.code} if o.code else None),
                    )
                    for o in outcomes
                ],
            )
            return [outcome for outcome in outcomes if outcome.delivery_pk in recorded]
        pks = [outcome.delivery_pk for outcome in outcomes]
        still_sending: dict[int, int] = {
            pk: message_pk for pk, message_pk in connection.execute(_STILL_SENDING, {"pks": pks})
        }
        mine = [outcome for outcome in outcomes if outcome.delivery_pk in still_sending]
        if not mine:
            return mine
        # executemany needs one set of columns per statement: group the rows by the columns they set.
        updates: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for outcome in mine:
            values = _outcome_values(outcome)
            updates.setdefault(tuple(values), []).append({"pk": outcome.delivery_pk, **values})
        for rows in updates.values():
            connection.execute(_RECORD, rows)
        connection.execute(
            _INSERT_ATTEMPTS,
            [
                {
                    "delivery_pk": o.delivery_pk,
                    "at": o.at,
                    "outcome": o.state.value,
                    "code": o.code,
                    "reply": o.reply,
                    "peer": o.peer,
                }
                for o in mine
            ],
        )
        connection.execute(
            _INSERT_AUDIT,
            [
                {
                    "at": o.at,
                    "kind": o.state.value,
                    "message_pk": still_sending[o.delivery_pk],
                    "delivery_pk": o.delivery_pk,
                    "channel_pk": None,
                    "detail": audit_detail({"code": o.code} if o.code else None),
                }
                for o in mine
            ],
        )
        return mine

    def next_wakeup(self, owner: str | None = None) -> datetime | None:
        """When the relay must look again: the earliest due retry or expiry of another owner's lease."""
        leased = Delivery.state == DeliveryState.SENDING.value
        if owner is not None:
            leased = and_(leased, Delivery.claimed_by != owner)
        due_at = select(func.min(Delivery.next_attempt_at)).where(
            Delivery.state.in_([s.value for s in WAITING])
        )
        expiry = select(func.min(Delivery.claimed_until)).where(leased)
        with self.reads.connect() as connection:  # one statement: one round trip on PostgreSQL (issue 16)
            due, lease = connection.execute(select(due_at.scalar_subquery(), expiry.scalar_subquery())).one()
        look = None if owner is None else self._reclaim_due.get(owner)
        if lease is not None and look is not None:
            # An expired lease is taken back when the claims look next, not before (``_reclaim_expired``).
            lease = max(lease, look)
        times = [t for t in (due, lease) if t is not None]
        return min(times) if times else None

    def delivered_to(self, address: str) -> bool:
        """Whether a message was ever delivered to ``address`` (the operator took it: it exists)."""
        with self.reads.connect() as session:
            found = session.execute(
                select(Delivery.id)
                .where(
                    func.lower(Delivery.recipient) == address.strip().lower(), Delivery.sent_at.is_not(None)
                )
                .limit(1)
            ).first()
            return found is not None

    def queue_depth(self) -> dict[str, int]:
        """Number of deliveries per state that still needs the relay."""
        with self.reads.connect() as session:
            rows = session.execute(
                select(Delivery.state, func.count())
                .where(Delivery.state.in_([*(s.value for s in WAITING), "sending", "held"]))
                .group_by(Delivery.state)
            ).all()
        return {state: count for state, count in rows}

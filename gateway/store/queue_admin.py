"""What ``mssgw queue`` shows and changes: the queue seen message by message, and the sysadmin's actions.

A queue id is a message id; actions apply to the message's deliveries that are in a state the action makes
sense for, and say how many they changed. A delivery being sent right now is never touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import InputError, NotFoundError
from gateway.store.audit import write_audit
from gateway.store.mdms import MdmView, mdms_of
from gateway.store.states import DeliveryState
from gateway.store.tables import AuditEvent, Delivery, DeliveryAttempt, Message
from gateway.store.zams import OwedZam, zams_of

PENDING = ("queued", "sending", "deferred", "held", "failed")


@dataclass(frozen=True, slots=True)
class AttemptView:
    at: datetime
    outcome: str
    code: int | None
    reply: str | None
    peer: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    recipient: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_reply: str | None
    sent_at: datetime | None
    notice_id: int | None
    history: tuple[AttemptView, ...] = ()
    receipt_status: str | None = None
    receipt_detail: str | None = None
    receipt_at: datetime | None = None
    receipt_id: int | None = None
    held_reason: str | None = None
    """Why a held delivery is held, when the gateway held it (``crash-limit after 3 crashes``)."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: int
    created_at: datetime
    direction: str
    kind: str
    envelope_from: str
    message_id: str | None
    size: int
    deliveries: tuple[DeliveryView, ...]
    events: tuple[tuple[datetime, str, int | None], ...] = ()
    state: str = "stored"
    state_reason: str | None = None
    related_id: int | None = None
    source: str = ""
    client: str | None = None
    reports: str | None = None
    """Where the sender's delivery reports go; said by ``mssgw queue show`` from the configuration."""
    zams: tuple[OwedZam, ...] = ()
    mdms: tuple[MdmView, ...] = ()
    """The business acknowledgements owed to the HL7 producer of this message (``show`` only)."""


class QueueAdmin:
    """Read and repair the queue."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def entries(self, states: tuple[str, ...] = PENDING, limit: int = 1000) -> list[QueueEntry]:
        """Messages with at least one delivery in ``states``, oldest first."""
        with self.sessions() as session:
            pks = list(
                session.execute(
                    select(Delivery.message_pk)
                    .where(Delivery.state.in_(states))
                    .group_by(Delivery.message_pk)
                    .order_by(Delivery.message_pk)
                    .limit(limit)
                ).scalars()
            )
            return [self._entry(session, pk, history=False) for pk in pks]

    def show(self, pk: int) -> QueueEntry:
        """One message with every delivery's attempts and the audit trail."""
        with self.sessions() as session:
            return self._entry(session, pk, history=True)

    def raw(self, pk: int) -> bytes:
        """The message exactly as stored (and as it leaves, before DKIM signing)."""
        with self.sessions() as session:
            raw = session.execute(select(Message.raw).where(Message.id == pk)).scalar()
        if raw is None:
            raise NotFoundError(f"queue id {pk}: no such message")
        return raw

    def _entry(self, session: Session, pk: int, history: bool) -> QueueEntry:
        message = session.get(Message, pk)
        if message is None:
            raise NotFoundError(f"queue id {pk}: no such message")
        deliveries = session.execute(
            select(Delivery).where(Delivery.message_pk == pk).order_by(Delivery.id)
        ).scalars()
        views = []
        for d in deliveries:
            attempts: tuple[AttemptView, ...] = ()
            if history:
                rows = session.execute(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.delivery_pk == d.id)
                    .order_by(DeliveryAttempt.id)
                ).scalars()
                attempts = tuple(AttemptView(a.at, a.outcome, a.code, a.reply, a.peer) for a in rows)
            waiting = d.state in ("queued", "deferred")
            views.append(
                DeliveryView(
                    d.id,
                    d.recipient,
                    d.state,
                    d.attempts,
                    d.next_attempt_at if waiting else None,
                    d.last_code,
                    d.last_reply,
                    d.sent_at,
                    d.notice_pk,
                    attempts,
                    d.receipt_status,
                    d.receipt_detail,
                    d.receipt_at,
                    d.receipt_pk,
                    _held_reason(session, d.id) if d.state == DeliveryState.HELD.value else None,
                )
            )
        events: tuple[tuple[datetime, str, int | None], ...] = ()
        if history:
            trail = session.execute(
                select(AuditEvent.at, AuditEvent.kind, AuditEvent.delivery_pk)
                .where(AuditEvent.message_pk == pk)
                .order_by(AuditEvent.id)
            ).all()
            events = tuple((row.at, row.kind, row.delivery_pk) for row in trail)
        return QueueEntry(
            message.id,
            message.created_at,
            message.direction,
            message.kind,
            message.envelope_from,
            message.message_id,
            message.size,
            tuple(views),
            events,
            message.state,
            message.state_reason,
            message.related_message_id,
            message.source,
            message.client,
            zams=zams_of(session, pk) if history else (),
            mdms=mdms_of(session, pk) if history else (),
        )

    def retry(self, pk: int, now: datetime) -> int:
        """Make waiting or failed deliveries due now."""
        return self._move(
            pk, ("queued", "deferred", "failed", "notified"), DeliveryState.QUEUED, now, "retry"
        )

    def hold(self, pk: int, now: datetime) -> int:
        """Put waiting deliveries aside until released."""
        return self._move(pk, ("queued", "deferred"), DeliveryState.HELD, now, "hold")

    def release(self, pk: int, now: datetime) -> int:
        """Send held deliveries again, now, with their crash count reset."""
        return self._move(pk, ("held",), DeliveryState.QUEUED, now, "release")

    def _move(
        self, pk: int, sources: tuple[str, ...], target: DeliveryState, now: datetime, action: str
    ) -> int:
        with self.sessions.begin() as session:
            self._require(session, pk)
            values: dict[str, object] = {"state": target.value, "updated_at": now, "next_attempt_at": now}
            if action == "release":
                values["crashes"] = 0
            changed = session.execute(
                update(Delivery)
                .where(Delivery.message_pk == pk, Delivery.state.in_(sources))
                .values(**values)
                .returning(Delivery.id)
            ).all()
            if not changed:
                states = ", ".join(sorted(self._states(session, pk))) or "none"
                raise InputError("ID", f"queue id {pk}: nothing to {action} (its deliveries are: {states})")
            for (delivery_pk,) in changed:
                write_audit(session, now, f"admin-{action}", pk, delivery_pk)
            return len(changed)

    def delete(self, pk: int, now: datetime) -> int:
        """Remove a message and its deliveries, unless one is being sent right now."""
        with self.sessions.begin() as session:
            self._require(session, pk)
            if "sending" in self._states(session, pk):
                raise InputError("ID", f"queue id {pk}: a delivery is being sent; hold or retry later")
            count = len(self._states(session, pk, distinct=False))
            session.execute(
                delete(DeliveryAttempt).where(
                    DeliveryAttempt.delivery_pk.in_(select(Delivery.id).where(Delivery.message_pk == pk))
                )
            )
            session.execute(delete(Delivery).where(Delivery.message_pk == pk))
            session.execute(update(Delivery).where(Delivery.notice_pk == pk).values(notice_pk=None))
            session.execute(
                update(Message).where(Message.related_message_id == pk).values(related_message_id=None)
            )
            session.execute(delete(Message).where(Message.id == pk))
            write_audit(session, now, "admin-delete", pk)
            return count

    @staticmethod
    def _require(session: Session, pk: int) -> None:
        if session.get(Message, pk) is None:
            raise NotFoundError(f"queue id {pk}: no such message")

    @staticmethod
    def _states(session: Session, pk: int, distinct: bool = True) -> list[str]:
        query = select(Delivery.state).where(Delivery.message_pk == pk)
        states = list(session.execute(query).scalars())
        return sorted(set(states)) if distinct else states


def _held_reason(session: Session, delivery_pk: int) -> str | None:
    """The reason the last hold of the delivery records; None when a person held it."""
    last = session.execute(
        select(AuditEvent.kind, AuditEvent.detail)
        .where(AuditEvent.delivery_pk == delivery_pk, AuditEvent.kind.in_(("held", "admin-hold")))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()
    if last is None or last.kind != "held" or not last.detail:
        return None
    detail = last.detail
    recorded = json.loads(detail)
    crashes = recorded.get("crashes")
    return str(recorded.get("reason")) + (f" after {crashes} crashes" if crashes else "")

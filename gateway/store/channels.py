"""Citizen channels in the store: opened, touched and closed with the message that causes it, expired by
the scheduler, closed by a sysadmin, and the patient mail refused because of them.

A channel is (professional mailbox × patient matricule). ``apply_intent`` runs inside the transaction that
commits the message, so a channel never changes without its message (and the reverse). Every transition
writes an audit event carrying the channel id. Mailboxes are kept lower-cased; matricules as checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import InputError, NotFoundError
from gateway.store.audit import write_audit
from gateway.store.states import ChannelState
from gateway.store.tables import AuditEvent, Channel, Message

IntentAction = Literal["send", "close", "reply"]


@dataclass(frozen=True, slots=True)
class ChannelIntent:
    """What committing one message does to citizen channels.

    ``send`` opens (or reuses) the channel of ``mailboxes[0]`` with each patient; ``close`` closes every
    channel of any of ``mailboxes`` with each patient (and records one closed when none existed); ``reply``
    (an accepted patient message) counts as activity on the open channels.
    """

    mailboxes: tuple[str, ...]
    matricules: tuple[str, ...]
    action: IntentAction
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelView:
    """One channel as ``mssgw channels`` shows it; ``events`` is its audit trail (time, kind, message)."""

    id: int
    mailbox: str
    matricule: str
    state: str
    opened_at: datetime
    opened_by: str | None
    last_activity_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    reason: str | None
    events: tuple[tuple[datetime, str, int | None], ...] = ()


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """Patient mail kept aside because no channel was open for it (never delivered, never deleted)."""

    id: int
    received_at: datetime
    source: str
    sender: str
    message_id: str | None
    reason: str | None


def _view(row: Channel, events: tuple[tuple[datetime, str, int | None], ...] = ()) -> ChannelView:
    return ChannelView(
        row.id,
        row.mailbox,
        row.patient_matricule,
        row.state,
        row.opened_at,
        row.opened_by,
        row.last_activity_at,
        row.closed_at,
        row.closed_by,
        row.reason,
        events,
    )


def apply_intent(session: Session, intent: ChannelIntent, message_pk: int, now: datetime) -> None:
    """Change the channels as the message being committed says (inside its transaction)."""
    mailboxes = tuple(dict.fromkeys(m.lower() for m in intent.mailboxes))
    for matricule in intent.matricules:
        open_rows = list(
            session.execute(
                select(Channel).where(
                    Channel.mailbox.in_(mailboxes),
                    Channel.patient_matricule == matricule,
                    Channel.state == ChannelState.OPEN.value,
                )
            ).scalars()
        )
        if intent.action == "reply":
            for row in open_rows:
                row.last_activity_at = now
            continue
        if intent.action == "send":
            own = [row for row in open_rows if row.mailbox == mailboxes[0]]
            if own:
                own[0].last_activity_at = now
                continue
            _insert(session, mailboxes[0], matricule, intent.message_id, message_pk, now)
            continue
        if not open_rows:
            open_rows = [_insert(session, mailboxes[0], matricule, intent.message_id, message_pk, now)]
        for row in open_rows:
            _close(session, row, ChannelState.CLOSED, now, intent.message_id, "[FIN] sent", message_pk)


def _insert(
    session: Session, mailbox: str, matricule: str, message_id: str | None, message_pk: int, now: datetime
) -> Channel:
    row = Channel(
        mailbox=mailbox,
        patient_matricule=matricule,
        state=ChannelState.OPEN.value,
        opened_at=now,
        opened_by=message_id,
        last_activity_at=now,
    )
    session.add(row)
    session.flush()
    write_audit(session, now, "channel-opened", message_pk, channel_pk=row.id)
    return row


def _close(
    session: Session,
    row: Channel,
    state: ChannelState,
    now: datetime,
    closed_by: str | None,
    reason: str,
    message_pk: int | None,
) -> None:
    row.state = state.value
    row.closed_at = now
    row.closed_by = closed_by
    row.reason = reason
    write_audit(
        session, now, f"channel-{state.value}", message_pk, channel_pk=row.id, detail={"reason": reason}
    )


class ChannelStore:
    """Reading channels, closing them by hand, expiring them, and the patient mail they refused."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def latest(self, mailbox: str, matricule: str) -> ChannelView | None:
        """The channel that decides whether ``matricule`` may write to ``mailbox``: an open one, else the
        most recently closed or expired; ``None`` when the mailbox never wrote to that patient."""
        with self.sessions() as session:
            rows = session.execute(
                select(Channel)
                .where(Channel.mailbox == mailbox.lower(), Channel.patient_matricule == matricule)
                .order_by(Channel.id.desc())
            ).scalars()
            found = list(rows)
        opened = [row for row in found if row.state == ChannelState.OPEN.value]
        chosen = opened[0] if opened else (found[0] if found else None)
        return None if chosen is None else _view(chosen)

    def find(
        self, states: Sequence[str] = (), matricule: str | None = None, mailbox: str | None = None
    ) -> list[ChannelView]:
        """Channels, newest first, filtered by state, patient and mailbox."""
        query = select(Channel).order_by(Channel.id.desc())
        if states:
            query = query.where(Channel.state.in_(states))
        if matricule:
            query = query.where(Channel.patient_matricule == matricule)
        if mailbox:
            query = query.where(Channel.mailbox == mailbox.lower())
        with self.sessions() as session:
            return [_view(row) for row in session.execute(query).scalars()]

    def show(self, pk: int) -> ChannelView:
        """One channel with its audit trail."""
        with self.sessions() as session:
            row = session.get(Channel, pk)
            if row is None:
                raise NotFoundError(f"channel {pk}: no such channel")
            trail = session.execute(
                select(AuditEvent.at, AuditEvent.kind, AuditEvent.message_pk)
                .where(AuditEvent.channel_pk == pk)
                .order_by(AuditEvent.id)
            ).all()
            return _view(row, tuple((r.at, r.kind, r.message_pk) for r in trail))

    def close(self, pk: int, who: str, now: datetime) -> ChannelView:
        """Close an open channel by hand (nothing is sent to the patient); ``who`` is recorded."""
        with self.sessions.begin() as session:
            row = session.get(Channel, pk)
            if row is None:
                raise NotFoundError(f"channel {pk}: no such channel")
            if row.state != ChannelState.OPEN.value:
                raise InputError("ID", f"channel {pk} is already {row.state}")
            _close(session, row, ChannelState.CLOSED, now, f"admin:{who}", f"closed by {who}", None)
            return _view(row)

    def note_refusal(
        self, channel_pk: int | None, mailbox: str, masked_patient: str, reason: str, now: datetime
    ) -> None:
        """Audit patient mail refused before it was stored (SMTP): nothing else would remember it."""
        with self.sessions.begin() as session:
            write_audit(
                session,
                now,
                "patient-mail-refused",
                None,
                channel_pk=channel_pk,
                detail={"mailbox": mailbox.lower(), "patient": masked_patient, "reason": reason},
            )

    def expire(self, now: datetime, idle_since: datetime) -> list[int]:
        """Expire the open channels without activity since ``idle_since``; the ids of those expired."""
        with self.sessions.begin() as session:
            rows = list(
                session.execute(
                    select(Channel)
                    .where(Channel.state == ChannelState.OPEN.value, Channel.last_activity_at < idle_since)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            for row in rows:
                reason = f"no activity since {row.last_activity_at:%Y-%m-%d}"
                _close(session, row, ChannelState.EXPIRED, now, None, reason, None)
        return [row.id for row in rows]

    def refused(self, limit: int = 1000) -> list[RefusedMessage]:
        """Patient mail kept in the ``refused`` state, newest first."""
        with self.sessions() as session:
            rows = session.execute(
                select(
                    Message.id,
                    Message.created_at,
                    Message.source,
                    Message.envelope_from,
                    Message.message_id,
                    Message.state_reason,
                )
                .where(Message.state == "refused")
                .order_by(Message.id.desc())
                .limit(limit)
            ).all()
        return [RefusedMessage(*row) for row in rows]

    def thread_of(self, message_ids: Sequence[str]) -> int | None:
        """The stored message a reply answers (by In-Reply-To / References), to keep it in its thread."""
        if not message_ids:
            return None
        with self.sessions() as session:
            return session.execute(
                select(Message.id)
                .where(or_(*(Message.message_id == m for m in message_ids)))
                .order_by(Message.id.desc())
                .limit(1)
            ).scalar()

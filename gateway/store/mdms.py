"""The MDMs owed to HL7 consumers: written with the received mail, claimed one at a time by the MLLP sender.

Each document of a mail received on a mailbox a consumer serves becomes one row (``gateway.receipts.
consumers`` builds them), committed in the mail's own transaction: a crash before the consumer's ACK sends
the same MDM (same MSH-10) again. Rows leave ``pending`` only through ``settle``, which writes the mail's
MDN in the same transaction as the last settlement, so the MDN goes exactly once. Order: an MDM waits while
an earlier unsettled MDM to the same consumer names the same document (its id or the id it replaces), so
a T10 or a T04 never overtakes the T02 it follows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from gateway.store.audit import write_audit
from gateway.store.tables import Hl7Mdm, Message
from mappers.hl7_consumer_ack import DocumentResult
from mappers.hl7_mdm import masks_sent

if TYPE_CHECKING:
    from gateway.store.repository import NewMessage, Repository

PENDING = "pending"
ANSWERED = "answered"
UNANSWERED = "unanswered"

MdnWriter = Callable[[bytes, Sequence[tuple[str, DocumentResult]], str, str], "NewMessage | None"]
"""(original raw, each document's name and result, our mailbox, the MDN's recipient) → the MDN to commit."""


@dataclass(frozen=True, slots=True)
class NewMdm:
    """One MDM to commit with its mail; ``mdn_to`` None when no MDN is to go back."""

    consumer: str
    mailbox: str
    name: str
    event: str
    control_id: str
    document_id: str
    replaces: str
    payload: bytes
    mdn_to: str | None


@dataclass(frozen=True, slots=True)
class ClaimedMdm:
    """A due MDM leased to the sender: what it sends and how many times it tried."""

    id: int
    message_pk: int
    consumer: str
    event: str
    control_id: str
    attempts: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class MdmView:
    """One MDM as ``mssgw queue show`` lists it: its state, the consumer's answer, the MDN it produced."""

    id: int
    consumer: str
    name: str
    event: str
    control_id: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    ack_code: str | None
    result_code: int | None
    result_label: str | None
    result_detail: str | None
    settled_at: datetime | None
    mdn_id: int | None


def queue_mdms(session: Session, message_pk: int, mdms: Sequence[NewMdm], now: datetime) -> None:
    """Write the MDMs of one received mail, in package order (in the caller's transaction)."""
    if not mdms:
        return
    session.execute(
        insert(Hl7Mdm),
        [
            dataclasses.asdict(mdm)
            | {
                "message_pk": message_pk,
                "position": position,
                "replaces": mdm.replaces or None,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for position, mdm in enumerate(mdms)
        ],
    )
    write_audit(session, now, "mdm-owed", message_pk, detail={"mdms": len(mdms)})


class MdmQueue:
    """Due MDMs claimed by a lease, put back later, or settled (with the mail's MDN once all are)."""

    def __init__(self, sessions: sessionmaker[Session], repository: Repository) -> None:
        self.sessions = sessions
        self.repository = repository

    def claim_next(self, consumer: str, now: datetime, lease: timedelta) -> ClaimedMdm | None:
        """The oldest due MDM of ``consumer`` nothing earlier holds back, leased until ``now + lease``."""
        earlier = aliased(Hl7Mdm)
        names = [Hl7Mdm.document_id, Hl7Mdm.replaces]
        held_back = exists().where(
            earlier.consumer == Hl7Mdm.consumer,
            earlier.state == PENDING,
            earlier.id < Hl7Mdm.id,
            or_(earlier.document_id.in_(names), earlier.replaces.in_(names)),
        )
        with self.sessions.begin() as session:
            rows = session.execute(
                select(Hl7Mdm)
                .where(
                    Hl7Mdm.consumer == consumer,
                    Hl7Mdm.state == PENDING,
                    Hl7Mdm.next_attempt_at <= now,
                    ~held_back,
                )
                .order_by(Hl7Mdm.id)
                .limit(5)
            ).scalars()
            for row in list(rows):
                # Another instance that claimed it first moved next_attempt_at: this update changes nothing.
                moved = session.execute(
                    update(Hl7Mdm)
                    .where(Hl7Mdm.id == row.id, Hl7Mdm.next_attempt_at == row.next_attempt_at)
                    .values(next_attempt_at=now + lease)
                )
                if moved.rowcount == 1:  # type: ignore[attr-defined]
                    return ClaimedMdm(
                        row.id,
                        row.message_pk,
                        row.consumer,
                        row.event,
                        row.control_id,
                        row.attempts,
                        row.payload,
                    )
        return None

    def retry_later(self, pk: int, at: datetime, error: str) -> None:
        """No settling answer (no connection, no ACK, an AR): try again at ``at``."""
        with self.sessions.begin() as session:
            session.execute(
                update(Hl7Mdm)
                .where(Hl7Mdm.id == pk, Hl7Mdm.state == PENDING)
                .values(next_attempt_at=at, attempts=Hl7Mdm.attempts + 1, last_error=error)
            )

    def settle(
        self,
        pk: int,
        ack_code: str | None,
        result: DocumentResult,
        now: datetime,
        write_mdn: MdnWriter,
    ) -> int | None:
        """Record the consumer's answer (``ack_code`` None: it never answered); when it was the mail's last
        pending MDM and an MDN is owed, commit the MDN with it and return its queue id."""
        state = UNANSWERED if ack_code is None else ANSWERED
        with self.sessions.begin() as session:
            message_pk = session.execute(
                update(Hl7Mdm)
                .where(Hl7Mdm.id == pk, Hl7Mdm.state == PENDING)
                .values(
                    state=state,
                    ack_code=ack_code,
                    result_code=result.code,
                    result_label=result.label or None,
                    result_detail=result.detail or None,
                    attempts=Hl7Mdm.attempts + 1,
                    settled_at=now,
                )
                .returning(Hl7Mdm.message_pk)
            ).scalar()
            if message_pk is None:
                return None  # settled already (another instance took over a lapsed lease)
            write_audit(session, now, f"mdm-{state}", message_pk, detail={"mdm": pk, "ack": ack_code})
            return self._answer(session, message_pk, now, write_mdn)

    def _answer(self, session: Session, message_pk: int, now: datetime, write_mdn: MdnWriter) -> int | None:
        rows = list(
            session.execute(
                select(Hl7Mdm).where(Hl7Mdm.message_pk == message_pk).order_by(Hl7Mdm.position, Hl7Mdm.id)
            ).scalars()
        )
        owed = next((row for row in rows if row.mdn_to), None)
        if owed is None or owed.mdn_to is None or any(row.state == PENDING for row in rows):
            return None
        if any(row.mdn_pk is not None for row in rows):
            return None
        raw = session.execute(select(Message.raw).where(Message.id == message_pk)).scalar_one()
        results = [
            (row.name, DocumentResult(row.result_code, row.result_label or "", row.result_detail or ""))
            for row in rows
        ]
        mdn = write_mdn(raw, results, owed.mailbox, owed.mdn_to)
        if mdn is None:
            return None
        mdn_pk = self.repository.insert_message(
            session, dataclasses.replace(mdn, related_message_pk=message_pk), now
        )
        session.execute(update(Hl7Mdm).where(Hl7Mdm.message_pk == message_pk).values(mdn_pk=mdn_pk))
        return mdn_pk

    def sent_masks(self, consumer: str, document_id: str) -> frozenset[str] | None:
        """The masks of the last MDM ``consumer`` was given for ``document_id``; None when it never was.

        A replacement's MODIF_CONF_CODE says whether its masks differ from these (docs/hl7-consumers.md).
        """
        with self.sessions() as session:
            payload = session.execute(
                select(Hl7Mdm.payload)
                .where(Hl7Mdm.consumer == consumer, Hl7Mdm.document_id == document_id)
                .order_by(Hl7Mdm.id.desc())
                .limit(1)
            ).scalar()
        return masks_sent(payload) if payload is not None else None

    def pending(self) -> dict[str, tuple[int, datetime | None]]:
        """Per consumer: MDMs not yet settled and the oldest one's creation time (the metrics' gauges)."""
        with self.sessions() as session:
            rows = session.execute(
                select(Hl7Mdm.consumer, func.count(), func.min(Hl7Mdm.created_at))
                .where(Hl7Mdm.state == PENDING)
                .group_by(Hl7Mdm.consumer)
            ).all()
        return {consumer: (count, oldest) for consumer, count, oldest in rows}


def mdms_of(session: Session, message_pk: int) -> tuple[MdmView, ...]:
    """The MDMs of one received mail, for ``mssgw queue show``."""
    rows = session.execute(
        select(Hl7Mdm).where(Hl7Mdm.message_pk == message_pk).order_by(Hl7Mdm.position, Hl7Mdm.id)
    ).scalars()
    return tuple(
        MdmView(
            r.id,
            r.consumer,
            r.name,
            r.event,
            r.control_id,
            r.state,
            r.attempts,
            r.next_attempt_at,
            r.last_error,
            r.ack_code,
            r.result_code,
            r.result_label,
            r.result_detail,
            r.settled_at,
            r.mdn_pk,
        )
        for r in rows
    )

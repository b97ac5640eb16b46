"""The ZAM owed to HL7 producers: written with the receipt that causes them, claimed by the MLLP sender.

Z02 comes from the DSN (the guide's trigger: the recipient's server took the mail, or refused it); the
operator's 250 alone makes none, because a producer that asks ACK_RECEPTION gets NOTIFY=SUCCESS,FAILURE on
every recipient, so a DSN is always asked for. A permanent refusal at relay time (the operator's own 5xx, or
a deferral past ``relay.max_lifetime``) is the gateway's own DSN: ``owe_relay_failures`` makes its Z02 (N)
in the transaction that records the failure. Z03 comes from the MDN. A receipt for a message that did not
come from an HL7 producer, or whose producer did not ask, owes nothing.

One fact, one ZAM: a receipt that says again what an earlier one said for the same recipient (the same DSN
delivered twice, our own DSN then the operator's) owes nothing more. The check is a read in the caller's
transaction, after the caller locked the recipient's delivery row (``apply_receipt``, ``record_outcomes``
update or select it ``FOR UPDATE`` first), so two copies committed at once still make one ZAM.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.audit import write_audit
from gateway.store.tables import Delivery, Hl7Transmission, Hl7Zam

PENDING = "pending"
ACKED = "acked"

_EVENT_OF_KIND = {"dsn": "Z02", "mdn": "Z03"}
# Statuses that say nothing final yet: no ZAM for a "delayed" DSN.
_NOT_FINAL = {"delayed"}
_SUCCESS = {"delivered", "relayed", "displayed", "processed", "dispatched"}
_SMTP_CODE = re.compile(r"\b([245][0-9][0-9])\b")


@dataclass(frozen=True, slots=True)
class OwedZam:
    """One ZAM row as the sender and ``mssgw queue show`` see it."""

    id: int
    message_pk: int
    producer: str
    control_id: str
    event: str
    address: str
    failure_code: str | None
    failure_text: str | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    acked_at: datetime | None


def owe_zam(
    session: Session,
    kind: str,
    original_pk: int,
    address: str,
    status: str,
    detail: str | None,
    now: datetime,
) -> None:
    """Queue the ZAM one recipient's receipt causes, if its producer asked (in the caller's transaction)."""
    event = _EVENT_OF_KIND.get(kind)
    if event is None or status in _NOT_FINAL:
        return
    row = session.execute(
        select(Hl7Transmission.producer, Hl7Transmission.control_id, Hl7Transmission.zam_events).where(
            Hl7Transmission.message_pk == original_pk
        )
    ).first()
    if row is None or event not in (row.zam_events or "").split(","):
        return
    code, text = (None, None) if status in _SUCCESS else _failure(kind, status, detail)
    if _already_owed(session, original_pk, event, address, success=code is None):
        return
    pk = session.execute(
        insert(Hl7Zam)
        .values(
            message_pk=original_pk,
            producer=row.producer,
            control_id=row.control_id,
            event=event,
            address=address,
            failure_code=code,
            failure_text=text,
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(Hl7Zam.id)
    ).scalar_one()
    write_audit(session, now, f"zam-{event.lower()}-owed", original_pk, detail={"zam": pk})


def owe_relay_failures(session: Session, failed_pks: Sequence[int], now: datetime) -> None:
    """Queue the Z02 (N) of deliveries this transaction marked failed (the relay's own DSN to the producer).

    The delivery's last reply is the refusal the producer reads in ERR (code in ERR-5).
    """
    if not failed_pks:
        return
    rows = session.execute(
        select(Delivery.message_pk, Delivery.recipient, Delivery.last_code, Delivery.last_reply).where(
            Delivery.id.in_(failed_pks)
        )
    ).all()
    for message_pk, recipient, code, reply in rows:
        detail = " ".join(str(part) for part in (code, reply) if part) or None
        owe_zam(session, "dsn", message_pk, recipient, "failed", detail, now)


def _already_owed(session: Session, message_pk: int, event: str, address: str, *, success: bool) -> bool:
    """A ZAM saying the same (delivered or not, read or not) for this recipient is already queued."""
    outcome = Hl7Zam.failure_code.is_(None) if success else Hl7Zam.failure_code.is_not(None)
    found = session.execute(
        select(Hl7Zam.id)
        .where(
            Hl7Zam.message_pk == message_pk,
            Hl7Zam.event == event,
            func.lower(Hl7Zam.address) == address.lower(),
            outcome,
        )
        .limit(1)
    ).first()
    return found is not None


def _failure(kind: str, status: str, detail: str | None) -> tuple[str, str]:
    """ERR-5 code and label: the SMTP reply code of a failed DSN, the ANS code of an MDN error."""
    text = detail or status
    if kind == "mdn":
        code, _, label = text.partition("^")
        return (code or status, label or text)
    found = _SMTP_CODE.search(text)
    return (found.group(1) if found else "554", text)


class ZamQueue:
    """Due ZAM claimed by a lease (the one that moved ``next_attempt_at`` sends), acked or put back later."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[OwedZam]:
        """Pending ZAM due at ``now``, oldest first, leased until ``now + lease`` (a crash retries them)."""
        with self.sessions.begin() as session:
            rows = session.execute(
                select(Hl7Zam)
                .where(Hl7Zam.state == PENDING, Hl7Zam.next_attempt_at <= now)
                .order_by(Hl7Zam.id)
                .limit(limit)
            ).scalars()
            claimed = []
            for row in list(rows):
                # Another instance that claimed it first moved next_attempt_at: this update changes nothing.
                moved = session.execute(
                    update(Hl7Zam)
                    .where(Hl7Zam.id == row.id, Hl7Zam.next_attempt_at == row.next_attempt_at)
                    .values(next_attempt_at=now + lease)
                )
                if moved.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(_view(row))
            return claimed

    def acked(self, pk: int, now: datetime) -> None:
        """The producer answered AA: done."""
        with self.sessions.begin() as session:
            original = session.execute(
                update(Hl7Zam)
                .where(Hl7Zam.id == pk)
                .values(state=ACKED, acked_at=now, attempts=Hl7Zam.attempts + 1, last_error=None)
                .returning(Hl7Zam.message_pk)
            ).scalar_one()
            write_audit(session, now, "zam-acked", original, detail={"zam": pk})

    def retry_later(self, pk: int, at: datetime, error: str) -> None:
        """No AA (another code, no answer, no connection): try again at ``at``."""
        with self.sessions.begin() as session:
            session.execute(
                update(Hl7Zam)
                .where(Hl7Zam.id == pk)
                .values(next_attempt_at=at, attempts=Hl7Zam.attempts + 1, last_error=error)
            )


def zams_of(session: Session, message_pk: int) -> tuple[OwedZam, ...]:
    """The ZAM of one original message, for ``mssgw queue show``."""
    rows = session.execute(select(Hl7Zam).where(Hl7Zam.message_pk == message_pk).order_by(Hl7Zam.id))
    return tuple(_view(r) for r in rows.scalars())


def _view(row: Hl7Zam) -> OwedZam:
    return OwedZam(
        row.id,
        row.message_pk,
        row.producer,
        row.control_id,
        row.event,
        row.address,
        row.failure_code,
        row.failure_text,
        row.state,
        row.attempts,
        row.next_attempt_at,
        row.last_error,
        row.acked_at,
    )

"""The ZAM owed to HL7 producers: written with the receipt that causes them, claimed by the MLLP sender.

Z02 comes from the DSN (the guide's trigger: the recipient's server took the mail, or refused it); the
operator's 250 alone makes none, because a producer that asks ACK_RECEPTION gets NOTIFY=SUCCESS,FAILURE on
every recipient, so a DSN is always asked for. Z03 comes from the MDN. A receipt for a message that did not
come from an HL7 producer, or whose producer did not ask, owes nothing.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from gateway.store.tables import Hl7Transmission, Hl7Zam

PENDING = "pending"
ACKED = "acked"

_EVENT_OF_KIND = {"dsn": "Z02", "mdn": "Z03"}
# Statuses that say nothing final yet: no ZAM for a "delayed" DSN.
_NOT_FINAL = {"delayed"}
_SUCCESS = {"delivered", "relayed", "displayed", "processed", "dispatched"}
_SMTP_CODE = re.compile(r"\b([245][0-9][0-9])\b")


def zam_events(ack_reception: bool, ack_lecture: bool) -> str | None:
    """What to store in ``hl7_transmissions.zam_events`` for a producer's two flags."""
    events = [e for e, wanted in (("Z02", ack_reception), ("Z03", ack_lecture)) if wanted]
    return ",".join(events) or None


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
    session.execute(
        insert(Hl7Zam).values(
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
    )


def _failure(kind: str, status: str, detail: str | None) -> tuple[str, str]:
    """ERR-5 code and label: the SMTP reply code of a failed DSN, the ANS code of an MDN error."""
    text = detail or status
    if kind == "mdn":
        code, _, label = text.partition("^")
        return (code or status, label or text)
    found = _SMTP_CODE.search(text)
    return (found.group(1) if found else "554", text)

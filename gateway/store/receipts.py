"""Receipts in the store: a received DSN or MDN updates the status of each recipient of the original.

``apply_receipt`` runs in the transaction that commits the receipt itself, so a status never points at a
receipt that is not stored. The original is found by its Message-ID (Original-Message-ID, the returned
headers) or, failing that, by the ENVID we sent; the delivery by its recipient address (Final-Recipient,
or the ORCPT we sent). A receipt that matches nothing is kept in the ``unmatched`` state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from gateway.store.audit import write_audit
from gateway.store.tables import Delivery, Message
from gateway.store.zams import owe_zam

UNMATCHED = "unmatched"
AUTO_REPLY = "auto-reply"
"""The receipt kind and status of an absence or redirection reply (``mappers.auto_reply``)."""

# A later, weaker receipt never hides a stronger one (a DSN "delivered" arriving after the MDN "displayed";
# an absence reply says the mail was delivered, and no more than a read receipt).
_RANK = {"delayed": 0, "relayed": 1, "delivered": 1, AUTO_REPLY: 1}


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """What a receipt says about one recipient: ``delivered``, ``failed``, ``displayed``, ``processed``,
    ``error``, a Mon Espace Santé refusal (``mailbox-closed`` …), ``auto-reply``; ``detail`` is the reason,
    the error code or the reply's text."""

    recipient: str
    status: str
    detail: str | None = None
    original_recipient: str | None = None


@dataclass(frozen=True, slots=True)
class ReceiptUpdate:
    """A received DSN, MDN or automatic reply, reduced to what the store needs to match it."""

    kind: str
    original_message_id: str | None
    envid: str | None
    recipients: tuple[RecipientStatus, ...]


def original_of(session: Session, receipt: ReceiptUpdate) -> int | None:
    """The id of the outbound message ``receipt`` is about, if stored."""
    conditions = []
    if receipt.original_message_id:
        conditions.append(Message.message_id == receipt.original_message_id)
    if receipt.envid:
        conditions.append(Message.envid == receipt.envid)
    if not conditions:
        return None
    query = select(Message.id).where(Message.direction == "outbound", or_(*conditions))
    return session.execute(query.order_by(Message.id.desc()).limit(1)).scalar()


def apply_receipt(session: Session, receipt: ReceiptUpdate, receipt_pk: int, now: datetime) -> bool:
    """Update the matching deliveries (inside the caller's transaction); False when nothing matched."""
    original = original_of(session, receipt)
    if original is None:
        return False
    matched = False
    for entry in receipt.recipients:
        addresses = {a.lower() for a in (entry.recipient, entry.original_recipient) if a}
        # Locked before the ZAM check (``owe_zam``): a second copy of this receipt waits, then sees the ZAM.
        rows = session.execute(
            select(Delivery.id, Delivery.recipient, Delivery.receipt_status)
            .where(Delivery.message_pk == original, func.lower(Delivery.recipient).in_(addresses))
            .with_for_update()
        ).all()
        for delivery_pk, recipient, current in rows:
            matched = True
            owe_zam(session, receipt.kind, original, recipient, entry.status, entry.detail, now)
            if current is not None and _RANK.get(entry.status, 2) < _RANK.get(current, 2):
                continue
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_pk)
                .values(
                    receipt_status=entry.status,
                    receipt_detail=entry.detail,
                    receipt_at=now,
                    receipt_pk=receipt_pk,
                )
            )
            write_audit(
                session, now, f"{receipt.kind}-{entry.status}", original, delivery_pk, {"receipt": receipt_pk}
            )
    return matched

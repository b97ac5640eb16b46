"""Delivery states and the transitions allowed between them (pure; no SQL).

queued ──claim──▶ sending ──250──▶ sent
                     │ ├──4xx / no connection──▶ deferred ──due──▶ sending
                     │ └──5xx / gave up────────▶ failed ──DSN written──▶ notified
any ──hold──▶ held ──release──▶ queued          (crash_limit lease expiries also ▶ held)
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """Where one (message, recipient) pair stands in the queue."""

    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"
    NOTIFIED = "notified"
    HELD = "held"


WAITING = (DeliveryState.QUEUED, DeliveryState.DEFERRED)
"""States whose rows are claimed when their ``next_attempt_at`` is due."""

FINAL = (DeliveryState.SENT, DeliveryState.NOTIFIED)
"""States that need nothing more from the relay."""

_ALLOWED: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.QUEUED: frozenset({DeliveryState.SENDING, DeliveryState.HELD}),
    DeliveryState.SENDING: frozenset(
        {
            DeliveryState.SENT,
            DeliveryState.DEFERRED,
            DeliveryState.FAILED,
            DeliveryState.QUEUED,
            DeliveryState.HELD,
        }
    ),
    DeliveryState.DEFERRED: frozenset({DeliveryState.SENDING, DeliveryState.QUEUED, DeliveryState.HELD}),
    DeliveryState.FAILED: frozenset({DeliveryState.NOTIFIED, DeliveryState.QUEUED, DeliveryState.HELD}),
    DeliveryState.NOTIFIED: frozenset({DeliveryState.QUEUED}),
    DeliveryState.HELD: frozenset({DeliveryState.QUEUED}),
    DeliveryState.SENT: frozenset(),
}


KEPT_ASIDE = frozenset({"refused"})
"""Message states that mean "not for the mailbox" (kept for a person to look at): such a message has no
delivery row, so it is never dropped into a folder, forwarded or relayed."""


def can_move(source: DeliveryState, target: DeliveryState) -> bool:
    """True when the queue may move a delivery from ``source`` to ``target``."""
    return target in _ALLOWED[source]


class ChannelState(StrEnum):
    """Where a citizen channel stands: patients may reply only while it is open."""

    OPEN = "open"
    CLOSED = "closed"
    EXPIRED = "expired"

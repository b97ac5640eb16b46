"""The transport interface: hand one message to a next hop, get one result per recipient.

A transport never raises for what the next hop or the network does: a refused connection, a TLS failure or a
timeout are *temporary* results, a 5xx is *permanent*. Only programming errors escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.outbound.transports.smtp_client import unwritable


class Outcome(StrEnum):
    """What the next hop did with one recipient."""

    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """One recipient's result with the reply that decided it (``code`` is None when nothing answered)."""

    recipient: str
    outcome: Outcome
    reply: str
    code: int | None = None
    peer: str | None = None
    reports_onward: bool = False
    """The next hop took our DSN request (it offers DSN), so a success report is its to write."""


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    """An envelope recipient with its RFC 3461 parameters."""

    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What a transport sends: the envelope and the final (signed) bytes."""

    envelope_from: str
    recipients: tuple[OutboundRecipient, ...]
    content: bytes
    envid: str | None = None
    ret: str | None = None
    queue_id: int | None = None
    crlf: bool = False
    """Every line end of ``content`` is known to be a CRLF (the relay made it so): not searched again."""


class Transport(Protocol):
    """A way out of the gateway."""

    async def send(self, message: OutboundMessage) -> list[RecipientResult]:
        """Deliver to the next hop; one result per recipient, in the order given."""
        ...

    async def close(self) -> None:
        """Close idle connections; called on reload and shutdown."""
        ...


def all_recipients(
    message: OutboundMessage, outcome: Outcome, reply: str, code: int | None = None, peer: str | None = None
) -> list[RecipientResult]:
    """The same result for every recipient (a connection failure, a refused MAIL FROM …)."""
    return [RecipientResult(r.address, outcome, reply, code, peer) for r in message.recipients]


def unsendable(message: OutboundMessage) -> list[RecipientResult] | None:
    """Permanent results for every recipient when SMTP can never carry ``message`` (a control character in
    its envelope, NUL in its content): sent again, it would fail the same way until ``relay.max_lifetime``,
    so the sender hears at once, with a DSN, instead of days later."""
    reply = unwritable(
        (message.envelope_from, message.envid or "", message.ret or ""),
        [(r.address, r.notify or "", r.orcpt or "") for r in message.recipients],
        message.content,
    )
    return None if reply is None else all_recipients(message, Outcome.PERMANENT, reply)

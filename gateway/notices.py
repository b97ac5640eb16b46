"""Delivery notices: the RFC 3464 report written into the store for a sender whose message failed somewhere,
or was delivered or relayed when the sender asked (``NOTIFY=SUCCESS``).

Two places fail mail after accepting it: the relay (the next hop refused, or the queue gave up) and the
intake (a rule that needs the message refused some recipients after SMTP DATA, whose single reply already
said 250 for the others). Both describe the failures as ``Failure`` values, the relay its successes as
``Success``; the report itself is built by ``mappers.dsn``, and it is queued back to the sender the way
``gateway.report_routes`` says. Nothing here touches SQL or the network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.receipts.reading import mes_refusal
from gateway.report_routes import NO_NOTIFY, RELAYED, ReportRoute
from gateway.settings import GatewaySettings
from gateway.store.repository import NewMessage, Recipient
from mappers.dsn import DsnError, RecipientReport, build_dsn, xtext_decode

_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient the message will never reach, with the reply that decided it.

    ``permanent`` is False for a message given up after temporary failures; ``code`` is None when nothing
    answered (no connection).
    """

    recipient: str
    reply: str
    permanent: bool
    code: int | None = None
    peer: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Success:
    """One recipient whose sender asked to hear of its delivery (``NOTIFY=SUCCESS``).

    ``relayed``: handed to a next hop that does not do DSN (RFC 3461 § 5.2.2), so this is the last word;
    otherwise the mail reached the mailbox's drop folder or internal MTA (``delivered``).
    """

    recipient: str
    reply: str
    relayed: bool
    peer: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """The failed message as the store keeps it: raw bytes and envelope."""

    raw: bytes
    sender: str
    arrived_at: datetime
    envid: str | None = None
    ret: str | None = None
    pk: int | None = None


def delivery_notice(
    original: Original,
    outcomes: Sequence[Failure | Success],
    gateway: GatewaySettings,
    now: datetime,
    source: str,
    route: ReportRoute,
) -> NewMessage:
    """The DSN for the original sender about ``outcomes``, as a message to commit (null envelope sender),
    with its queue row back to the sender when ``route`` has a way there."""
    reports = [
        RecipientReport(
            final_recipient=o.recipient,
            action=_action(o),
            status=status_of(o) if isinstance(o, Failure) else "2.0.0",
            original_recipient=_orcpt_address(o.orcpt),
            remote_mta=o.peer.rpartition(":")[0] if o.peer and isinstance(o, Failure) else None,
            diagnostic=o.reply,
            last_attempt=now,
        )
        for o in outcomes
    ]
    ret: Literal["FULL", "HDRS"] | None = "FULL" if original.ret == "FULL" else None
    report = build_dsn(
        original.raw,
        reports,
        reporting_mta=gateway.hostname,
        postmaster=gateway.postmaster or f"MAILER-DAEMON@{gateway.hostname}",
        sender=original.sender,
        now=now,
        arrival_date=original.arrived_at,
        envid=_xtext(original.envid),
        ret=ret,
    )
    back = () if route.via is None else (Recipient(original.sender, NO_NOTIFY, via=route.delivery_via),)
    return NewMessage(
        raw=report.as_bytes(),
        envelope_from="",
        direction="outbound" if route.via == RELAYED else "inbound",
        source=source,
        recipients=back,
        kind="dsn",
        message_id=str(report["Message-ID"]) if report["Message-ID"] else None,
        related_message_pk=original.pk,
    )


def _action(outcome: Failure | Success) -> Literal["failed", "delivered", "relayed"]:
    if isinstance(outcome, Failure):
        return "failed"
    return "relayed" if outcome.relayed else "delivered"


def patient_refusal(failure: Failure) -> str | None:
    """The explicit status of a failure that is a Mon Espace Santé refusal (closed mailbox …), if any."""
    report = RecipientReport(failure.recipient, "failed", status_of(failure), diagnostic=failure.reply)
    return mes_refusal(report)


def status_of(failure: Failure) -> str:
    """The RFC 3463 code of the reply, or the closest one for failures without a reply."""
    found = _ENHANCED.search(failure.reply)
    if found and found.group(1)[0] in "45":
        return found.group(1)
    if failure.permanent:
        return "5.0.0"
    # Given up after temporary failures: no answer, or an answer without an enhanced code.
    return "4.4.1" if failure.code is None else "4.0.0"


def _orcpt_address(orcpt: str | None) -> str | None:
    """``rfc822;b@y`` (xtext) → ``b@y``."""
    if not orcpt or ";" not in orcpt:
        return None
    return _xtext(orcpt.split(";", 1)[1])


def _xtext(value: str | None) -> str | None:
    """ENVID and ORCPT are stored as they came on the wire (RFC 3461 xtext); the report quotes them decoded.

    A malformed value is left out rather than costing the sender the whole report.
    """
    if not value:
        return None
    try:
        return xtext_decode(value) or None
    except DsnError:
        return None

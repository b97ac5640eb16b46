"""Delivery notices: the RFC 3464 report written into the store for a sender whose message failed somewhere.

Two places fail mail after accepting it: the relay (the next hop refused, or the queue gave up) and the
intake (a rule that needs the message refused some recipients after SMTP DATA, whose single reply already
said 250 for the others). Both describe the failures as ``Failure`` values; the report itself is built by
``mappers.dsn``. Nothing here touches SQL or the network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.receipts.reading import mes_refusal
from gateway.settings import GatewaySettings
from gateway.store.repository import NewMessage
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
class Original:
    """The failed message as the store keeps it: raw bytes and envelope."""

    raw: bytes
    sender: str
    arrived_at: datetime
    envid: str | None = None
    ret: str | None = None
    pk: int | None = None


def failure_notice(
    original: Original, failures: Sequence[Failure], gateway: GatewaySettings, now: datetime, source: str
) -> NewMessage:
    """The DSN for the original sender about ``failures``, as a message to commit (null envelope sender)."""
    reports = [
        RecipientReport(
            final_recipient=f.recipient,
            action="failed",
            status=status_of(f),
            original_recipient=_orcpt_address(f.orcpt),
            remote_mta=f.peer.rpartition(":")[0] if f.peer else None,
            diagnostic=f.reply,
            last_attempt=now,
        )
        for f in failures
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
    return NewMessage(
        raw=report.as_bytes(),
        envelope_from="",
        direction="inbound",
        source=source,
        kind="dsn",
        message_id=str(report["Message-ID"]) if report["Message-ID"] else None,
        related_message_pk=original.pk,
    )


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

"""Delivery notices: the RFC 3464 report written into the store for the sender when a delivery fails.

The report itself is built by ``mappers.dsn``; this module turns the relay's view (claims, transport results,
settings) into its inputs and wraps the result as a message to commit with the failed deliveries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.outbound.transports.base import Outcome, RecipientResult
from gateway.receipts.reading import mes_refusal
from gateway.settings import GatewaySettings
from gateway.store.repository import ClaimedDelivery, Envelope, NewMessage, Notice
from mappers.dsn import DsnError, RecipientReport, build_dsn, xtext_decode

_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """A delivery that ended in failure, and the result that ended it."""

    claim: ClaimedDelivery
    result: RecipientResult


def build_failure_notice(
    envelope: Envelope, failures: Sequence[FailedRecipient], gateway: GatewaySettings, now: datetime
) -> Notice:
    """The DSN for ``envelope``'s sender about ``failures``, ready to commit with their outcomes."""
    reports = [
        RecipientReport(
            final_recipient=f.claim.recipient,
            action="failed",
            status=_status(f.result),
            original_recipient=_orcpt_address(f.claim.orcpt),
            remote_mta=f.result.peer.rpartition(":")[0] if f.result.peer else None,
            diagnostic=f.result.reply,
            last_attempt=now,
        )
        for f in failures
    ]
    ret: Literal["FULL", "HDRS"] | None = "FULL" if envelope.ret == "FULL" else None
    report = build_dsn(
        envelope.raw,
        reports,
        reporting_mta=gateway.hostname,
        postmaster=gateway.postmaster or f"MAILER-DAEMON@{gateway.hostname}",
        sender=envelope.envelope_from,
        now=now,
        arrival_date=envelope.created_at,
        envid=_xtext(envelope.envid),
        ret=ret,
    )
    message = NewMessage(
        raw=report.as_bytes(),
        envelope_from="",
        direction="inbound",
        source="relay",
        kind="dsn",
        message_id=str(report["Message-ID"]) if report["Message-ID"] else None,
        related_message_pk=envelope.pk,
    )
    return Notice(message, tuple(f.claim.pk for f in failures))


def patient_refusal(recipient: str, result: RecipientResult) -> str | None:
    """The explicit status of a failure that is a Mon Espace Santé refusal (closed mailbox …), if any."""
    report = RecipientReport(recipient, "failed", _status(result), diagnostic=result.reply)
    return mes_refusal(report)


def _status(result: RecipientResult) -> str:
    """The RFC 3463 code of the reply, or the closest one for failures without a reply."""
    found = _ENHANCED.search(result.reply)
    if found and found.group(1)[0] in "45":
        return found.group(1)
    if result.outcome is Outcome.PERMANENT:
        return "5.0.0"
    # Given up after temporary failures: no answer, or an answer without an enhanced code.
    return "4.4.1" if result.code is None else "4.0.0"


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

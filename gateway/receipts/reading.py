"""Received DSN (RFC 3464) and MDN (RFC 8098) → per-recipient statuses the store records on the original.

Mon Espace Santé answers a message it refuses with « Message non distribué » for a closed mailbox, a patient
not found, an invalid address or a size over 25 MB (MSSANTE.md §7.11); the exact texts and codes are not
published, so they are recognised by their words (French or English) and, failing that, by the RFC 3463
code, and become explicit statuses the sender can act on. Pure: no store, no clock.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser

from gateway.store.receipts import AUTO_REPLY, ReceiptUpdate, RecipientStatus
from mappers import ins
from mappers.auto_reply import AutoReply, is_auto_reply, read_auto_reply
from mappers.dsn import DeliveryReport, DsnError, RecipientReport
from mappers.dsn_read import parse_dsn
from mappers.folding import READ_POLICY
from mappers.mdn import DispositionReport, MdnError, parse_mdn

# (status, RFC 3463 codes, words in the diagnostic) — words are tried first, over every kind.
_MES_REFUSALS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("too-large", ("5.3.4", "5.2.3"), ("taille", "volumineux", "too large", "size")),
    ("mailbox-closed", ("5.2.1",), ("fermée", "fermee", "closed", "désactivée", "disabled")),
    ("patient-not-found", ("5.1.1",), ("non trouvé", "non trouve", "introuvable", "not found", "unknown")),
    ("invalid-address", ("5.1.3",), ("invalide", "invalid")),
)


def mes_refusal(recipient: RecipientReport) -> str | None:
    """The explicit status of a Mon Espace Santé refusal, or ``None`` for any other report."""
    if recipient.action != "failed" or not ins.is_citizen_address(recipient.final_recipient):
        return None
    text = (recipient.diagnostic or "").lower()
    for status, _, words in _MES_REFUSALS:
        if any(word in text for word in words):
            return status
    for status, codes, _ in _MES_REFUSALS:
        if recipient.status in codes:
            return status
    return None


def from_dsn(report: DeliveryReport) -> ReceiptUpdate:
    """Statuses of a delivery status notification: delivered, failed (with the reason), delayed …"""
    statuses = tuple(
        RecipientStatus(
            recipient=r.final_recipient,
            status=mes_refusal(r) or ("delivered" if r.action == "expanded" else r.action),
            detail=r.diagnostic or r.status,
            original_recipient=r.original_recipient,
        )
        for r in report.recipients
    )
    return ReceiptUpdate("dsn", report.original_message_id, report.envid, statuses)


def from_mdn(report: DispositionReport) -> ReceiptUpdate:
    """Status of a disposition notification: displayed, processed, … or error with the ANS code."""
    disposition = report.disposition
    detail = None
    if disposition.is_error:
        detail = f"{disposition.error_code or ''}^{disposition.error_label or ''}".strip("^")
    status = RecipientStatus(
        recipient=report.final_recipient,
        status="error" if disposition.is_error else disposition.type,
        detail=detail,
        original_recipient=report.original_recipient,
    )
    return ReceiptUpdate("mdn", report.original_message_id, None, (status,))


def from_auto_reply(reply: AutoReply) -> ReceiptUpdate:
    """Status of an absence or redirection reply: ``auto-reply``, with what the reply says."""
    status = RecipientStatus(recipient=reply.responder, status=AUTO_REPLY, detail=reply.text or None)
    return ReceiptUpdate(AUTO_REPLY, reply.original_message_id, None, (status,))


def read_receipt(raw: bytes) -> ReceiptUpdate | None:
    """The receipt a received message is, or ``None`` when it is not a (readable) DSN, MDN or auto-reply.

    A malformed report is not a receipt for the store: it is kept as an ordinary message.
    """
    head = BytesHeaderParser(policy=READ_POLICY).parsebytes(raw)
    report = head.get_content_type() == "multipart/report"
    if not report and not is_auto_reply(head):
        return None  # most mail: the header section is enough to tell
    message = BytesParser(policy=READ_POLICY).parsebytes(raw)
    if not isinstance(message, EmailMessage):
        return None
    if not report:
        reply = read_auto_reply(message)
        return None if reply is None else from_auto_reply(reply)
    try:
        dsn = parse_dsn(message)
        if dsn is not None:
            return from_dsn(dsn)
        mdn = parse_mdn(message)
    except (DsnError, MdnError):
        return None
    return None if mdn is None else from_mdn(mdn)

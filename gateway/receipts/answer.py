"""Answering read-receipt requests on received health documents with the ANS MDN (MSSANTE.md §8.3).

When a message carrying an ``IHE_XDM.zip`` and ``Disposition-Notification-To`` is integrated into the
store, the sender gets ``processed``, or ``processed/Error: 90x^libellé`` when the package is inconsistent
(903 INS absent, 904 INS or traits that differ between METADATA.XML and the CDA, 905 INS incomplete, 906
anything else), with the original attachments re-attached. RFC 8098 § 2.1 loop avoidance: a receipt is
never answered, nor a request whose address differs from the Return-Path (that needs a person). The MDN
is committed in the same transaction as the message it answers, so it is sent exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser

from gateway.store.repository import NewMessage, Recipient
from mappers import identity, ins, xdm
from mappers.addresses import same_address
from mappers.errors import MappingError
from mappers.folding import READ_POLICY
from mappers.mdn import Disposition, build_mdn, original_attachments
from mappers.mime_parse import XDM_FILENAME
from mappers.records import Attachment, MessageRecord

REPORT_TYPES = frozenset({"multipart/report"})


def skip_reason(record: MessageRecord, envelope_from: str, message: EmailMessage) -> str | None:
    """Why no MDN goes back for this message, or ``None`` when one must."""
    requested = record.disposition_notification_to
    if requested is None:
        return "no read receipt was asked for"
    if message.get_content_type() in REPORT_TYPES:
        return "a receipt is never answered with a receipt (RFC 8098 § 2.1)"
    if not envelope_from:
        return "the message has a null Return-Path"
    if not same_address(requested.address, envelope_from):
        return (
            "Disposition-Notification-To differs from the Return-Path: an automatic MDN would need a "
            "person's confirmation (RFC 8098 § 2.1)"
        )
    if not record.documents:
        return f"no {XDM_FILENAME} was integrated"
    return None


def integration_error(package: xdm.XdmPackage) -> int | None:
    """The ANS error code (MSSANTE.md §5.8) for an inconsistent package, ``None`` when it is integrable."""
    metadata = package.patient
    cda_patients = [header.patient for header in package.cda_headers]
    if metadata is None or not metadata.matricule or any(p is None for p in cda_patients):
        return 903
    for patient in cda_patients:
        if patient is not None and identity.differences(metadata, patient):
            return 904
    if not ins.is_qualified(metadata):
        return 905
    return 906 if package.problems else None


def package_disposition(raw_package: bytes | None) -> Disposition:
    """``processed``, or ``processed/Error`` with the code of the package's first inconsistency."""
    if raw_package is None:
        return Disposition(error_code=903)
    try:
        package = xdm.parse_package(raw_package)
    except MappingError:
        return Disposition(error_code=906)
    code = integration_error(package)
    return Disposition() if code is None else Disposition(error_code=code)


def build_answer(
    raw: bytes, record: MessageRecord, envelope_from: str, mailbox: str, hostname: str, now: datetime
) -> NewMessage | None:
    """The MDN to commit with the received message, or ``None`` when none is due (``skip_reason``).

    ``mailbox`` is our mailbox the message was delivered to: it signs the MDN as Final-Recipient.
    """
    requested = record.disposition_notification_to
    if requested is None or not record.documents:
        return None  # nothing to answer: no need to read the message again
    message = BytesParser(policy=READ_POLICY).parsebytes(raw)
    if not isinstance(message, EmailMessage):
        return None
    if skip_reason(record, envelope_from, message) is not None:
        return None
    attachments = original_attachments(message)
    disposition = package_disposition(package_in(attachments))
    return mdn_message(raw, attachments, disposition, mailbox, requested.address, hostname, now)


def package_in(attachments: Sequence[Attachment]) -> bytes | None:
    """The IHE_XDM.zip among a received message's attachments (``original_attachments``)."""
    return next((a.content for a in attachments if a.filename.casefold() == XDM_FILENAME.casefold()), None)


def mdn_message(
    raw: bytes,
    attachments: Sequence[Attachment],
    disposition: Disposition,
    mailbox: str,
    recipient: str,
    hostname: str,
    now: datetime,
) -> NewMessage:
    """The MDN reporting ``disposition`` on ``raw`` to ``recipient``, from our ``mailbox``, with the
    original ``attachments`` re-attached, ready to commit; also the consumers' MDN
    (``gateway.receipts.consumers``): one builder for every MDN the gateway answers with."""
    mdn = build_mdn(
        raw,
        disposition=disposition,
        final_recipient=mailbox,
        sender=mailbox,
        recipient=recipient,
        hostname=hostname,
        now=now,
        attachments=attachments,
    )
    return NewMessage(
        raw=mdn.as_bytes(),
        # RFC 8098 § 2.1: an MDN travels with a null envelope sender, so nothing answers it back.
        envelope_from="",
        direction="outbound",
        source="mdn",
        kind="mdn",
        recipients=(Recipient(recipient),),
        message_id=str(mdn["Message-ID"]),
    )

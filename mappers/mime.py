"""Store record → MSSanté ``EmailMessage`` (outbound), and the entry point of the reverse direction.

``build_message(record, *, nil_reference, hostname, now, file_number=None, source_id=None,
require_pdf_copies=True) -> EmailMessage`` is called by the relay and ``mssgw send``;
``parse_message(data, *, limits=MimeLimits()) -> MessageRecord`` lives in ``mappers.mime_parse`` and is
re-exported here. Header rules come from ``mappers.headers``, the package
from ``mappers.xdm``. No I/O, no settings lookup, no logging: the caller passes the clock and hostname.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import EmailPolicy

from mappers import headers, xdm
from mappers.addresses import to_header_address
from mappers.errors import MappingError
from mappers.folding import READ_POLICY, set_header
from mappers.mime_parse import XDM_FILENAME, MimeError, MimeLimits, canonical_body, parse_message
from mappers.pdf_copies import PDF_MIME_TYPE, pdf_copy
from mappers.records import Attachment, Mailbox, MessageRecord

__all__ = [
    "MESSAGE_POLICY",
    "XDM_FILENAME",
    "MessageBuildError",
    "MimeError",
    "MimeLimits",
    "build_message",
    "canonical_body",
    "effective_subject",
    "parse_message",
]

# RFC 5322 line ends, and a 7-bit body: quoted-printable or base64 instead of 8bit parts, because the
# MSSanté operators are not required to offer 8BITMIME and a relay must not have to downgrade.
MESSAGE_POLICY: EmailPolicy[EmailMessage] = READ_POLICY.clone(cte_type="7bit", linesep="\r\n")

_MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})*")
_TYPE_NAME = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"({_TYPE_NAME})/({_TYPE_NAME})")


class MessageBuildError(MappingError):
    """A store record that cannot become a valid MSSanté message (missing patient, bad identifier …)."""


def build_message(
    record: MessageRecord,
    *,
    nil_reference: str,
    hostname: str,
    now: datetime,
    file_number: str | None = None,
    source_id: str | None = None,
    require_pdf_copies: bool = True,
) -> EmailMessage:
    """Build the message a peer will receive for ``record``.

    Args:
        nil_reference: the product reference for X-MSS-NIL (ECO.2.4.3), from the settings.
        hostname: the right-hand side of a generated Message-ID (the gateway's own domain).
        now: the Date when the record has none; it must be timezone-aware.
        file_number: the optional ``<numéro de dossier>`` of PDF copy names (ECO.2.1.6).
        source_id: the sending system's OID for the XDM SubmissionSet (``xdm.build_package``).
        require_pdf_copies: refuse a document without a PDF copy (ECO.2.1.1); False attaches none.

    Raises:
        HeaderInjectionError, AddressError, HeaderValueError, MessageBuildError: the record cannot be sent
        as it is; the message names the field.
    """
    if not _HOSTNAME.fullmatch(hostname):
        raise MessageBuildError(f"hostname {hostname!r} cannot be used in a Message-ID")
    message = EmailMessage(policy=MESSAGE_POLICY)
    _set_addresses(message, "From", (record.author,))
    _set_addresses(message, "Sender", _optional(record.on_behalf_of))
    _set_addresses(message, "Reply-To", _optional(record.reply_to))
    _set_addresses(message, "To", record.to)
    _set_addresses(message, "Cc", record.cc)
    subject = effective_subject(record)
    if subject:
        set_header(message, "Subject", subject)
    message["Date"] = _aware(record.date or now, field="Date")
    message["Message-ID"] = _message_id(record.message_id, hostname, now)
    if record.in_reply_to:
        message["In-Reply-To"] = _msg_id(record.in_reply_to, field="In-Reply-To")
    if record.references:
        references = " ".join(_msg_id(ref, field="References") for ref in record.references)
        set_header(message, "References", references)
    dnt = _optional(record.disposition_notification_to)
    _set_addresses(message, "Disposition-Notification-To", dnt)
    for name, value in headers.mss_headers(
        record.patient,
        record.documents,
        nil_reference=nil_reference,
        end_of_exchange=record.end_of_exchange,
    ):
        set_header(message, name, value)
    message.set_content(_body_for_wire(record.body_text), subtype="plain", charset="utf-8")
    documents = _document_attachments(
        record,
        when=record.date or now,
        file_number=file_number,
        source_id=source_id,
        require_pdf_copies=require_pdf_copies,
    )
    for attachment in documents:
        _attach(message, attachment)
    for attachment in record.attachments:
        _attach(message, attachment)
    return message


def effective_subject(record: MessageRecord) -> str:
    """The subject that goes on the wire.

    A document mail must carry the ECO.2.1.3 subject, so a record with documents whose subject does not
    already contain the ``XDM/1.0/DDM+`` marker (a reply or a KO report keeps its own prefix) gets the
    computed one; closing the exchange is then carried by ``X-MSS-MES: FIN`` (``end_of_exchange``).
    """
    subject = headers.check_header_value(record.subject, field="Subject")
    if record.documents and headers.SUBJECT_MARKER not in subject:
        if record.patient is None:
            raise MessageBuildError("a message with documents must name its patient (ECO.2.1.1)")
        return headers.document_subject(record.patient, record.documents)
    return subject.strip()


def _document_attachments(
    record: MessageRecord,
    *,
    when: datetime,
    file_number: str | None,
    source_id: str | None,
    require_pdf_copies: bool,
) -> list[Attachment]:
    """ECO.2.1.1: the IHE_XDM.zip, then one PDF copy per document, named per ECO.2.1.6."""
    if not record.documents:
        return []
    patient = record.patient
    if patient is None:
        raise MessageBuildError("a message with documents must name its patient (ECO.2.1.1)")
    package = xdm.build_package(
        patient,
        record.documents,
        now=when,
        source_id=source_id or xdm.DEFAULT_SOURCE_ID,
        sender=record.author.display_name or record.author.address,
    )
    attachments = [Attachment(XDM_FILENAME, "application/zip", package)]
    names: set[str] = set()
    for document in record.documents:
        pdf = pdf_copy(document)
        if pdf is None:
            if require_pdf_copies:
                raise MessageBuildError(
                    f"document {document.title!r} has no PDF copy (ECO.2.1.1 requires one next to "
                    "the XDM package); a structured CDA needs its PDF rendering"
                )
            continue
        name = headers.document_pdf_name(document, patient, file_number=file_number)
        stem, counter = name.removesuffix(".pdf"), 1
        while name in names:
            # Two documents of the same type on the same day for the same patient: the rule's name is
            # ambiguous, and a reader saving both must not overwrite the first.
            counter += 1
            name = f"{stem} ({counter}).pdf"
        names.add(name)
        attachments.append(Attachment(name, PDF_MIME_TYPE, pdf))
    return attachments


def _optional(mailbox: Mailbox | None) -> tuple[Mailbox, ...]:
    return () if mailbox is None else (mailbox,)


def _set_addresses(message: EmailMessage, name: str, mailboxes: Sequence[Mailbox]) -> None:
    if mailboxes:
        set_header(message, name, [to_header_address(mailbox, field=name) for mailbox in mailboxes])


def _aware(moment: datetime, *, field: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise MessageBuildError(f"{field}: {moment.isoformat()} has no time zone")
    return moment


def _msg_id(value: str, *, field: str) -> str:
    """Accept ``<left@right>`` or a bare ``left@right`` from the store and write the bracketed form."""
    value = headers.check_header_value(value, field=field).strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if _MSG_ID.fullmatch(value) is None:
        raise MessageBuildError(f"{field}: {value!r} is not a message identifier (<left@right>)")
    return value


def _message_id(existing: str | None, hostname: str, now: datetime) -> str:
    if existing:
        return _msg_id(existing, field="Message-ID")
    # RFC 5322 § 3.6.4: unique worldwide; the time keeps ids sortable in logs, the random part makes
    # two gateways sharing a hostname (scale-out on one database) never collide.
    return f"<{now:%Y%m%d%H%M%S}.{secrets.token_hex(12)}@{hostname}>"


def _body_for_wire(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _attach(message: EmailMessage, attachment: Attachment) -> None:
    filename = headers.check_header_value(attachment.filename, field="attachment filename")
    if not filename.strip():
        raise MessageBuildError("an attachment has an empty file name")
    match = _CONTENT_TYPE.fullmatch(attachment.content_type.strip().lower())
    if match is None:
        raise MessageBuildError(
            f"attachment {filename!r}: content type {attachment.content_type!r} is not type/subtype"
        )
    maintype, subtype = match.groups()
    if maintype in ("multipart", "message"):
        # A nested message or multipart given as bytes would be re-parsed by readers with its own
        # headers; sent as opaque bytes it keeps the content exactly.
        maintype, subtype = "application", "octet-stream"
    message.add_attachment(attachment.content, maintype, subtype, filename=filename)

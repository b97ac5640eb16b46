"""Store record → MSSanté ``EmailMessage`` (outbound), and the entry point of the reverse direction.

``build_message(record, *, nil_reference, hostname, now, file_number=None, source_id=None,
require_pdf_copies=True, content_type=None) -> EmailMessage`` is called by the relay and ``mssgw send``;
``parse_message`` (``mappers.mime_parse``) is re-exported here. Rules come from ``mappers.headers``, the
package from ``mappers.xdm``, wire encodings from ``mappers.wire``. No I/O, no settings, no logging: the
caller passes the clock, the hostname and the product reference.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy

from mappers import headers, wire, xdm
from mappers.addresses import to_header_address
from mappers.documents import Code
from mappers.errors import MappingError
from mappers.folding import READ_POLICY
from mappers.mime_parse import (
    XDM_FILENAME,
    Authors,
    MimeError,
    MimeLimits,
    canonical_body,
    parse_message,
    parse_with_authors,
    read_authors,
)
from mappers.pdf_copies import PDF_MIME_TYPE, pdf_copy
from mappers.records import Attachment, Mailbox, MessageRecord
from mappers.wire import WireHeader

__all__ = [
    "MESSAGE_POLICY",
    "XDM_FILENAME",
    "Authors",
    "MessageBuildError",
    "MimeError",
    "MimeLimits",
    "build_message",
    "canonical_body",
    "effective_subject",
    "end_of_exchange",
    "parse_message",
    "parse_with_authors",
    "read_authors",
]

# RFC 5322 line ends. The headers and bodies are encoded by ``mappers.wire``; the policy only gives the
# line ends to the generator and reads Disposition-Notification-To as addresses.
MESSAGE_POLICY: EmailPolicy[EmailMessage] = READ_POLICY.clone(linesep="\r\n", cte_type="7bit")

_MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_MSG_ID_MAX = 250  # a msg-id must fit on a header line with its field name (RFC 5322 § 2.1.1)
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})*")


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
    content_type: Code | None = None,
) -> EmailMessage:
    """Build the message a peer will receive for ``record``.

    What is not taken verbatim from the record: a document mail gets the ECO.2.1.3 subject (see
    ``effective_subject``); ``X-MSS-MES: FIN`` is also added for a ``[FIN]`` subject sent to a patient
    (``end_of_exchange``); display names are sent in canonical form (``canonical_display_name``); a
    missing Date or Message-ID is made from ``now`` and ``hostname``.

    Args:
        nil_reference: the product reference for X-MSS-NIL (ECO.2.4.3), from the settings.
        hostname: the right-hand side of a generated Message-ID (the gateway's own domain).
        now: the Date when the record has none; it must be timezone-aware.
        file_number: the optional ``<numéro de dossier>`` of PDF copy names (ECO.2.1.6).
        source_id: the sending system's OID for the XDM SubmissionSet (``xdm.build_package``).
        require_pdf_copies: refuse a document without a PDF copy (ECO.2.1.1); False attaches none.
        content_type: the XDM SubmissionSet contentTypeCode (a submission's, not a document's).

    Raises:
        MappingError: a subclass (``HeaderInjectionError``, ``AddressError``, ``HeaderValueError``,
        ``MessageBuildError``, ``XdmBuildError`` …) whose message names the field at fault.
    """
    if not _HOSTNAME.fullmatch(hostname):
        raise MessageBuildError(f"hostname {hostname!r} cannot be used in a Message-ID")
    fields: list[WireHeader] = []
    _add_addresses(fields, "From", (record.author,))
    _add_addresses(fields, "Sender", _optional(record.on_behalf_of))
    _add_addresses(fields, "Reply-To", _optional(record.reply_to))
    _add_addresses(fields, "To", record.to)
    _add_addresses(fields, "Cc", record.cc)
    subject = effective_subject(record)
    if subject:
        fields.append(wire.text_header("Subject", subject))
    fields.append(wire.date_header("Date", _aware(record.date or now, field="Date")))
    fields.append(wire.ids_header("Message-ID", [_message_id(record.message_id, hostname, now)]))
    if record.in_reply_to:
        fields.append(wire.ids_header("In-Reply-To", [_msg_id(record.in_reply_to, field="In-Reply-To")]))
    if record.references:
        references = [_msg_id(ref, field="References") for ref in record.references]
        fields.append(wire.ids_header("References", references))
    _add_addresses(fields, "Disposition-Notification-To", _optional(record.disposition_notification_to))
    for name, value in headers.mss_headers(
        record.patient,
        record.documents,
        nil_reference=nil_reference,
        end_of_exchange=end_of_exchange(record),
    ):
        fields.append(wire.text_header(name, value))
    fields.append(wire.text_header("MIME-Version", "1.0"))
    attachments = _document_attachments(
        record,
        when=record.date or now,
        file_number=file_number,
        source_id=source_id,
        require_pdf_copies=require_pdf_copies,
        content_type=content_type,
    )
    attachments.extend(record.attachments)
    message = EmailMessage(policy=MESSAGE_POLICY)
    for field in fields:
        message[field.name] = field
    body = _text_part(record.body_text, message if not attachments else None)
    if attachments:
        # A random boundary: "=_" never occurs in base64 or quoted-printable text (RFC 2045 § 6.7).
        boundary = f"=_mssgw_{secrets.token_hex(16)}"
        message["Content-Type"] = wire.parameter_header(
            "Content-Type", "multipart/mixed", [("boundary", boundary)]
        )
        message.set_payload([body, *(_attachment_part(a) for a in attachments)])
    return message


def end_of_exchange(record: MessageRecord) -> bool:
    """Whether the message carries ``X-MSS-MES: FIN``: asked by the record, or a ``[FIN]`` to a patient."""
    recipients = [mailbox.address for mailbox in (*record.to, *record.cc)]
    return record.end_of_exchange or headers.closes_exchange(record.subject, recipients)


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
    content_type: Code | None,
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
        content_type=content_type,
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


def _add_addresses(fields: list[WireHeader], name: str, mailboxes: Sequence[Mailbox]) -> None:
    if mailboxes:
        addresses = [to_header_address(mailbox, field=name) for mailbox in mailboxes]
        fields.append(wire.address_header(name, addresses))


def _aware(moment: datetime, *, field: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise MessageBuildError(f"{field}: {moment.isoformat()} has no time zone")
    return moment


def _msg_id(value: str, *, field: str) -> str:
    """Accept ``<left@right>`` or a bare ``left@right`` from the store and write the bracketed form."""
    value = headers.check_header_value(value, field=field).strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    if _MSG_ID.fullmatch(value) is None or not value.isascii() or len(value) > _MSG_ID_MAX:
        raise MessageBuildError(f"{field}: {value!r} is not a message identifier (<left@right>)")
    return value


def _message_id(existing: str | None, hostname: str, now: datetime) -> str:
    if existing:
        return _msg_id(existing, field="Message-ID")
    # RFC 5322 § 3.6.4: unique worldwide; the time keeps ids sortable in logs, the random part makes
    # two gateways sharing a hostname (scale-out on one database) never collide.
    return f"<{now:%Y%m%d%H%M%S}.{secrets.token_hex(12)}@{hostname}>"


def _text_part(text: str, into: EmailMessage | None) -> MIMEPart:
    """The UTF-8 text/plain body (ECO.2.2.3), written into ``into`` or as a part of its own."""
    part = into if into is not None else MIMEPart(policy=MESSAGE_POLICY)
    encoding, payload = wire.text_body(text)
    part["Content-Type"] = wire.parameter_header("Content-Type", "text/plain", [("charset", "utf-8")])
    part["Content-Transfer-Encoding"] = wire.text_header("Content-Transfer-Encoding", encoding)
    part.set_payload(payload)
    return part


def _attachment_part(attachment: Attachment) -> MIMEPart:
    filename = headers.check_header_value(attachment.filename, field="attachment filename").strip()
    # Readers reduce a name to its last path element and unquote a name wrapped in quotes or angle
    # brackets (Python's get_filename does both): such a name would not arrive as it was sent.
    wrapped = filename[:1] + filename[-1:] in ('""', "<>")
    if filename in ("", ".", "..") or "/" in filename or "\\" in filename or wrapped:
        raise MessageBuildError(
            f"attachment file name {attachment.filename!r} must be a bare file name, without path "
            "separators or surrounding quotes"
        )
    maintype, _, subtype = attachment.content_type.strip().lower().partition("/")
    if not (wire.is_token(maintype) and wire.is_token(subtype)):
        raise MessageBuildError(
            f"attachment {filename!r}: content type {attachment.content_type!r} is not type/subtype"
        )
    if maintype in ("multipart", "message"):
        # A nested message or multipart given as bytes would be re-parsed by readers with its own
        # headers; sent as opaque bytes it keeps the content exactly.
        maintype, subtype = "application", "octet-stream"
    part = MIMEPart(policy=MESSAGE_POLICY)
    part["Content-Type"] = wire.parameter_header(
        "Content-Type", f"{maintype}/{subtype}", [("name", filename)]
    )
    part["Content-Disposition"] = wire.parameter_header(
        "Content-Disposition", "attachment", [("filename", filename)]
    )
    part["Content-Transfer-Encoding"] = wire.text_header("Content-Transfer-Encoding", "base64")
    part.set_payload(wire.base64_body(attachment.content))
    return part

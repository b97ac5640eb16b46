"""Message disposition notifications (RFC 8098) in the ANS format: build the MDN the gateway answers with,
read the ones it receives.

Outbound, ``gateway.receipts`` calls :func:`build_mdn` once a received IHE_XDM package is integrated
(``processed``, or ``processed/Error: 90x^libellé`` with the codes of MSSANTE.md §5.8); inbound,
:func:`parse_mdn` turns a peer's MDN into a :class:`DispositionReport` matched to the original by its
Original-Message-ID. The layout follows MSSANTE.md §8.3 (ANS ``struct-msg-mdn``): human text, the
``message/disposition-notification`` part, the original's header section, then the original attachments
re-attached as the ANS requires (so a report may have more than RFC 6522's three parts). Pure: no clock,
no store.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.parser import HeaderParser
from typing import Final

from mappers.dsn import fields_block, header_block, report_headers, returned_part
from mappers.errors import MappingError
from mappers.folding import READ_POLICY, set_header
from mappers.headers import strip_accents
from mappers.mime import MESSAGE_POLICY
from mappers.mime_parse import XDM_FILENAME, safe_filename
from mappers.pdf_copies import PDF_MIME_TYPE
from mappers.records import Attachment

__all__ = [
    "ERROR_LABELS",
    "KO_PREFIX",
    "Disposition",
    "DispositionReport",
    "MdnError",
    "build_mdn",
    "original_attachments",
    "parse_mdn",
]

# The ANS applicationErrorCondition table, labels word for word (volet "Transmission au LPS de documents
# CDA provenant d'un courriel MSSanté", page error-codes; MSSANTE.md §5.8): a receiving PFI may match them.
ERROR_LABELS: Final[dict[int, str]] = {
    900: "Version du document incorrecte lors d'une demande de remplacement/suppression",
    901: "Auteur non autorisé à remplacer ou supprimer un document",
    902: "Identifiant patient inconnu",
    903: "INS non présent dans le document",
    904: "L'INS transmis ne correspond pas exactement à celui stocké dans la base du consommateur",
    905: "L'INS transmis n'est pas complet",
    906: "Erreur 'Autre'",
}
KO_PREFIX: Final = "[KO Intégration système !]"

_TYPES: Final = frozenset({"displayed", "dispatched", "processed", "deleted"})
_DISPOSITION = re.compile(
    r"\s*(?P<action>[\w-]+)\s*/\s*(?P<sending>[\w-]+)\s*;\s*(?P<type>[\w-]+)\s*(?:/\s*(?P<modifier>.*))?$"
)
_ERROR = re.compile(r"error\s*:?\s*(?P<code>\d{3})?\s*(?:\^(?P<label>[^^]*))?", re.IGNORECASE)
_TOKEN = re.compile(r"[\x21-\x7e]{1,998}")


class MdnError(MappingError):
    """An MDN that cannot be written, or a received one without the fields RFC 8098 makes mandatory."""


@dataclass(frozen=True, slots=True)
class Disposition:
    """The ``Disposition`` field: ``automatic-action/MDN-sent-automatically; processed/Error: 904^…``.

    ``details`` are lines for the human-readable part only (one per document when a consumer reported on
    several, ``mappers.hl7_consumer_ack.combine``); they are not part of the field.
    """

    type: str = "processed"
    automatic: bool = True
    error_code: int | None = None
    error_label: str | None = None
    details: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.error_code is not None or self.error_label is not None

    def field(self) -> str:
        """The field value; the label is written without accents (MDN fields are US-ASCII)."""
        mode = (
            "automatic-action/MDN-sent-automatically" if self.automatic else "manual-action/MDN-sent-manually"
        )
        value = f"{mode}; {self.type}"
        if self.is_error:
            code = f"{self.error_code}" if self.error_code is not None else ""
            label = strip_accents(self.error_label or ERROR_LABELS.get(self.error_code or 0, ""))
            value += f"/Error: {code}^{label}"
        return value


@dataclass(frozen=True, slots=True)
class DispositionReport:
    """A received MDN: who it is about, what became of the message, and which message it reports on."""

    final_recipient: str
    disposition: Disposition
    original_message_id: str | None = None
    original_recipient: str | None = None
    reporting_ua: str | None = None


def build_mdn(
    original: bytes,
    *,
    disposition: Disposition,
    final_recipient: str,
    sender: str,
    recipient: str,
    hostname: str,
    now: datetime,
    attachments: Sequence[Attachment] = (),
    message_id: str | None = None,
) -> EmailMessage:
    """The ANS MDN about ``original`` (raw bytes as received), from ``sender`` to ``recipient``.

    ``recipient`` is the Disposition-Notification-To address; deciding whether to answer at all
    (RFC 8098 § 2.1 loop avoidance) is the caller's job. ``attachments`` are the original's IHE_XDM.zip
    and PDF copies, re-attached after the report parts.

    Raises:
        MdnError: an address or host name that would make an invalid report.
    """
    for name, value in (("final_recipient", final_recipient), ("hostname", hostname)):
        if not _TOKEN.fullmatch(value):
            raise MdnError(f"{name}: {value!r} must be printable US-ASCII without spaces")
    if disposition.type not in _TYPES:
        raise MdnError(f"disposition type {disposition.type!r} is not one of {sorted(_TYPES)}")
    if now.utcoffset() is None:
        raise MdnError("now: give a timezone-aware datetime")
    headers = header_block(original)
    parsed = HeaderParser(policy=READ_POLICY).parsestr(headers)
    original_id = " ".join(str(parsed.get("Message-ID", "")).split()) or None
    # RFC 8098 § 3.2.3: copied from the original's Original-Recipient header, absent when it was absent.
    original_recipient = " ".join(str(parsed.get("Original-Recipient", "")).split()) or None
    subject = " ".join(str(parsed.get("Subject", "")).split())

    report = EmailMessage(policy=MESSAGE_POLICY)
    try:
        set_header(report, "From", Address(addr_spec=sender))
        set_header(report, "To", Address(addr_spec=recipient))
    except (ValueError, IndexError) as error:
        raise MdnError(f"sender or recipient is not a mail address: {error}") from error
    if disposition.is_error:
        subject = f"{KO_PREFIX}[{disposition.error_code or ''}] {subject}".rstrip()
    report_headers(
        report,
        subject=subject or "Accusé de traitement",
        now=now,
        message_id=message_id or f"<mdn.{secrets.token_hex(12)}@{hostname}>",
        original_id=original_id,
        report_type="disposition-notification",
    )

    human = MIMEPart(policy=MESSAGE_POLICY)
    human.set_content(_human_text(disposition), charset="utf-8")
    notification = MIMEPart(policy=MESSAGE_POLICY)
    notification["Content-Type"] = "message/disposition-notification"
    notification.set_payload(
        [
            fields_block(
                [
                    ("Reporting-UA", f"{hostname}; mssgw"),
                    ("Original-Recipient", original_recipient),
                    ("Final-Recipient", f"rfc822; {final_recipient}"),
                    ("Original-Message-ID", original_id),
                    ("Disposition", disposition.field()),
                ]
            )
        ]
    )
    # The ANS page: the third part is the original message itself, and its attachments come back after it.
    parts: list[Message | str] = [human, notification, returned_part(original, headers, full=True)]
    for attachment in attachments:
        part = MIMEPart(policy=MESSAGE_POLICY)
        maintype, _, subtype = attachment.content_type.partition("/")
        part.set_content(
            attachment.content,
            maintype,
            subtype or "octet-stream",
            filename=attachment.filename,
            params={"name": attachment.filename},
        )
        parts.append(part)
    report.set_payload(parts)
    report.set_boundary(f"mdn-{secrets.token_hex(12)}")
    return report


def original_attachments(message: EmailMessage) -> tuple[Attachment, ...]:
    """The IHE_XDM.zip and PDF attachments of a received message: what its MDN must carry back."""
    found: list[Attachment] = []
    for index, part in enumerate(message.walk(), start=1):
        if part.is_multipart() or part.get_filename() is None:
            continue
        name = safe_filename(part.get_filename(), index, part.get_content_type())
        if name.casefold() == XDM_FILENAME.casefold() or part.get_content_type() == PDF_MIME_TYPE:
            content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                found.append(Attachment(name, part.get_content_type(), content))
    return tuple(found)


def _human_text(disposition: Disposition) -> str:
    details = "".join(f"- {line}\n" for line in disposition.details)
    if details:
        details = "\nDocuments :\n" + details
    if not disposition.is_error:
        return (
            "Le message et ses documents ont été intégrés.\nThe message and its documents were processed.\n"
            + details
        )
    label = disposition.error_label or ERROR_LABELS.get(disposition.error_code or 0, "")
    return (
        "Le document n'a pas pu être intégré.\n"
        f"Le système a retourné l'erreur {disposition.error_code or ''}^{label}\n\n"
        "The document could not be processed.\n"
        f"The system returned error {disposition.error_code or ''}^{strip_accents(label)}\n" + details
    )


# -- parsing -------------------------------------------------------------------------------------------


def parse_mdn(message: EmailMessage) -> DispositionReport | None:
    """Read a received MDN; ``None`` when ``message`` is not a disposition-notification report.

    Raises:
        MdnError: a disposition-notification report without Final-Recipient or Disposition (RFC 8098 § 3.1).
    """
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "", header="content-type")).lower() != "disposition-notification":
        return None
    payload = message.get_payload()
    parts = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    part = next((p for p in parts if p.get_content_type() == "message/disposition-notification"), None)
    if part is None:
        raise MdnError("disposition-notification report without a message/disposition-notification part")
    fields = _fields(part)
    final = _typed(fields.get("final-recipient"))
    if final is None and part.get("Final-Recipient") is not None:
        # The ANS's own example writes the fields in the part's header, with no blank line before them.
        fields = _field_values(part.raw_items())
        final = _typed(fields.get("final-recipient"))
    if final is None:
        raise MdnError("MDN without Final-Recipient (RFC 8098 § 3.2.4)")
    disposition_text = fields.get("disposition")
    if not disposition_text:
        raise MdnError(f"{final}: MDN without Disposition (RFC 8098 § 3.2.6)")
    return DispositionReport(
        final_recipient=final,
        disposition=_disposition(disposition_text),
        # "<id >" (a space inside the brackets, as in the ANS example) still names the message "<id>".
        original_message_id="".join((fields.get("original-message-id") or "").split()) or None,
        original_recipient=_typed(fields.get("original-recipient")),
        reporting_ua=" ".join((fields.get("reporting-ua") or "").split()) or None,
    )


def _fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        # The email package parses message/* payloads as an embedded message: its headers are the fields.
        items = payload[0].raw_items()
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
        items = HeaderParser(policy=READ_POLICY).parsestr(text.strip() + "\n\n").raw_items()
    return _field_values(items)


def _field_values(items: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Field name (lower case) → its unfolded value."""
    return {name.lower(): " ".join(re.sub(r"\r?\n", "", str(value)).split()) for name, value in items}


def _typed(value: str | None) -> str | None:
    """``rfc822; a@b`` → ``a@b``."""
    if not value:
        return None
    kind, semi, rest = value.partition(";")
    return (rest.strip() or None) if semi and kind.strip() and " " not in kind.strip() else value.strip()


def _disposition(text: str) -> Disposition:
    match = _DISPOSITION.match(text)
    if match is None:
        raise MdnError(f"Disposition {text!r} is not action-mode/sending-mode; type (RFC 8098 § 3.2.6)")
    kind = match.group("type").lower()
    if kind not in _TYPES:
        raise MdnError(f"Disposition type {kind!r} is not one of {sorted(_TYPES)}")
    modifier = match.group("modifier") or ""
    code: int | None = None
    label: str | None = None
    error = _ERROR.match(modifier.strip())
    if error is not None:
        code = int(error.group("code")) if error.group("code") else None
        label = (error.group("label") or "").strip() or modifier.strip()
    return Disposition(
        type=kind,
        automatic=match.group("action").lower() == "automatic-action",
        error_code=code,
        error_label=label,
    )

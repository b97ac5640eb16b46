"""Delivery status notifications (RFC 3464): the record types, and building the report mssgw sends back.

Outbound, ``gateway.outbound`` calls :func:`build_dsn` when a delivery fails or is given up and stores the
result for the original sender; reading a peer's report is ``mappers.dsn_read``. The record types
(:class:`RecipientReport`, :class:`DeliveryReport`) serve both. Pure: no clock, no DNS, no store.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser, HeaderParser
from email.policy import Policy
from email.utils import format_datetime
from typing import Literal, get_args

from mappers.errors import MappingError
from mappers.folding import READ_POLICY, set_header
from mappers.mime import MESSAGE_POLICY

__all__ = [
    "ACTIONS",
    "FULL_SIZE_LIMIT",
    "STATUS_CODE",
    "Action",
    "DeliveryReport",
    "DsnError",
    "RecipientReport",
    "build_dsn",
    "fields_block",
    "header_block",
    "report_headers",
    "returned_part",
    "xtext_decode",
    "xtext_encode",
]

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
ACTIONS: frozenset[str] = frozenset(get_args(Action))

# Returning a whole 25 MB XDM message in a bounce doubles patient data in two mailboxes for nothing;
# above this size RET=FULL falls back to the headers (Postfix does the same with bounce_size_limit).
FULL_SIZE_LIMIT = 1024 * 1024

STATUS_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_SMTP_REPLY = re.compile(r"[2-5]\d\d(?: .*)?")
# One token of printable US-ASCII: what an address, host name or envelope id may be in a DSN field.
_TOKEN = re.compile(r"[\x21-\x7e]{1,998}")
_REPLY_PREFIX = re.compile(r"([2-5]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3} )?")
_CONTINUATION = re.compile(r"^(?:[2-5]\d\d[ -])?(?:[245]\.\d{1,3}\.\d{1,3}(?: |$))?")
# RFC 3461 § 4.4: an ENVID is at most 100 characters of printable US-ASCII once decoded.
_ENVID = re.compile(r"[\x20-\x7e]{1,100}")
_FOLD_AT = 78  # RFC 5322 § 2.1.1
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class DsnError(MappingError):
    """A report that cannot be written, or a received report that does not follow RFC 3464."""


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One per-recipient block (RFC 3464 § 2.3), without the address-type prefixes.

    ``original_recipient`` is the ORCPT address (xtext-decoded, without ``rfc822;``); ``diagnostic``
    the remote reply (``550 5.1.1 User unknown``) or, for a local failure, a short reason;
    ``remote_mta`` a host name. ``will_retry_until`` only goes with ``delayed`` (§ 2.3.9).
    """

    final_recipient: str
    action: Action
    status: str
    original_recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A received DSN: its per-message fields, its recipients, and the Message-ID it reports on."""

    recipients: tuple[RecipientReport, ...]
    reporting_mta: str | None = None
    envid: str | None = None
    arrival_date: datetime | None = None
    original_message_id: str | None = None


# -- xtext (RFC 3461 § 4): how ENVID and ORCPT travel in SMTP parameters -------------------------------


def xtext_encode(text: str) -> str:
    """Encode for an ENVID/ORCPT parameter: ``+``, ``=``, controls and space become ``+XX``."""
    if not text.isascii():
        raise DsnError("xtext carries US-ASCII only (RFC 3461 § 4)")
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in text)


def xtext_decode(text: str) -> str:
    """Decode an ENVID/ORCPT parameter value; malformed ``+XX`` sequences are refused."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "+":
            hexa = text[i + 1 : i + 3]
            if len(hexa) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in hexa):
                raise DsnError(f"malformed xtext {text!r}: '+' must be followed by two hex digits")
            out.append(chr(int(hexa, 16)))
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# -- building ------------------------------------------------------------------------------------------


def build_dsn(
    original: bytes,
    recipients: Sequence[RecipientReport],
    *,
    reporting_mta: str,
    postmaster: str,
    sender: str,
    now: datetime,
    arrival_date: datetime | None = None,
    envid: str | None = None,
    ret: Literal["FULL", "HDRS"] | None = None,
    message_id: str | None = None,
    display_tz: tzinfo = UTC,
    full_size_limit: int = FULL_SIZE_LIMIT,
) -> EmailMessage:
    """Build the multipart/report for ``sender`` about ``original`` (its raw bytes as stored).

    The report goes From ``postmaster`` (e.g. ``MAILER-DAEMON@<reporting_mta>``) To ``sender``, the
    original envelope sender. Its own envelope sender must be empty (``MAIL FROM:<>``, RFC 5321
    § 4.5.5), which only the caller can set; and the caller never reports to an empty sender.
    ``envid`` is the ENVID parameter decoded from xtext (:func:`xtext_decode`), as are the ORCPT
    addresses in ``recipients``: a report quotes them, not their SMTP encoding (RFC 3461 § 4).
    The original's headers are returned unless ``ret == "FULL"`` and it fits ``full_size_limit``.
    Times must be timezone-aware; ``display_tz`` only changes the human-readable sentences.

    Raises:
        DsnError: a value that would make an invalid or ambiguous report.
    """
    if not recipients:
        raise DsnError("a DSN reports on at least one recipient")
    _token(reporting_mta, "reporting_mta")
    _token(postmaster, "postmaster")
    _token(sender, "sender")
    if "@" not in sender or "@" not in postmaster:
        raise DsnError("sender and postmaster must be mail addresses (local@domain)")
    if envid is not None and not (_ENVID.fullmatch(envid) and envid == envid.strip()):
        raise DsnError(f"envid: {envid!r} must be 1-100 printable US-ASCII characters (RFC 3461 § 4.4)")
    for field, value in (("now", now), ("arrival_date", arrival_date)):
        _aware(value, field)
    for recipient in recipients:
        _check_recipient(recipient)

    headers = header_block(original)
    parsed = HeaderParser(policy=READ_POLICY).parsestr(headers)
    original_id = _flat(str(parsed.get("Message-ID", ""))) or None
    subject = _flat(str(parsed.get("Subject", "")))

    report = EmailMessage(policy=MESSAGE_POLICY)
    try:
        set_header(report, "From", Address("Passerelle MSSanté", addr_spec=postmaster))
        set_header(report, "To", Address(addr_spec=sender))
    except (ValueError, IndexError) as error:  # HeaderParseError is a ValueError
        raise DsnError(f"sender or postmaster is not a mail address: {error}") from error
    report_headers(
        report,
        subject=_subject(recipients, subject),
        now=now,
        message_id=message_id or f"<dsn.{secrets.token_hex(12)}@{reporting_mta}>",
        original_id=original_id,
        report_type="delivery-status",
    )

    full = ret == "FULL" and len(original) <= full_size_limit
    text = _human_text(
        recipients, subject, reporting_mta, arrival_date, display_tz, ret == "FULL" and not full
    )
    human = MIMEPart(policy=MESSAGE_POLICY)
    human.set_content(text, charset="utf-8")
    # RFC 6522 § 3: the human-readable part, then the report, then the returned message.
    parts: list[Message | str] = [
        human,
        _status_part(recipients, reporting_mta, envid, arrival_date),
        returned_part(original, headers, full),
    ]
    report.set_payload(parts)
    report.set_boundary(f"dsn-{secrets.token_hex(12)}")
    return report


def report_headers(
    report: EmailMessage,
    *,
    subject: str,
    now: datetime,
    message_id: str,
    original_id: str | None,
    report_type: str,
) -> None:
    """The header fields a report (DSN or MDN) shares after From and To, threaded under the original."""
    set_header(report, "Subject", subject)
    set_header(report, "Date", format_datetime(now.astimezone(UTC)))
    set_header(report, "Message-ID", message_id)
    if original_id:
        set_header(report, "In-Reply-To", original_id)
        set_header(report, "References", original_id)
    # RFC 3834 § 5 (and RFC 8098 § 2.1 for MDNs): an automatic answer, which nobody answers automatically.
    set_header(report, "Auto-Submitted", "auto-replied")
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = f"multipart/report; report-type={report_type}"


def _check_recipient(recipient: RecipientReport) -> None:
    _token(recipient.final_recipient, "final_recipient")
    if recipient.original_recipient is not None:
        _token(recipient.original_recipient, "original_recipient")
    if recipient.remote_mta is not None:
        _token(recipient.remote_mta, "remote_mta")
    if recipient.action not in ACTIONS:
        raise DsnError(f"action {recipient.action!r} is not one of {sorted(ACTIONS)} (RFC 3464 § 2.3.3)")
    if not STATUS_CODE.fullmatch(recipient.status):
        raise DsnError(f"status {recipient.status!r} is not an RFC 3463 code like 5.1.1")
    # RFC 3464 § 2.3.3/2.3.4: success actions carry 2.x.x, "delayed" a transient 4.x.x, and "failed"
    # either class (a message given up after retries keeps the last transient status, as Postfix does).
    expected = {"failed": "45", "delayed": "4"}.get(recipient.action, "2")
    if recipient.status[0] not in expected:
        raise DsnError(f"status {recipient.status} contradicts action {recipient.action}")
    if recipient.will_retry_until is not None and recipient.action != "delayed":
        raise DsnError("Will-Retry-Until only goes with action delayed (RFC 3464 § 2.3.9)")
    _aware(recipient.last_attempt, "last_attempt")
    _aware(recipient.will_retry_until, "will_retry_until")


def _token(value: str, field: str) -> None:
    if not _TOKEN.fullmatch(value):
        raise DsnError(f"{field}: {value!r} must be printable US-ASCII without spaces (RFC 3464 § 2.1)")


def _aware(value: datetime | None, field: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise DsnError(f"{field}: give a timezone-aware datetime")


def _flat(text: str) -> str:
    """One line, single spaces, bounded: a header value can then never smuggle a line break."""
    return " ".join(text.split())[:900]


def _reply_line(text: str) -> str:
    """A remote reply or local reason as one line of printable US-ASCII, fit for Diagnostic-Code."""
    lines = text.splitlines()
    first = _REPLY_PREFIX.match(lines[0]) if lines else None
    if first is not None:
        # A multi-line SMTP reply (RFC 5321 § 4.2.1) reads as one sentence: "550 5.1.1 A B", not
        # "550-5.1.1 A 550 5.1.1 B"; the code and enhanced code are said once.
        head = f"{first.group(1)} {first.group(2) or ''}{lines[0][first.end() :]}"
        lines = [head, *(_CONTINUATION.sub("", line, count=1) for line in lines[1:])]
    return _flat(" ".join(lines)).encode("ascii", "replace").decode("ascii")


def header_block(original: bytes) -> str:
    """The header section of a raw message as text (LF line ends), for a text/rfc822-headers part."""
    end = _HEADER_END.search(original)
    block = original[: end.start()] if end else original
    return block.decode("utf-8", "replace").replace("\r\n", "\n") + "\n"


def _date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC))


class _Field(str):
    """A DSN field value folded only at its own spaces, so unfolding gives it back byte for byte.

    The email package would refold a long value itself and may turn a long word into an RFC 2047
    encoded-word, which a DSN reader does not decode (RFC 3464 § 2.1.1: fields are plain US-ASCII).
    """

    name: str

    def __new__(cls, name: str, value: str) -> _Field:
        field = super().__new__(cls, value)
        field.name = name
        return field

    def fold(self, *, policy: Policy) -> str:
        lines: list[str] = []
        line = f"{self.name}:"
        rest = " " + self
        while rest:
            cut = rest.find(" ", 1)
            word, rest = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
            if len(line) + len(word) > _FOLD_AT and line != f"{self.name}:":
                lines.append(line)
                line = word
            else:
                line += word
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


def fields_block(fields: Sequence[tuple[str, str | None]]) -> Message:
    """One block of report fields (DSN or MDN), each folded only at its own spaces; ``None`` skips."""
    block = Message()
    for name, value in fields:
        if value is not None:
            block[name] = _Field(name, value)
    return block


def _status_part(
    recipients: Sequence[RecipientReport],
    reporting_mta: str,
    envid: str | None,
    arrival_date: datetime | None,
) -> MIMEPart:
    blocks: list[Message | str] = [
        fields_block(
            [
                ("Reporting-MTA", f"dns; {reporting_mta}"),
                ("Original-Envelope-Id", envid),
                ("Arrival-Date", _date(arrival_date) if arrival_date else None),
            ]
        )
    ]
    for r in recipients:
        diagnostic = _reply_line(r.diagnostic) if r.diagnostic else None
        diagnostic_type = "smtp" if diagnostic and _SMTP_REPLY.fullmatch(diagnostic) else "x-mssgw"
        blocks.append(
            fields_block(
                [
                    (
                        "Original-Recipient",
                        f"rfc822; {r.original_recipient}" if r.original_recipient else None,
                    ),
                    ("Final-Recipient", f"rfc822; {r.final_recipient}"),
                    ("Action", r.action),
                    ("Status", r.status),
                    ("Remote-MTA", f"dns; {r.remote_mta}" if r.remote_mta else None),
                    ("Diagnostic-Code", f"{diagnostic_type}; {diagnostic}" if diagnostic else None),
                    ("Last-Attempt-Date", _date(r.last_attempt) if r.last_attempt else None),
                    ("Will-Retry-Until", _date(r.will_retry_until) if r.will_retry_until else None),
                ]
            )
        )
    part = MIMEPart(policy=MESSAGE_POLICY)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload(blocks)
    return part


def returned_part(original: bytes, headers: str, full: bool) -> MIMEPart:
    """The third part of a report: the whole original, or only its headers (RFC 6522 § 3)."""
    part = MIMEPart(policy=MESSAGE_POLICY)
    if full:
        part.set_content(BytesParser(policy=MESSAGE_POLICY).parsebytes(original))
    else:
        # RFC 6522 text/rfc822-headers: only the header section, and never a body with patient data.
        part.set_content(headers, subtype="rfc822-headers", charset="utf-8")
    return part


# -- the human-readable part ---------------------------------------------------------------------------

_ACTION_SENTENCES: dict[str, tuple[str, str]] = {
    "failed": ("n'a pas pu être remis à :", "could not be delivered to:"),
    "delayed": ("n'a pas encore pu être remis à :", "has not been delivered yet to:"),
    "delivered": ("a bien été remis à :", "was delivered to:"),
    "relayed": (
        "a été transmis, sans accusé de remise possible au-delà, pour :",
        "was relayed, with no further delivery notification possible, for:",
    ),
    "expanded": ("a été remis à la liste de diffusion :", "was delivered to the mailing list:"),
}

# RFC 3463 § 3: the subject digit of the status says what kind of problem it is.
_STATUS_SUBJECTS: dict[str, tuple[str, str]] = {
    "0": ("autre cause", "other cause"),
    "1": ("adresse du destinataire", "recipient address"),
    "2": ("boîte aux lettres du destinataire", "recipient mailbox"),
    "3": ("système de messagerie du destinataire", "recipient mail system"),
    "4": ("réseau ou acheminement", "network or routing"),
    "5": ("protocole de messagerie", "mail protocol"),
    "6": ("contenu du message", "message content"),
    "7": ("sécurité ou politique du destinataire", "security or recipient policy"),
}


def _subject(recipients: Sequence[RecipientReport], original_subject: str) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        head = "Non remis / Undelivered"
    elif "delayed" in actions:
        head = "Remise retardée / Delivery delayed"
    else:
        head = "Remis / Delivered"
    return f"{head}: {original_subject}" if original_subject else head


# Each sentence in French, then in English: the sender may be a French-only user of a hospital
# application, and the report may reach an operator's English-speaking support desk.
_PHRASES: dict[str, tuple[str, str]] = {
    "intro": (
        "Message automatique de la passerelle MSSanté {mta}, merci de ne pas y répondre.",
        "Automatic message from the MSSanté gateway {mta}; please do not reply.",
    ),
    "message": ("Votre message « {subject} »", 'Your message "{subject}"'),
    "received": (", reçu le {when},", ", received {when},"),
    "status": ("Statut {status} ({meaning})", "Status {status} ({meaning})"),
    "reply": ("réponse de {mta} : {reply}", "reply from {mta}: {reply}"),
    "reason": ("motif : {reply}", "reason: {reply}"),
    "retry": ("nouvelles tentatives jusqu'au {when}", "retrying until {when}"),
    "large": (
        "Le message étant volumineux, seuls ses en-têtes sont joints.",
        "The message is large, so only its headers are attached.",
    ),
    "separator": (" ; ", "; "),
    "date": ("%d/%m/%Y à %H:%M", "%Y-%m-%d %H:%M"),
}


def _human_text(
    recipients: Sequence[RecipientReport],
    subject: str,
    reporting_mta: str,
    arrival_date: datetime | None,
    tz: tzinfo,
    headers_only_by_size: bool,
) -> str:
    sections = []
    for lang in (0, 1):

        def say(key: str, lang: int = lang, **values: str) -> str:
            return _PHRASES[key][lang].format(**values)

        def when(value: datetime, lang: int = lang) -> str:
            local = value.astimezone(tz)
            return f"{local.strftime(_PHRASES['date'][lang])} ({local.tzname() or 'UTC'})"

        lines = [say("intro", mta=reporting_mta)]
        lead = say("message", subject=subject)
        if arrival_date is not None:
            lead += say("received", when=when(arrival_date))
        for action, sentences in _ACTION_SENTENCES.items():
            group = [r for r in recipients if r.action == action]
            if group:
                lines += ["", f"{lead} {sentences[lang]}"]
            for r in group:
                meaning = _STATUS_SUBJECTS.get(r.status.split(".")[1], _STATUS_SUBJECTS["0"])[lang]
                facts = [say("status", status=r.status, meaning=meaning)]
                if r.diagnostic:
                    reply = _reply_line(r.diagnostic)
                    if r.remote_mta:
                        facts.append(say("reply", mta=r.remote_mta, reply=reply))
                    else:
                        facts.append(say("reason", reply=reply))
                if r.will_retry_until is not None:
                    facts.append(say("retry", when=when(r.will_retry_until)))
                lines += [f"  {r.final_recipient}", "    " + say("separator").join(facts) + "."]
        if headers_only_by_size:
            lines += ["", say("large")]
        sections.append("\n".join(lines))
    return "\n\n----------\n\n".join(sections) + "\n"

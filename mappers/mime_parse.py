"""Received MIME bytes → store record. Called by inbound intake; never writes a file, logs or trusts a size.

Parsing policy for untrusted mail: the size is checked before parsing; ``email.policy.default``
parses; the tree is walked iteratively with a bounded depth and part count (a ``RecursionError`` of the
email package is reported the same way). The body is the first ``text/plain`` body part; its HTML
alternatives are dropped, an HTML-only body is kept as an attachment. ``IHE_XDM.zip`` is found by name,
case-insensitively, and read by ``mappers.xdm``: an unsafe archive refuses the message, a broken one
stays an attachment. PDF attachments identical to its documents' PDFs are dropped; every other leaf is
an attachment, its name reduced to a bare name without control or format characters. Refusals are
``MimeError`` or the XDM reader's unsafe-input errors; what is wrong but readable (headers that
contradict the package, a malformed subject) goes to ``MessageRecord.problems``.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import MessageError
from email.feedparser import BytesFeedParser
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from typing import TypeVar

from mappers import header_fields, headers, xdm
from mappers.addresses import from_header_address
from mappers.archive import ArchiveLimits, UnsafeArchiveError
from mappers.errors import MappingError
from mappers.folding import READ_POLICY
from mappers.patient import Patient
from mappers.pdf_copies import PDF_MIME_TYPE, pdf_copy
from mappers.records import Attachment, LazyText, Mailbox, MessageRecord
from mappers.safe_xml import UnsafeXmlError

_MSG_ID = re.compile(r"<[^<>\s]+>")
_T = TypeVar("_T")
XDM_FILENAME = "IHE_XDM.zip"
_FEED_CHUNK = 1 << 16
_BOUNDARY_PARAM = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)
_LINE_END = re.compile(rb"\r\n|\r|\n")
# email.feedparser.headerRE over bytes: an octet past ASCII (a surrogate once decoded there) matches neither.
_FIELD_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_DELIMITER_MAX = 202  # the longest boundary _BOUNDARY_PARAM takes, and the "--" that closes it
_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "application/pdf": ".pdf",
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt",
}
# A report's parts come without a file name: the default name says which part of the report it is.
_UNNAMED = {
    "message/delivery-status": "delivery-status",
    "message/global-delivery-status": "delivery-status",
    "message/disposition-notification": "disposition-notification",
    "text/rfc822-headers": "original-headers",
}


class MimeError(MappingError):
    """A received message that cannot be read safely (too large, too deep, too many parts, no From)."""


@dataclass(frozen=True, slots=True)
class MimeLimits:
    """Bounds on what a received message may make the parser do.

    The defaults leave room for Mon espace santé's 25 MB limit after base64 (×4/3) and for ordinary
    mail structures (a few levels, tens of parts), and stop hostile nesting long before it costs much.
    ``max_lines`` bounds the parser's work: 40 MB of base64 is about 540 000 lines, while the same
    size in one-character lines would keep it busy for seconds. ``archive`` bounds the IHE_XDM.zip
    (``None``: the defaults of ``mappers.archive``). ``max_header_length`` bounds one header field:
    the email package's header parsers take seconds on a few hundred kilobytes of encoded-words or
    addresses, and a thousand recipients fit in 32 000 characters. ``max_header_fields`` bounds the
    fields of one part: real mail has tens, a long relay path a few hundred, and each field is parsed,
    stored and copied into every DSN again.
    """

    max_bytes: int = 40 * 1024 * 1024
    max_lines: int = 1_000_000
    max_header_length: int = 32_000
    max_header_fields: int = 1000
    max_depth: int = 10
    max_parts: int = 250
    archive: ArchiveLimits | None = None


DEFAULT_LIMITS = MimeLimits()


def canonical_body(text: str) -> str:
    """The body text as it reads back after a trip through MIME: LF line ends, no final line end.

    A text part always ends with a line end when built (``wire.text_body``, like ``set_content``), so
    the final one carries no meaning and is dropped on parsing; stores and round-trip tests compare
    this form.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text[:-1] if text.endswith("\n") else text


def parse_message(data: bytes, *, limits: MimeLimits = DEFAULT_LIMITS) -> MessageRecord:
    """Read a received message into a record, refusing it with a ``MimeError`` when it is unsafe."""
    return _read(data, limits, lambda message: _to_record(message, limits))


def parse_with_authors(data: bytes, *, limits: MimeLimits = DEFAULT_LIMITS) -> tuple[MessageRecord, Authors]:
    """``parse_message`` and ``read_authors`` from one parse: the second parse of the header block took
    a sixth of a 1 KiB submission's intake (issue 16). Its header fields are the same: each parse ends
    the header at the same line."""
    return _read(data, limits, lambda message: (_to_record(message, limits), _authors(message)))


def _read(data: bytes, limits: MimeLimits, read: Callable[[EmailMessage], _T]) -> _T:
    """What ``read`` makes of the parsed ``data``, any failure of the email package a ``MimeError``."""
    if len(data) > limits.max_bytes:
        raise MimeError(f"message of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    _count_lines(data, limits)
    try:
        message = _parsed(data, limits)
        _check_structure(message, limits)
        return read(message)
    except MappingError:
        raise
    except RecursionError as exc:
        raise MimeError(
            f"MIME structure nested too deeply to parse (limit {limits.max_depth} levels)"
        ) from exc
    except (MessageError, ValueError, LookupError, TypeError, AttributeError, IndexError) as exc:
        # The email package has raised these on malformed headers it cannot model; an unreadable
        # message is refused like any other, with the reason, and never crashes the caller.
        raise MimeError(f"unreadable message: {type(exc).__name__}: {exc}") from exc


def _parsed(data: bytes, limits: MimeLimits) -> EmailMessage:
    """The email package's tree of ``data``.

    A message that is one leaf (neither multipart nor message/*) has its header block parsed and the
    rest set as its payload, which is what the parser would make of it after pushing every body line
    through its line buffer one by one (10 % of the work on 1 MiB of short lines; issue 16); only a
    missing blank line is no longer noted in ``defects``, which nothing here reads. Its parts need no
    counting, having none (which saved a lowered copy of the message and a search over it). Anything
    else has its parts counted (``_prescan``), then is parsed whole, fed in chunks.
    """
    body_start = _body_start(data)
    leaf = _fed(data[:body_start])
    # A payload already: the parser took a last field "From …" for the first body line.
    if leaf.get_content_maintype() in ("multipart", "message") or leaf.get_payload():
        _prescan(data, limits)
        return _fed(data)
    leaf.set_payload(data[body_start:].decode("ascii", "surrogateescape"))
    return leaf


def _fed(data: bytes) -> EmailMessage:
    """``data`` parsed by ``BytesFeedParser`` fed in chunks.

    ``BytesParser.parsebytes`` decodes the whole message into one string and splits all of it into
    lines at once: 7.7 times the message's size at its peak, against 2.7 times fed in chunks (the
    parser is incremental, a chunk may end anywhere; issue 11).
    """
    parser = BytesFeedParser(EmailMessage, policy=READ_POLICY)
    with memoryview(data) as view:
        for start in range(0, len(data), _FEED_CHUNK):
            parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    return parser.close()


def _body_start(data: bytes) -> int:
    """Where the email package's parser ends the header block and starts the body (``_parsegen``): after
    the first empty line, or at the first line that is neither a field nor a continuation, by the
    parser's own pattern over the same lines (CR, LF or CRLF ends each)."""
    position = 0
    while position < len(data):
        line_end = _LINE_END.search(data, position)
        end = len(data) if line_end is None else line_end.end()
        if line_end is not None and line_end.start() == position:
            return end
        if not _FIELD_LINE.match(data, position, end):
            return position
        position = end
    return position


def _count_lines(data: bytes, limits: MimeLimits) -> None:
    """Refuse a message of more lines than ``limits`` allows."""
    lines = data.count(b"\n")
    if lines > limits.max_lines:
        raise MimeError(f"message has {lines} lines; the limit is {limits.max_lines}")


def _prescan(data: bytes, limits: MimeLimits) -> None:
    """Refuse what would make the parser work long before its result could be checked.

    Every MIME part starts at a delimiter line ``--<boundary>`` (RFC 2046 § 5.1.1), so counting the
    lines that name a declared boundary bounds the parts before the email package builds them.
    """
    boundaries = declared_boundaries(data)
    if not boundaries:
        return
    delimiters = 0
    for text in dash_lines(data):
        line = text.rstrip()
        if line in boundaries or (line.endswith(b"--") and line[:-2] in boundaries):
            delimiters += 1
    # Each part has one opening delimiter, each multipart one closing delimiter more.
    if delimiters > 2 * limits.max_parts:
        raise MimeError(f"message has more than {limits.max_parts} MIME parts")


def declared_boundaries(data: bytes) -> set[bytes]:
    """Every ``boundary`` parameter value in ``data``, as ``_BOUNDARY_PARAM.findall`` finds them.

    A case-insensitive regex cannot skip ahead to its first letter, so it crawls the whole message (5 ms a
    MiB); it is tried only where a lower-cased copy has ``boundary`` (a memchr-speed search), which for
    a plain-text body is nowhere (issue 16).
    """
    lowered = data.lower()
    found: set[bytes] = set()
    position = lowered.find(b"boundary")
    while position >= 0:
        match = _BOUNDARY_PARAM.match(data, position)
        if match is not None:
            found.add(match.group(1) or match.group(2))
        # Like findall: on after a match, one octet further after a miss.
        position = lowered.find(b"boundary", match.end() if match is not None else position + 1)
    return found


def dash_lines(data: bytes) -> Iterator[bytes]:
    """What follows ``--`` on each line starting so, up to 202 octets and short of its CR or LF, never
    empty: what the multi-line regex ``^--`` then 1 to 202 octets but CR and LF captured, found with
    ``find``, which skips a base64 part's thousands of lines where the regex tries each (issue 16)."""

    def dashes_after(position: int) -> int:
        line_feed = data.find(b"\n--", position)
        return line_feed + 1 if line_feed >= 0 else -1

    start = 0 if data.startswith(b"--") else dashes_after(0)
    while start >= 0:
        text = data[start + 2 : start + 2 + _DELIMITER_MAX]
        for line_end in (b"\r", b"\n"):
            text = text.partition(line_end)[0]
        if text:
            yield text
        start = dashes_after(start + 2)


def _children(part: Message) -> list[Message]:
    payload = part.get_payload() if part.is_multipart() else None
    return [child for child in payload if isinstance(child, Message)] if payload else []


def _check_structure(message: Message, limits: MimeLimits) -> None:
    stack: list[tuple[Message, int]] = [(message, 1)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if len(part) > limits.max_header_fields:
            raise MimeError(f"message has {len(part)} header fields; the limit is {limits.max_header_fields}")
        for name, value in part.raw_items():
            if len(value) > limits.max_header_length:
                raise MimeError(
                    f"header field {name} is {len(value)} characters long; "
                    f"the limit is {limits.max_header_length}"
                )
        if count > limits.max_parts:
            raise MimeError(f"message has more than {limits.max_parts} MIME parts")
        if depth > limits.max_depth:
            raise MimeError(f"MIME parts nested {depth} levels deep; the limit is {limits.max_depth} levels")
        stack.extend((child, depth + 1) for child in _children(part))


def _to_record(message: EmailMessage, limits: MimeLimits) -> MessageRecord:
    authors = _addresses(message, "From")
    if not authors:
        raise MimeError("message has no From address")
    body, skipped = _body(message)
    leaves = [leaf for leaf in _leaves(message) if not any(leaf is s for s in skipped)]
    attachments = [_attachment(leaf, index) for index, leaf in enumerate(leaves, start=1)]
    subject = header_fields.text(message, "Subject") or ""
    problems: list[str] = []
    packages = [a for a in attachments if a.filename.casefold() == XDM_FILENAME.casefold()]
    package: xdm.XdmPackage | None = None
    if packages:
        if len(packages) > 1:
            problems.append(
                f"{len(packages)} {XDM_FILENAME} attachments: only the first is read (ECO.2.1.1 allows one)"
            )
        package = _read_package(packages[0], limits, problems)
    if package is not None:
        copies = {copy for copy in (pdf_copy(d) for d in package.documents) if copy is not None}
        attachments = [
            a
            for a in attachments
            if a is not packages[0] and not (a.content_type == PDF_MIME_TYPE and a.content in copies)
        ]
    problems.extend(_check_mss_headers(message, subject, package))
    return MessageRecord(
        author=authors[0],
        to=tuple(_addresses(message, "To")),
        subject=subject,
        body="" if body is None else LazyText(functools.partial(_body_text, body)),
        message_id=_first_id(header_fields.text(message, "Message-ID")),
        date=_date(message),
        cc=tuple(_addresses(message, "Cc")),
        on_behalf_of=_first(_addresses(message, "Sender")),
        reply_to=_first(_addresses(message, "Reply-To")),
        in_reply_to=_first_id(header_fields.text(message, "In-Reply-To")),
        references=tuple(_MSG_ID.findall(header_fields.text(message, "References") or "")),
        attachments=tuple(attachments),
        patient=None if package is None else package.patient or package.cda_patient,
        documents=() if package is None else package.documents,
        disposition_notification_to=_first(_addresses(message, "Disposition-Notification-To")),
        end_of_exchange=headers.is_end_of_exchange(_header(message, headers.X_MSS_MES)),
        problems=tuple(problems),
        package_metadata=() if package is None else package.metadata,
    )


def _read_package(attachment: Attachment, limits: MimeLimits, problems: list[str]) -> xdm.XdmPackage | None:
    """The package, or ``None`` when it is malformed (kept as a plain attachment, and said so).

    An unsafe archive or XML (zip bomb, path traversal, entity tricks) refuses the whole message: its
    content must not reach the store. A merely broken package (no METADATA.XML, bad XML syntax) leaves
    a message a person can still read, with the package attached as received.
    """
    try:
        package = xdm.parse_package(attachment.content, limits=limits.archive)
    except (UnsafeArchiveError, UnsafeXmlError):
        raise
    except MappingError as error:
        problems.append(f"{XDM_FILENAME} could not be read: {error}")
        return None
    problems.extend(package.problems)
    return package


def _check_mss_headers(message: EmailMessage, subject: str, package: xdm.XdmPackage | None) -> list[str]:
    """What the X-MSS headers and the subject claim, against what the package holds (ECO.2.4.x)."""
    problems: list[str] = []
    announced = headers.parse_codecda(_header(message, headers.X_MSS_CODECDA))
    ins_flag = headers.parse_ins_flag(_header(message, headers.X_MSS_INS))
    if package is None:
        if announced:
            problems.append(f"{headers.X_MSS_CODECDA} announces CDA documents but no {XDM_FILENAME}")
        return problems
    codes = xdm.package_cda_codes(package)
    if codes and set(announced) != set(codes):
        problems.append(
            f"{headers.X_MSS_CODECDA} says {','.join(announced) or 'nothing'}, "
            f"the CDA headers say {','.join(codes)}"
        )
    if codes and ins_flag is None:
        problems.append(f"{headers.X_MSS_INS} is missing or unreadable although CDA documents travel")
    elif codes and ins_flag != package.ins_qualified:
        problems.append(
            f"{headers.X_MSS_INS} says {'O' if ins_flag else 'N'} but the package "
            f"{'holds' if package.ins_qualified else 'does not hold'} a qualified INS"
        )
    try:
        fields = headers.parse_document_subject(subject, patient=package.patient)
    except headers.SubjectError as error:
        problems.append(str(error))
    else:
        if fields is None:
            problems.append(f"the subject does not start with {headers.SUBJECT_MARKER} (ECO.2.1.3)")
        elif package.patient is not None and not _names_agree(fields, package.patient):
            problems.append(
                f"the subject names {fields.family_name} {fields.given_name}, the package "
                f"{package.patient.birth_name} {package.patient.given_name}"
            )
    return problems


def _names_agree(fields: headers.DocumentSubject, patient: Patient) -> bool:
    """Same birth name and given name, ignoring case and accents (senders differ on both)."""

    def key(text: str) -> str:
        # Upper case first: "ı".upper() is "I", which is what the sender wrote for NOM.
        return headers.strip_accents(text).upper().casefold().strip()

    family = headers.subject_family_name(patient.birth_name)
    given = headers.subject_given_name(patient.given_name)
    return key(fields.family_name) == key(family) and key(fields.given_name) == key(given)


def _header(message: EmailMessage, name: str) -> str | None:
    return header_fields.text(message, name)


@dataclass(frozen=True, slots=True)
class Authors:
    """Who a message says wrote it: every From field (RFC 5322 § 3.6.2 allows one) and every Sender."""

    from_fields: int
    from_addresses: tuple[str, ...]
    sender_addresses: tuple[str, ...]


def read_authors(data: bytes) -> Authors:
    """The authors a message's header names, however many fields and addresses it has.

    ``MessageRecord.author`` is the first From address only; a check of who may write must see them all.
    Reads the header block alone, so it costs little beside the full parse.
    """
    return _authors(BytesParser(policy=READ_POLICY).parsebytes(headers.header_block(data), headersonly=True))


def _authors(fields: Message) -> Authors:
    froms = header_fields.all_addresses(fields, "From")
    senders = header_fields.all_addresses(fields, "Sender")
    return Authors(
        len(froms),
        tuple(m.address for found in froms for m in _mailboxes(found)),
        tuple(m.address for found in senders for m in _mailboxes(found)),
    )


def _addresses(message: EmailMessage, name: str) -> list[Mailbox]:
    found = header_fields.addresses(message, name)
    return [] if found is None else _mailboxes(found)


def _mailboxes(found: tuple[Address, ...]) -> list[Mailbox]:
    mailboxes: list[Mailbox] = []
    for address in found:
        if address.username or address.domain:
            mailboxes.append(from_header_address(address))
    return mailboxes


def _first(mailboxes: list[Mailbox]) -> Mailbox | None:
    return mailboxes[0] if mailboxes else None


def _first_id(value: object) -> str | None:
    if value is None:
        return None
    found = _MSG_ID.findall(str(value))
    if found:
        return str(found[0])
    text = str(value).strip()
    return text or None


def _date(message: EmailMessage) -> datetime | None:
    moment = header_fields.date(message, "Date")
    if moment is not None and moment.tzinfo is None:
        # RFC 5322 § 3.3: "-0000" means UTC with no information about the local zone.
        moment = moment.replace(tzinfo=UTC)
    return moment


def _body(message: EmailMessage) -> tuple[MIMEPart | None, list[Message]]:
    """The plain-text body, and the parts that only render it differently (its HTML alternatives)."""
    plain = message.get_body(preferencelist=("plain",))
    if plain is None:
        return None, []
    skipped: list[Message] = [plain]
    for container in message.walk():
        if container.get_content_type() == "multipart/alternative" and _contains(container, plain):
            skipped.extend(part for part in container.walk() if part is not container)
    return plain, skipped


def _contains(container: Message, target: Message) -> bool:
    return any(part is target for part in container.walk())


def _leaves(message: Message) -> list[Message]:
    """Leaf parts in document order; a message/rfc822 part is one leaf (a forwarded mail)."""
    leaves: list[Message] = []
    stack: list[Message] = [message]
    while stack:
        part = stack.pop()
        if part.get_content_maintype() == "multipart":
            stack.extend(reversed(_children(part)))
        else:
            leaves.append(part)
    return leaves


def _body_text(part: MIMEPart) -> str:
    return canonical_body(_text(part))


def _text(part: MIMEPart) -> str:
    try:
        content = part.get_content()
    except LookupError:
        # An unknown charset: the bytes are still shown rather than the body lost.
        raw = part.get_payload(decode=True)
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else ""
    return content if isinstance(content, str) else ""


def _content(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        # A delivery status is parsed as one block per message then per recipient: all of them are the
        # content, not only the first.
        return b"".join(inner.as_bytes(policy=READ_POLICY) for inner in _children(part))
    payload = part.get_payload()
    if isinstance(payload, str) and str(part.get("content-transfer-encoding", "")).lower() == "base64":
        # What the email package decodes, without its copies (the text as bytes, split into lines and
        # joined again: 4.5 times an attachment's size; issue 11): binascii skips the line ends and
        # reads ASCII text in place. Anything it refuses (no padding, 8-bit text) is left to the
        # email package, whose lenient decoding gives the same bytes whenever binascii succeeds.
        with contextlib.suppress(ValueError):
            return binascii.a2b_base64(payload)
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def safe_filename(name: str | None, index: int, content_type: str) -> str:
    """A bare file name from an untrusted one: no directory part, no control character, never empty."""
    name = (name or "").replace("\\", "/").rpartition("/")[2]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp")).strip()
    if name in ("", ".", ".."):
        name = f"{_UNNAMED.get(content_type, 'attachment')}-{index}{_EXTENSIONS.get(content_type, '.bin')}"
    return name


def _attachment(part: Message, index: int) -> Attachment:
    content_type = part.get_content_type()
    return Attachment(
        filename=safe_filename(part.get_filename(), index, content_type),
        content_type=content_type,
        content=_content(part),
    )

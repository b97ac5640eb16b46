"""Pure IMAP text helpers for the bridge: reading FETCH, SELECT and SEARCH responses as aioimaplib hands
them over, writing UID sets and mailbox names, cutting UIDs into bounded fetches, and the envelope sender of
a fetched message.

No I/O here. aioimaplib gives a response as a list of lines (``bytes``) with each literal as a separate
``bytearray`` item right after the line that announced it; the last item is the tagged reply's text.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import parseaddr

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_BODY_LITERAL = re.compile(rb"BODY\[\] \{\d+\}$")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message of a FETCH response: its UID, and its size and body when they were asked for."""

    uid: int
    size: int | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Mailbox:
    """What SELECT says about a folder; ``uidnext`` is None when the server did not say."""

    uidvalidity: int
    uidnext: int | None


def parse_fetch(lines: Sequence[bytes | bytearray]) -> list[Fetched]:
    """The messages of a FETCH response, in the order the server sent them (unsolicited FETCHes without
    a UID, such as flag changes, are skipped)."""
    found: list[Fetched] = []
    text = b""
    body: bytes | None = None
    started = False
    expect_body = False

    def close() -> None:
        uid = _UID.search(text)
        if started and uid is not None:
            size = _SIZE.search(text)
            found.append(Fetched(int(uid.group(1)), int(size.group(1)) if size else None, body))

    for item in lines[:-1]:
        if isinstance(item, bytearray):
            if expect_body:
                body = bytes(item)
            expect_body = False
            continue
        if _FETCH_START.match(item):
            close()
            text, body, started = item, None, True
        else:
            text += b" " + item
        expect_body = _BODY_LITERAL.search(item) is not None
    close()
    return found


def parse_select(lines: Sequence[bytes | bytearray]) -> Mailbox:
    """UIDVALIDITY and UIDNEXT from a SELECT response; raises ValueError without UIDVALIDITY."""
    uidvalidity = uidnext = None
    for line in lines:
        if isinstance(line, bytearray):
            continue
        if (match := _UIDVALIDITY.search(line)) is not None:
            uidvalidity = int(match.group(1))
        if (match := _UIDNEXT.search(line)) is not None:
            uidnext = int(match.group(1))
    if uidvalidity is None:
        raise ValueError("the server gave no UIDVALIDITY for the folder")
    return Mailbox(uidvalidity, uidnext)


def parse_search(lines: Sequence[bytes | bytearray]) -> list[int]:
    """The numbers of a SEARCH response, sorted (aioimaplib strips the ``SEARCH`` word, or not)."""
    numbers: list[int] = []
    for line in lines[:-1]:
        if isinstance(line, bytes):
            numbers.extend(int(n) for n in line.removeprefix(b"SEARCH").split() if n.isdigit())
    return sorted(numbers)


def uid_ranges(uids: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs of the given UIDs, as (first, last) pairs in ascending order."""
    runs: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if runs and uid == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], uid)
        else:
            runs.append((uid, uid))
    return runs


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set (RFC 3501 §9) naming exactly these UIDs, e.g. ``3:5,9``."""
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in uid_ranges(uids))


def mailbox_name(name: str) -> str:
    """A folder name as a command argument: modified UTF-7 (RFC 3501 §5.1.3), quoted when needed."""
    encoded = []
    pending = ""

    def flush() -> None:
        nonlocal pending
        if pending:
            b64 = base64.b64encode(pending.encode("utf-16-be")).decode("ascii")
            encoded.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            pending = ""

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            encoded.append("&-" if char == "&" else char)
        else:
            pending += char
    flush()
    text = "".join(encoded)
    if text and not re.search(r'[\s"\\(){%*\]]', text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def size_groups(uids: list[int], sizes: dict[int, int | None], limit: int) -> Iterator[list[int]]:
    """Groups of UIDs whose bodies add up to at most ``limit`` bytes (a bigger message goes alone)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid) or 0
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def envelope_sender(raw: bytes) -> str:
    """The Return-Path the delivering server wrote (the SMTP envelope sender), or "" when absent."""
    end = _HEADER_END.search(raw)
    head = raw[: end.end()] if end else raw
    value = BytesHeaderParser().parsebytes(head).get("Return-Path")
    if value is None:
        return ""
    return parseaddr(str(value))[1]

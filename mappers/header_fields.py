"""Header fields of a parsed message read as ``Message.get`` would, without its cost for plain values.

``EmailMessage.get`` builds a header class and runs the email package's structured parser on each call:
about 100 µs for ``From: <a@b.example>``, over a third of reading a 1 KiB message into a record (issue 16).
Most fields received are plain: an address list of ``local@domain`` or ``Name <local@domain>``, a date,
unstructured ASCII without encoded words. For those, the result the parser would give is written down
directly; anything else (quotes, comments, encoded words, groups, obsolete syntax, non-ASCII) goes to
the parser as before. The property tests in ``tests/unit/mappers/test_header_fields.py`` hold every
function here to the parser's own result.

Only fields whose class in the message's header registry is known here take a shortcut, so a registry
that maps a name elsewhere (``mappers.wire.READ_POLICY`` adds Disposition-Notification-To as addresses)
is followed, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from email.headerregistry import (
    Address,
    AddressHeader,
    DateHeader,
    HeaderRegistry,
    MessageIDHeader,
    UnstructuredHeader,
)
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# One list item: "local@domain", "<local@domain>" or "Name Words <local@domain>", blanks around.
_PLAIN_ADDRESS = re.compile(
    rf"[ \t]*(?:(?:(?P<name>{_ATEXT}+(?: {_ATEXT}+)*)[ \t]*)?<(?P<local>{_DOT_ATOM})@(?P<domain>{_DOT_ATOM})>"
    rf"|(?P<bare_local>{_DOT_ATOM})@(?P<bare_domain>{_DOT_ATOM}))[ \t]*"
)
_PLAIN_ANGLE_ADDR = re.compile(rf"[ \t]*<({_DOT_ATOM}@{_DOT_ATOM})>[ \t]*")
_PLAIN_TEXT = re.compile(r"[\x20-\x7e\t]*")
_PLAIN_ID = re.compile(rf"[ \t]*<{_DOT_ATOM}@{_DOT_ATOM}>[ \t]*")


def _values(message: Message, name: str) -> Iterator[tuple[str, Any]]:
    """The fields named ``name`` (any case), as stored: what ``Message.get``/``get_all`` hand on."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            yield key, value


def _kind(message: Message, name: str) -> type | None:
    """The header class the message's policy parses ``name`` with, when it is a ``HeaderRegistry``."""
    factory = getattr(message.policy, "header_factory", None)
    if not isinstance(factory, HeaderRegistry):
        return None
    kind: type = factory.registry.get(name.lower(), factory.default_class)
    return kind


def _unfolded(value: object) -> str | None:
    """The value as ``EmailPolicy.header_fetch_parse`` gives it to the parser, if stored as text."""
    if not isinstance(value, str) or hasattr(value, "name"):
        return None
    return value.replace("\r", "").replace("\n", "")


def plain_addresses(value: str) -> tuple[Address, ...] | None:
    """The addresses of an address-list value made of plain items only, else None (ask the parser)."""
    if "=?" in value:
        return None  # a display name may hold encoded words, which the parser decodes
    found: list[Address] = []
    for item in value.split(","):
        match = _PLAIN_ADDRESS.fullmatch(item)
        if match is None:
            return None
        local, domain = match["local"], match["domain"]
        if local is None:
            found.append(Address("", match["bare_local"], match["bare_domain"]))
        else:
            found.append(Address(match["name"] or "", local, domain))
    return tuple(found)


def plain_angle_addr(value: str) -> tuple[str, str] | None:
    """The addr-spec and the rest of a value starting with a plain ``<local@domain>``, as the email
    package's ``get_angle_addr`` reads them (blanks after ``>`` are its trailing CFWS), else None.

    aiosmtpd reads the path of MAIL, RCPT and VRFY with ``get_angle_addr``; ``GatewaySMTP._getaddr``
    asks this first.
    """
    match = _PLAIN_ANGLE_ADDR.match(value)
    if match is None:
        return None
    rest = value[match.end() :]
    if rest[:1].isspace() or rest.startswith("("):
        return None  # other white space (CR, NBSP…) and comments are CFWS to the parser too
    return match[1], rest


def addresses(message: Message, name: str) -> tuple[Address, ...] | None:
    """``message.get(name).addresses`` (of the first field only), or None when there is no such field."""
    for key, value in _values(message, name):
        return _addresses(message, _kind(message, name), key, value)
    return None


def all_addresses(message: Message, name: str) -> list[tuple[Address, ...]]:
    """The ``addresses`` of every field named ``name`` (``message.get_all``), one tuple per field."""
    kind = _kind(message, name)
    return [_addresses(message, kind, key, value) for key, value in _values(message, name)]


def _addresses(message: Message, kind: type | None, key: str, value: Any) -> tuple[Address, ...]:
    text = _unfolded(value) if kind is not None and issubclass(kind, AddressHeader) else None
    found = None if text is None else plain_addresses(text)
    if found is not None:
        return found
    parsed: tuple[Address, ...] = getattr(message.policy.header_fetch_parse(key, value), "addresses", ())
    return parsed


def date(message: Message, name: str) -> datetime | None:
    """``message.get(name).datetime`` (None when absent, empty or unreadable), by the same
    ``parsedate_to_datetime`` the ``DateHeader`` calls, without building the header around it."""
    for key, value in _values(message, name):
        kind = _kind(message, name)
        text = _unfolded(value) if kind is not None and issubclass(kind, DateHeader) else None
        if text is None:
            moment: datetime | None = getattr(message.policy.header_fetch_parse(key, value), "datetime", None)
            return moment
        if not text:
            return None
        try:
            return parsedate_to_datetime(text)
        except ValueError:
            return None
    return None


def text(message: Message, name: str) -> str | None:
    """``str(message.get(name))``, or None when absent. Unstructured printable ASCII without encoded words,
    and a Message-ID that is one plain ``<left@right>``, read as themselves; any other value is parsed
    (decoded, its surrogates replaced)."""
    for key, value in _values(message, name):
        unfolded = _unfolded(value)
        if unfolded is not None and _reads_as_itself(_kind(message, name), unfolded):
            return unfolded
        return str(message.policy.header_fetch_parse(key, value))
    return None


def _reads_as_itself(kind: type | None, value: str) -> bool:
    if kind is None:
        return False
    if issubclass(kind, UnstructuredHeader):
        return "=?" not in value and _PLAIN_TEXT.fullmatch(value) is not None
    return issubclass(kind, MessageIDHeader) and _PLAIN_ID.fullmatch(value) is not None

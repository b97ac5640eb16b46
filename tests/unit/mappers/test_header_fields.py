"""``mappers.header_fields`` reads every field as ``EmailMessage.get`` does: property tests against the email
package's own parse, for plain values, near misses and anything at all, and for the record intake makes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email._header_value_parser import get_angle_addr
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from functools import partial
from typing import cast

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mappers import header_fields
from mappers.addresses import from_header_address
from mappers.errors import MappingError
from mappers.mime_parse import parse_message, parse_with_authors, read_authors
from mappers.records import Mailbox
from mappers.wire import READ_POLICY

_ADDRESS_FIELDS = ("From", "To", "Cc", "Sender", "Reply-To", "Disposition-Notification-To")
_TEXT_FIELDS = ("Subject", "Message-ID", "In-Reply-To", "References", "X-MSS-INS", "Comments")

_atom = st.text(alphabet="abzAZ09!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=5)
_dot_atom = st.lists(_atom, min_size=1, max_size=3).map(".".join)
_blank = st.sampled_from(["", " ", "\t", "  ", " \t "])
_addr_spec = st.builds("{}@{}".format, _dot_atom, _dot_atom)
_plain_item = st.one_of(
    st.builds("{}{}{}".format, _blank, _addr_spec, _blank),
    st.builds("{}<{}>{}".format, _blank, _addr_spec, _blank),
    st.builds(
        "{}{}{}<{}>{}".format,
        _blank,
        st.lists(_atom, min_size=1, max_size=3).map(" ".join),
        _blank,
        _addr_spec,
        _blank,
    ),
)
# Pieces that leave the plain forms: quotes, comments, encoded words, groups, routes, 8-bit, folds, dots.
_odd = st.sampled_from(
    [
        '"',
        "\\",
        "(c)",
        "=?utf-8?q?=C3=A9?=",
        "g:",
        ";",
        "@",
        "<",
        ">",
        ",",
        "..",
        ".",
        "é",
        "\r\n ",
        "[1.2.3.4]",
        "  ",
    ]
)
_near_plain = st.lists(st.one_of(_plain_item, _odd, _atom), min_size=1, max_size=6).map("".join)
_address_value = st.one_of(
    st.lists(_plain_item, min_size=1, max_size=4).map(",".join), _near_plain, st.text(max_size=30)
)
_date_value = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(format_datetime),
    st.datetimes().map(lambda d: format_datetime(d).replace("-0000", "+0100")),
    st.builds("{}{}".format, st.datetimes(timezones=st.just(UTC)).map(format_datetime), _odd),
    st.text(max_size=30),
)
_text_value = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), max_size=40),
    st.builds("{}<{}>{}".format, _blank, _addr_spec, _blank),
    _near_plain,
    st.text(max_size=30),
)


def _outcome(read: Callable[[], object]) -> object:
    """What ``read`` returns, or the type of what it raises (the email package raises on some values)."""
    try:
        return read()
    except Exception as error:  # noqa: BLE001 - compared, not handled
        return type(error)


def _octets(fields: list[tuple[str, str]]) -> bytes:
    """A message with ``fields`` (8-bit written as UTF-8; a value with a line break but a fold dropped)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in fields if "\n" not in value.replace("\r\n ", ""))
    return head.encode("utf-8", "surrogateescape") + b"\r\nbody\r\n"


def _parsed(fields: list[tuple[str, str]]) -> EmailMessage:
    """The message as intake's parser stores it."""
    return BytesParser(policy=READ_POLICY).parsebytes(_octets(fields))


@settings(deadline=None)
@given(_address_value)
@example("Jean Dupont <jean@a.example>")
@example("a@b.example, <c@d.example>,e@f.example")
@example("=?utf-8?q?Jean?= <j@a.example>")
def test_plain_addresses_are_what_the_parser_finds(value: str) -> None:
    found = header_fields.plain_addresses(value.replace("\r\n", ""))
    if found is not None:
        assert found == READ_POLICY.header_factory("To", value.replace("\r\n", "")).addresses


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_ADDRESS_FIELDS), _address_value), max_size=5))
def test_address_fields_read_as_get_reads_them(fields: list[tuple[str, str]]) -> None:
    message = _parsed(fields)
    for name in _ADDRESS_FIELDS:

        def by_get(name: str = name) -> object:
            header = message.get(name)
            return None if header is None else getattr(header, "addresses", ())

        def by_get_all(name: str = name) -> object:
            return [getattr(h, "addresses", ()) for h in message.get_all(name) or []]

        assert _outcome(partial(header_fields.addresses, message, name)) == _outcome(by_get)
        assert _outcome(partial(header_fields.all_addresses, message, name)) == _outcome(by_get_all)


@settings(max_examples=300, deadline=None)
@given(st.lists(_date_value, max_size=2))
@example(["Mon, 7 Dec 2026 12:00:00 -0000"])
@example([""])
def test_a_date_reads_as_get_reads_it(values: list[str]) -> None:
    message = _parsed([("Date", value) for value in values])

    def by_get() -> datetime | None:
        header = message.get("Date")
        return None if header is None else cast(datetime | None, header.datetime)

    assert _outcome(lambda: header_fields.date(message, "Date")) == _outcome(by_get)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_TEXT_FIELDS), _text_value), max_size=5))
@example([("Message-ID", " <a.b@c.example> ")])
@example([("Subject", "=?utf-8?q?caf=C3=A9?=")])
def test_text_fields_read_as_get_reads_them(fields: list[tuple[str, str]]) -> None:
    message = _parsed(fields)
    for name in _TEXT_FIELDS:

        def by_get(name: str = name) -> str | None:
            header = message.get(name)
            return None if header is None else str(header)

        assert _outcome(partial(header_fields.text, message, name)) == _outcome(by_get)


def _record_the_old_way(data: bytes) -> dict[str, object]:
    """The header-made fields of the record as ``mime_parse`` read them with ``EmailMessage.get``."""
    message = BytesParser(policy=READ_POLICY).parsebytes(data)

    def addresses(name: str) -> list[str]:
        found = getattr(message.get(name), "addresses", ())
        mailboxes = [from_header_address(a) for a in found if a.username or a.domain]
        return [f"{m.display_name}|{m.address}" for m in mailboxes]

    header = message.get("Date")
    moment = getattr(header, "datetime", None) if header is not None else None
    return {
        "author": addresses("From")[:1],
        "to": addresses("To"),
        "cc": addresses("Cc"),
        "sender": addresses("Sender")[:1],
        "reply_to": addresses("Reply-To")[:1],
        "dnt": addresses("Disposition-Notification-To")[:1],
        "subject": str(message.get("Subject", "") or ""),
        "date": moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC),
        "references": str(message.get("References", "") or ""),
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_ADDRESS_FIELDS), _address_value), min_size=1, max_size=4),
    st.lists(
        st.tuples(st.sampled_from(("Subject", "References", "Date")), _text_value | _date_value), max_size=3
    ),
)
def test_the_record_is_what_the_email_packages_get_gives(
    addresses: list[tuple[str, str]], others: list[tuple[str, str]]
) -> None:
    data = _octets([*addresses, *others])
    try:
        expected = _record_the_old_way(data)
    except Exception:  # noqa: BLE001 - refused either way: parse_message says so with a MimeError
        expected = None
    try:
        record = parse_message(data)
    except MappingError:
        assert expected is None or not expected["author"]
        return
    assert expected is not None

    def shown(mailboxes: object) -> list[str]:
        return [
            f"{m.display_name}|{m.address}"
            for m in cast(tuple[Mailbox | None, ...], mailboxes)
            if m is not None
        ]

    assert shown((record.author,)) == expected["author"]
    assert shown(record.to) == expected["to"]
    assert shown(record.cc) == expected["cc"]
    assert shown((record.on_behalf_of,)) == expected["sender"]
    assert shown((record.reply_to,)) == expected["reply_to"]
    assert shown((record.disposition_notification_to,)) == expected["dnt"]
    assert record.subject == expected["subject"]
    assert record.date == expected["date"]
    authors = read_authors(data)
    message = BytesParser(policy=READ_POLICY).parsebytes(data)
    assert authors.from_fields == len(message.get_all("From") or [])
    assert parse_with_authors(data) == (record, authors)


_path_value = st.one_of(
    st.builds(
        "{}<{}>{}".format, _blank, _addr_spec, st.one_of(_blank, _odd, st.just(" SIZE=123 BODY=8BITMIME"))
    ),
    st.builds("{}{}".format, _near_plain, st.text(max_size=10)),
    st.text(max_size=30),
)


@settings(deadline=None)
@given(_path_value)
@example("<a@b.example> SIZE=1")
@example("<a@b.example> (comment) SIZE=1")
@example("<a@b.example>SIZE=1")
def test_a_plain_path_is_read_as_get_angle_addr_reads_it(value: str) -> None:
    found = header_fields.plain_angle_addr(value)
    if found is not None:
        token, rest = get_angle_addr(value)
        assert found == (token.addr_spec, rest)

"""The parse's fast paths against what they replace: the same boundaries and delimiter lines as the
regexes, and the same record as a full parse by the email package, for arbitrary mail (issue 16)."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mappers import mime_parse
from mappers.errors import MappingError
from mappers.mime_parse import DEFAULT_LIMITS, dash_lines, declared_boundaries, parse_message

_BOUNDARY_PARAM = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"^--([^\r\n]{1,202})", re.MULTILINE)

_LINE_ENDS = [b"\r\n", b"\r", b"\n"]
_TEXT = st.sampled_from(
    [*_LINE_ENDS, b"a", b"b" * 70, b"-", b"--", b"--b", b"--b--", b".", b" ", b"\t", b"\xe9", b"\x00"]
    + [b"boundary=b", b'BoUnDaRy="b c"', b"boundary = ", b"boundary=boundary=x", b"From x", b":"]
)
_FIELDS = st.sampled_from(
    [
        b"From: a@b.example",
        b"From: =?utf-8?q?=C3=A9?= <a@b.example>",
        b"To: c@d.example",
        b"Subject: x",
        b" continued",
        b"\tcontinued",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Type: text/plain; charset=nonesuch",
        b"Content-Type: text/html",
        b"Content-Type: application/pdf; name=x.pdf",
        b"Content-Type: multipart/mixed; boundary=b",
        b'Content-Type: multipart/alternative; boundary="b"',
        b"Content-Type: message/rfc822",
        b"Content-Type: bogus",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename=IHE_XDM.zip",
        b"From x@y Mon Dec  7 12:00:00 2026",
        b"not a field",
        b"X-\xe9: y",
        b"",
    ]
)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(st.tuples(_FIELDS, st.sampled_from(_LINE_ENDS)), max_size=8))
    header = b"".join(field + end for field, end in fields)
    separator = draw(st.sampled_from([*_LINE_ENDS, b""]))
    body = b"".join(draw(st.lists(_TEXT, max_size=40)))
    return header + separator + body


def _outcome(parse: object, data: bytes) -> object:
    try:
        return parse(data)  # type: ignore[operator]
    except MappingError as error:
        return type(error), str(error)


def _full_parse(data: bytes) -> object:
    """``parse_message`` as it was: every message through the email package's parser whole."""
    if len(data) > DEFAULT_LIMITS.max_bytes:
        return parse_message(data)
    mime_parse._count_lines(data, DEFAULT_LIMITS)
    mime_parse._prescan(data, DEFAULT_LIMITS)
    message = mime_parse._fed(data)
    mime_parse._check_structure(message, DEFAULT_LIMITS)
    return mime_parse._to_record(message, DEFAULT_LIMITS)


@settings(max_examples=500)
@given(st.lists(_TEXT, max_size=60).map(b"".join))
@example(b'boundary="boundary=x"')
def test_boundaries_are_those_the_regex_finds(data: bytes) -> None:
    assert declared_boundaries(data) == {q or b for q, b in _BOUNDARY_PARAM.findall(data)}


@settings(max_examples=500)
@given(st.lists(_TEXT, max_size=60).map(b"".join))
@example(b"--" + b"x" * 300 + b"\r\n--\r\n--y")
def test_delimiter_lines_are_those_the_regex_finds(data: bytes) -> None:
    assert list(dash_lines(data)) == _DELIMITER_LINE.findall(data)


@settings(max_examples=1000, deadline=None)
@given(_messages())
@example(b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\n.line\r\n\r\nlast\r")
@example(b"From: a@b.example\nnot a field\n\nbody")
@example(b"From: a@b.example\r\n")
def test_a_leaf_read_by_its_header_gives_the_record_of_a_full_parse(data: bytes) -> None:
    fast = _outcome(parse_message, data)
    assert fast == _outcome(_full_parse, data)


@settings(max_examples=500, deadline=None)
@given(_messages())
def test_the_fast_tree_holds_the_same_fields_and_payload(data: bytes) -> None:
    fast, full = mime_parse._parsed(data, DEFAULT_LIMITS), mime_parse._fed(data)
    assert list(fast.raw_items()) == list(full.raw_items())
    assert fast.get_unixfrom() == full.get_unixfrom()
    assert fast.is_multipart() == full.is_multipart()
    if not full.is_multipart():
        assert fast.get_payload() == full.get_payload()

    def flattened(message: object) -> object:
        try:
            return message.as_bytes()  # type: ignore[attr-defined]
        except UnicodeError as error:  # the email package's own, for a multipart with 8-bit preamble
            return str(error)

    assert flattened(fast) == flattened(full)

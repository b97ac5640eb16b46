"""The listener's whole-message checks after DATA, against the plain regex meaning they replace: a line
longer than the limit (CRLF counted), a bare CR or LF. Fast paths must say exactly what the slow ones did."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inbound.smtp_server import _long_line
from mappers import wire

_PIECES = st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"a" * 7, b"."])
_DATA = st.lists(_PIECES, max_size=60).map(b"".join)


@settings(max_examples=500)
@given(_DATA, st.integers(min_value=3, max_value=12))
def test_a_long_line_is_found_as_the_regex_finds_it(data: bytes, limit: int) -> None:
    expected = re.search(rb"(?m)^[^\r\n]{%d}" % (limit - 1), data) is not None
    assert _long_line(data, limit, bare_line_end=wire.has_bare_line_end(data)) is expected


@settings(max_examples=500)
@given(_DATA)
def test_a_bare_line_end_is_found_as_the_regex_finds_it(data: bytes) -> None:
    assert wire.has_bare_line_end(data) is (re.search(rb"(?<!\r)\n|\r(?!\n)", data) is not None)


_CRLF_LINES = st.lists(
    st.integers(min_value=0, max_value=1001).map(lambda n: b"a" * n + b"\r\n"), max_size=8
).map(b"".join)


@settings(max_examples=300)
@given(_CRLF_LINES, st.sampled_from([b"", b"a" * 998, b"a" * 999]), st.sampled_from([999, 1000, 1001]))
def test_a_long_crlf_line_is_found_as_the_regex_finds_it(data: bytes, tail: bytes, limit: int) -> None:
    # Lines around RFC 5321's 1000 octets, CRLF only: the path that jumps from window to window.
    data += tail
    expected = re.search(rb"(?m)^[^\r\n]{%d}" % (limit - 1), data) is not None
    assert _long_line(data, limit, bare_line_end=wire.has_bare_line_end(data)) is expected

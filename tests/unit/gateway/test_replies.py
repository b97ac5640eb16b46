"""The inbound replies: ASCII, a 3-digit code, an RFC 3463 enhanced code of the same class."""

from __future__ import annotations

import re

import pytest

from gateway.inbound import replies

NAMED = {k: v for k, v in vars(replies).items() if k.isupper() and isinstance(v, str)}
REPLY = re.compile(r"([245])\d\d ([245])\.\d{1,3}\.\d{1,3} \S")


@pytest.mark.parametrize("name", sorted(NAMED))
def test_every_reply_is_ascii_with_a_matching_enhanced_code(name: str) -> None:
    text = NAMED[name]
    text.encode("ascii")
    match = REPLY.match(text)
    assert match is not None and match.group(1) == match.group(2), text


def test_rewritten_aiosmtpd_replies_map_to_named_replies() -> None:
    assert set(replies.REWRITTEN.values()) <= set(NAMED.values())

"""ESMTP parameters of MAIL and RCPT: RFC 1870 SIZE, RFC 6152 BODY, RFC 3461 RET/ENVID and NOTIFY/ORCPT.

Pure parsing for the listeners (aiosmtpd refuses DSN parameters and upper-cases every value, which would
change ENVID and ORCPT). Values keep their case; a malformed or repeated parameter is a refusal reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.inbound import replies
from gateway.inbound.arrival import Recipient

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")  # RFC 3461 §4: printable ASCII except "+" and "="
_NOTIFY = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})
_MAX_ENVID = 100


@dataclass(frozen=True, slots=True)
class MailParameters:
    """What MAIL FROM asked for; ``size`` is the declared size (RFC 1870), if any."""

    envid: str | None = None
    ret: str | None = None
    size: int | None = None


def mail_parameters(params: str, size_limit: int) -> tuple[MailParameters, str | None]:
    """The parameters of MAIL FROM, or the refusal of the first bad one (or of a declared size too big)."""
    envid: str | None = None
    ret: str | None = None
    size: int | None = None
    for item in params.split():
        name, _, value = item.partition("=")
        name = name.upper()
        if name == "SIZE" and value.isdigit() and size is None:
            size = int(value)
            if size_limit and size > size_limit:
                return MailParameters(), replies.TOO_BIG.format(size_limit)
        elif name == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
            continue
        elif name == "RET" and value.upper() in ("FULL", "HDRS") and ret is None:
            ret = value.upper()
        elif name == "ENVID" and _XTEXT.fullmatch(value) and len(value) <= _MAX_ENVID and envid is None:
            envid = value
        else:
            return MailParameters(), replies.BAD_PARAMETER.format(item[:40])
    return MailParameters(envid, ret, size), None


def rcpt_parameters(address: str, params: str) -> tuple[Recipient, str | None]:
    """The recipient with its NOTIFY and ORCPT (ORCPT keeps its case: it is the original address)."""
    notify: str | None = None
    orcpt: str | None = None
    for item in params.split():
        name, _, value = item.partition("=")
        name = name.upper()
        words = set(value.upper().split(","))
        if (
            name == "NOTIFY"
            and notify is None
            and words <= _NOTIFY
            and ("NEVER" not in words or len(words) == 1)
        ):
            notify = value.upper()
        elif name == "ORCPT" and orcpt is None and ";" in value and _XTEXT.fullmatch(value.split(";", 1)[1]):
            orcpt = value
        else:
            return Recipient(address), replies.BAD_PARAMETER.format(item[:40])
    return Recipient(address, notify, orcpt), None

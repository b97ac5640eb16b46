"""DKIM verification of mail received from other operators, recorded as an RFC 8601 Authentication-Results.

dkimpy does the work in a worker thread; DNS goes through an injectable ``dnsfunc`` (dkimpy's seam) so tests
are offline. The result is a header prepended to the stored message and a verdict for the listener: with
``refuse``, a signature that fails is refused; a message without any signature is only recorded. A key that
cannot be fetched in time is ``temperror`` (RFC 8601 §2.7.1), which the listener answers with a ``451``:
dkimpy reports it as a plain failure, so the lookup is wrapped to tell the two apart.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import dkim
import dkim.dnsplug
import dns.exception

from mappers.headers import header_block

DnsFunc = Callable[..., bytes | None]
_TIMEOUTS = (dkim.DnsTimeoutError, dns.exception.Timeout, TimeoutError)

_SIGNATURE_TAG = re.compile(rb"(?:^|;)\s*([ds])\s*=\s*([^;\s]+)")
_quiet = logging.getLogger(__name__ + ".dkimpy")
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class DkimResult:
    """``pass``, ``fail``, ``temperror`` or ``none`` (RFC 8601 §2.7.1) and the signing domain, if any."""

    result: str
    domain: str | None = None
    selector: str | None = None

    def header(self, authserv_id: str) -> bytes:
        """The ``Authentication-Results`` field to prepend, with CRLF."""
        detail = ""
        if self.domain:
            detail = f" header.d={self.domain}" + (f" header.s={self.selector}" if self.selector else "")
        return f"Authentication-Results: {authserv_id}; dkim={self.result}{detail}\r\n".encode("ascii")


def claims_authserv_id(field: bytes, authserv_id: str) -> bool:
    """Whether a header field (its raw bytes) is an ``Authentication-Results`` naming ``authserv_id``:
    RFC 8601 § 5 has a receiver remove those that come from outside, since only it writes them."""
    name, colon, value = field.partition(b":")
    if not colon or name.strip().lower() != b"authentication-results":
        return False
    claimed = value.split(b";", 1)[0].split()
    return bool(claimed) and claimed[0].decode("ascii", "replace").lower() == authserv_id.lower()


class DkimVerifier:
    """Checks the first DKIM signature of a message; ``dnsfunc`` defaults to dkimpy's own DNS lookups."""

    def __init__(self, dnsfunc: DnsFunc | None = None) -> None:
        self.dnsfunc = dnsfunc

    async def check(self, raw: bytes) -> DkimResult:
        """Verify off the event loop."""
        return await asyncio.to_thread(self._check, raw)

    def _check(self, raw: bytes) -> DkimResult:
        signature = _signature_field(raw)
        if signature is None:
            return DkimResult("none")
        tags = {
            m.group(1).decode(): m.group(2).decode("ascii", "replace")
            for m in _SIGNATURE_TAG.finditer(signature)
        }
        lookup = self.dnsfunc or dkim.dnsplug.get_txt
        timed_out: list[BaseException] = []

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
            try:
                return lookup(name, timeout=timeout)
            except _TIMEOUTS as error:
                timed_out.append(error)
                raise dkim.DnsTimeoutError(str(error)) from error

        try:
            ok = dkim.verify(raw, logger=_quiet, dnsfunc=dnsfunc)
        except dkim.DKIMException:
            ok = False
        result = "temperror" if timed_out else "pass" if ok else "fail"
        return DkimResult(result, tags.get("d"), tags.get("s"))


def _signature_field(raw: bytes) -> bytes | None:
    """The unfolded value of the first DKIM-Signature header field, if the header block has one."""
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", header_block(raw))
    for line in unfolded.splitlines():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"dkim-signature":
            return value
    return None

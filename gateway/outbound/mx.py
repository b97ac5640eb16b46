"""MX look-up for operator mode (RFC 5321 §5.1), through dnspython's asynchronous resolver.

The resolver is injected so tests stay offline; an answer is a list of host names by preference.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

MxResolver = Callable[[str], Awaitable[list[str]]]


class MxLookupError(Exception):
    """The domain's mail hosts could not be found; ``permanent`` when the domain has none."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        self.permanent = permanent
        super().__init__(message)


async def resolve_mx(domain: str) -> list[str]:
    """Hosts to try for ``domain``, best preference first; the domain itself when it has no MX."""
    try:
        answer = await dns.asyncresolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN as error:
        raise MxLookupError(f"domain {domain} does not exist", permanent=True) from error
    except dns.resolver.NoAnswer:
        return [domain]
    except dns.exception.DNSException as error:
        raise MxLookupError(f"MX look-up for {domain} failed: {error}", permanent=False) from error
    records = sorted(answer, key=lambda r: (r.preference, str(r.exchange)))
    hosts = [str(r.exchange).rstrip(".") for r in records]
    if hosts == [""]:
        raise MxLookupError(f"domain {domain} accepts no mail (null MX)", permanent=True)
    return hosts

"""Which peer domains the operator listener trusts besides the official MSSanté list (``gateway.trust``).

The local list is ``inbound.trusted_domains`` plus an optional file (one domain per line, ``#`` comments;
``.suffix`` entries cover sub-domains): partners outside the official list, and test set-ups. Reading
happens at start and on reload, never per message; checking is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gateway.settings import InboundSettings


class DomainTrust(Protocol):
    """What the policy asks of a trust list (``gateway.trust.TrustList``, the official one, fits)."""

    def is_trusted(self, domain: str) -> bool:
        """Whether mail from ``domain`` may be accepted."""
        ...


class OfficialTrust(DomainTrust, Protocol):
    """The official list (``gateway.trust.TrustList``): until one is loaded its domains are empty, and it
    cannot tell an MSSante domain from any other."""

    @property
    def domains(self) -> frozenset[str]: ...


class StaticTrustList:
    """The local trust list held in memory: exact domains and ``.suffix`` entries."""

    def __init__(self, domains: Iterable[str]) -> None:
        cleaned = {d.strip().lower().rstrip(".") for d in domains if d.strip()}
        self.exact = frozenset(d for d in cleaned if not d.startswith("."))
        self.suffixes = tuple(sorted(d for d in cleaned if d.startswith(".")))

    def is_trusted(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return domain in self.exact or any(domain.endswith(suffix) for suffix in self.suffixes)


def load_trust_list(inbound: InboundSettings) -> StaticTrustList:
    """The configured domains and the file's (raises OSError when the file cannot be read)."""
    domains = list(inbound.trusted_domains)
    if inbound.trust_list_file is not None:
        domains.extend(_read_lines(inbound.trust_list_file))
    return StaticTrustList(domains)


def _read_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]

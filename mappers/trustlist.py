"""The MSSanté "liste blanche": parse the XML the ANS publishes into a set of normalised domain names.

Pure: bytes in, domains out (MSSANTE.md §3.3: ``//n:Domaine/n:Nom`` in the namespace below). The gateway
(``gateway.trust``) fetches, stores and refreshes the list; this module never opens a file or a socket, and
refuses a list that is malformed or empty rather than let it replace a good one.

Public API (stable):
    NAMESPACE: str
    normalise_domain(name: str) -> str                 # IDNA A-label, lower case; raises TrustListError
    parse_trust_list(data: bytes) -> ParsedTrustList   # raises TrustListError
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mappers.errors import MappingError
from mappers.safe_xml import XmlError, parse_xml

NAMESPACE: Final = "https://listeblanche.mssante.fr/schema"
_DOMAIN: Final = f"{{{NAMESPACE}}}Domaine"
_NAME: Final = f"{{{NAMESPACE}}}Nom"
_MAX_DOMAIN: Final = 253  # RFC 1035 §2.3.4, without the root dot
_ASCII_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ASCII_DOMAIN: Final = re.compile(rf"(?:{_ASCII_LABEL}\.)+{_ASCII_LABEL}")
"""Two or more labels ``_is_label`` accepts, in ASCII lower case."""


class TrustListError(MappingError):
    """A trust list (or a domain name) that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class ParsedTrustList:
    """The domains of a list (normalised, de-duplicated) and the entries that were not domain names."""

    domains: frozenset[str]
    rejected: tuple[str, ...] = ()


def normalise_domain(name: str) -> str:
    """The form domains are compared in: IDNA A-labels (``xn--…``), lower case, no trailing dot.

    Some operators' domains carry accents (MSSANTE.md §3.3), and a peer may write either form, so
    ``hôpital.fr``, ``HÔPITAL.FR.`` and ``xn--hpital-sua.fr`` all compare equal.
    """
    text = name.strip().rstrip(".")
    if text.isascii() and len(text) <= _MAX_DOMAIN and _ASCII_DOMAIN.fullmatch(lowered := text.lower()):
        # What the steps below make of an ASCII name they accept (IDNA leaves it as it is), at a tenth of
        # the cost: every recipient leaving for a peer is looked up (issue 16).
        return lowered
    if not text or any(ch.isspace() for ch in text):
        raise TrustListError(f"{name!r} is not a domain name")
    try:
        ascii_form = text.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        raise TrustListError(f"{name!r} is not a domain name ({error})") from error
    labels = ascii_form.split(".")
    if len(ascii_form) > _MAX_DOMAIN or len(labels) < 2 or not all(_is_label(label) for label in labels):
        raise TrustListError(f"{name!r} is not a domain name")
    return ascii_form


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(ch.isalnum() or ch == "-" for ch in label)
    )


def parse_trust_list(data: bytes) -> ParsedTrustList:
    """The domains listed in the XML; refuses XML that is unsafe or malformed, or lists no domain."""
    try:
        root = parse_xml(data, what="the trust list")
    except XmlError as error:
        raise TrustListError(str(error)) from error
    domains: set[str] = set()
    rejected: list[str] = []
    entries = 0
    for entry in root.iter(_DOMAIN):
        for name in entry.iter(_NAME):
            entries += 1
            try:
                domains.add(normalise_domain(name.text or ""))
            except TrustListError:
                rejected.append((name.text or "").strip())
    if not domains:
        found = f"{entries} entries, none a domain name" if entries else "no Domaine/Nom entry"
        raise TrustListError(
            f"the trust list is empty ({found} in namespace {NAMESPACE}): refused, the last good copy stays"
        )
    return ParsedTrustList(frozenset(domains), tuple(rejected))

"""Mailboxes of the store record ⇄ RFC 5322 address objects, checked on the way out.

Shared by ``mappers.mime`` (building) and ``mappers.mime_parse`` (parsing). Outgoing addresses from the
store are refused when they could smuggle a header or are not plain ASCII addr-specs; incoming ones are
taken as the email package parsed them. Never resolves a domain or looks anything up.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address

from mappers.errors import MappingError
from mappers.headers import check_header_value
from mappers.records import Mailbox

# RFC 5322 § 3.4.1 dot-atom local part and a DNS host name; MSSanté addresses are plain ASCII
# (no SMTPUTF8 in the operators' requirements), so anything else is refused before it reaches a peer.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = rf"{_ATEXT}(?:\.{_ATEXT})*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_ADDR_SPEC = re.compile(rf"{_LOCAL}@{_DOMAIN}")
_MAX_ADDRESS = 254  # RFC 5321 § 4.5.3.1.3 (path limit minus the angle brackets)


class AddressError(MappingError):
    """An address from the store that cannot be written into a header as it is."""


def check_address(address: str, *, field: str = "address") -> str:
    """Return ``address`` if it is a plain ASCII addr-spec, so a peer never sees a malformed path."""
    check_header_value(address, field=field)
    if len(address) > _MAX_ADDRESS:
        raise AddressError(f"{field}: address longer than {_MAX_ADDRESS} characters")
    if _ADDR_SPEC.fullmatch(address) is None:
        raise AddressError(f"{field}: {address!r} is not a valid mail address (local-part@domain)")
    return address


def canonical_display_name(display_name: str) -> str:
    """The display name as readers give it back: no white space at the ends, single spaces inside.

    RFC 5322 § 3.2.2 folds the white space of a phrase to one space, and readers (Python's among
    them) also trim Unicode spaces such as U+00A0 at the ends; sending this form keeps what is sent
    and what is read back equal.
    """
    return " ".join(display_name.split())


def to_header_address(mailbox: Mailbox, *, field: str = "address") -> Address:
    """Turn a store mailbox into an ``Address`` the email package will quote and encode correctly."""
    check_address(mailbox.address, field=field)
    check_header_value(mailbox.display_name, field=f"{field} display name")
    display_name = canonical_display_name(mailbox.display_name)
    local, _, domain = mailbox.address.rpartition("@")
    return Address(display_name=display_name, username=local, domain=domain)


def from_header_address(address: Address) -> Mailbox:
    """Turn a parsed ``Address`` back into a store mailbox, keeping what the sender wrote."""
    try:
        addr_spec = address.addr_spec
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise AddressError(f"unreadable address {address!s}: {exc}") from exc
    return Mailbox(address=addr_spec, display_name=address.display_name)


def same_address(left: str, right: str) -> bool:
    """Compare two addresses the way MSSanté routing does: the domain is case-insensitive."""
    left_local, _, left_domain = left.rpartition("@")
    right_local, _, right_domain = right.rpartition("@")
    return left_local == right_local and left_domain.lower() == right_domain.lower()

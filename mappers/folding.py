"""Set a header on a message built by hand (DSN, MDN) so that it reads back exactly as given.

A convenience over ``mappers.wire`` for builders outside ``mappers.mime``: values are checked for
header injection, then written with wire forms that avoid the email package's folding defects
(Python 3.11). ``READ_POLICY`` is how mssgw reads headers. Never changes a value besides dropping
the white space around it, which readers drop too.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import Message

from mappers import wire
from mappers.headers import check_header_value
from mappers.wire import READ_POLICY, HeaderEncodingError

__all__ = ["READ_POLICY", "HeaderEncodingError", "set_header"]


def set_header(message: Message, name: str, value: str | Address | list[Address]) -> None:
    """Add header ``name`` to ``message``, guaranteeing that a reader decodes the same value."""
    if isinstance(value, Address):
        value = [value]
    if isinstance(value, list):
        for address in value:
            check_header_value(address.display_name, field=f"{name} display name")
            check_header_value(address.addr_spec, field=name)
        message[name] = wire.address_header(name, value)
    else:
        message[name] = wire.text_header(name, check_header_value(value, field=name))

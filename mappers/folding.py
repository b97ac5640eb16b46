"""Set a header on an outgoing message so that it reads back exactly as the store wrote it.

Used by ``mappers.mime`` for every header it writes. The email package's folder (Python 3.11) can drop
the space between two encoded-words or split a display name inside a word when it folds long
non-ASCII values; each such value is checked by reading its folded form back and, when it differs,
written with self-contained encoded-words (RFC 2047 § 5) instead. Never changes the value itself.
"""

from __future__ import annotations

import base64
import re
from email.header import Header
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.parser import HeaderParser
from email.policy import EmailPolicy, Policy, default

from mappers.errors import MappingError

_MAX_LINE = 78  # RFC 5322 § 2.1.1 "SHOULD be no more than 78 characters"
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _registry() -> HeaderRegistry:
    # RFC 8098 § 2.1: Disposition-Notification-To holds mailboxes; the email package does not know it.
    registry = HeaderRegistry()
    # typeshed types AddressHeader apart from BaseHeader; the registry mixes it in at run time.
    registry.map_to_type("disposition-notification-to", AddressHeader)  # type: ignore[arg-type]
    return registry


# How mssgw reads a header block: email.policy.default, with the MDN address header known as such.
READ_POLICY: EmailPolicy[EmailMessage] = default.clone(header_factory=_registry())


class HeaderEncodingError(MappingError):
    """A header value that cannot be written so that it reads back unchanged."""


class _Prefolded(str):
    """A header value whose wire form was computed here rather than by the email package's folder."""

    def __new__(cls, name: str, value: str, folded: str, addresses: tuple[Address, ...]) -> _Prefolded:
        instance = super().__new__(cls, value)
        instance.name = name
        instance.addresses = addresses
        instance._folded = folded
        return instance

    name: str
    addresses: tuple[Address, ...]
    _folded: str

    def fold(self, *, policy: Policy) -> str:
        """Give the fixed wire form with the line ends of the policy doing the writing."""
        return self._folded.replace("\n", policy.linesep)


def set_header(message: EmailMessage, name: str, value: str | Address | list[Address]) -> None:
    """Add header ``name`` to ``message``, guaranteeing that a reader decodes the same value."""
    policy = message.policy
    if not isinstance(policy, EmailPolicy):
        raise TypeError("set_header needs a message built with an EmailPolicy")
    header = policy.header_factory(name, value)
    if not _needs_check(header) or _reads_back(name, header, policy.fold(name, header)):
        message[name] = header
        return
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if addresses:
        body = ",\n ".join(_encode_address(address) for address in addresses)
    else:
        body = Header(str(header), "utf-8", maxlinelen=_MAX_LINE, header_name=name).encode(linesep="\n")
    folded = f"{name}: {body}\n"
    if not _reads_back(name, header, folded):
        raise HeaderEncodingError(f"{name}: the value cannot be encoded so that it reads back unchanged")
    message[name] = _Prefolded(name, str(header), folded, addresses)


def _needs_check(header: BaseHeader) -> bool:
    text = str(header)
    return not text.isascii() or len(header.name) + 2 + len(text) > _MAX_LINE


def _key(header: object) -> object:
    addresses: tuple[Address, ...] | None = getattr(header, "addresses", None)
    if addresses is not None:
        return [(address.display_name, address.addr_spec) for address in addresses]
    return str(header)


def _reads_back(name: str, header: BaseHeader, folded: str) -> bool:
    parsed = HeaderParser(policy=READ_POLICY).parsestr(folded.replace("\r\n", "\n") + "\n")
    return _key(parsed.get(name)) == _key(header)


def _encode_address(address: Address) -> str:
    if not address.display_name:
        return address.addr_spec
    return f"{_phrase(address.display_name)} <{address.addr_spec}>"


def _phrase(display_name: str) -> str:
    """RFC 2047 § 5 (3) phrase where no two encoded-words touch.

    Some readers (Python 3.11 among them) keep the space between two adjacent encoded-words of a
    display name although RFC 2047 § 6.2 says to drop it, so the two readings differ. Here each run of
    non-ASCII words is one encoded-word and ASCII words stay atoms or quoted strings between them.
    """
    if display_name != " ".join(display_name.split()):
        # Unusual spacing survives only inside an encoded-word.
        return _encoded_word(display_name)
    tokens: list[str] = []
    run: list[str] = []
    run_ascii: bool | None = None
    for word in [*display_name.split(" "), None]:
        is_ascii = word.isascii() if word is not None else None
        if run and is_ascii != run_ascii:
            text = " ".join(run)
            tokens.append(_ascii_phrase(text) if run_ascii else _encoded_word(text))
            run = []
        if word is not None:
            run.append(word)
            run_ascii = is_ascii
    lines = [""]
    for token in tokens:
        if lines[-1] and len(lines[-1]) + 1 + len(token) > _MAX_LINE - 2:
            lines.append(token)
        else:
            lines[-1] = f"{lines[-1]} {token}" if lines[-1] else token
    return "\n ".join(lines)


def _ascii_phrase(text: str) -> str:
    if _ATOMS.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _encoded_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?="

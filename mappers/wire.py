"""Wire forms of header fields and part bodies, computed here rather than by the email package.

Used by ``mappers.mime`` to build outgoing messages. Two reasons: Python 3.11's folder loses or adds
spaces when it folds long non-ASCII values (adjacent encoded-words), and its header objects cost
milliseconds per message. Values arrive already checked (``headers.check_header_value``); this
module only encodes (RFC 5322 folding, RFC 2047 encoded-words, RFC 2231 parameters, RFC 2045 bodies).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import urllib.parse
from collections.abc import Sequence
from email.headerregistry import Address, AddressHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import EmailPolicy, Policy, default
from email.utils import format_datetime

from mappers.errors import MappingError

MAX_LINE = 78  # RFC 5322 § 2.1.1: SHOULD; folding happens at white space only
HARD_LINE = 998  # RFC 5322 § 2.1.1: MUST
_ENCODED_WORD_MAX = 75  # RFC 2047 § 2
_EW_PREFIX = "=?utf-8?q?"
_LONG_WORD = 70
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 2045 § 5.1 token
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_QUOTABLE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # printable ASCII but " and \
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class HeaderEncodingError(MappingError):
    """A value too long to be written in a header even after folding."""


def _registry() -> HeaderRegistry:
    # RFC 8098 § 2.1: Disposition-Notification-To holds mailboxes; the email package does not know it.
    registry = HeaderRegistry()
    # typeshed types AddressHeader apart from BaseHeader; the registry mixes it in at run time.
    registry.map_to_type("disposition-notification-to", AddressHeader)  # type: ignore[arg-type]
    return registry


# How mssgw reads a header block: email.policy.default, with the MDN address header known as such.
READ_POLICY: EmailPolicy[EmailMessage] = default.clone(header_factory=_registry())


class WireHeader(str):
    """A header value whose folded form is fixed: ``str`` is the value, ``fold`` the wire text.

    The email package stores an object with a matching ``name`` as is and asks it to ``fold`` when
    writing (``email.policy.EmailPolicy.header_store_parse`` / ``_fold``). Any other attribute of the
    package's own header objects (``addresses``, ``datetime``, ``params`` …) is answered by parsing
    the wire text on first use, so code written for ``EmailMessage`` keeps working.
    """

    name: str
    _folded: str

    def __new__(cls, name: str, value: str, folded_value: str) -> WireHeader:
        folded = f"{name}: {folded_value}"
        if any(len(line) > HARD_LINE for line in folded.split("\n")):
            raise HeaderEncodingError(f"{name}: a part of the value is longer than {HARD_LINE} characters")
        instance = super().__new__(cls, value)
        instance.name = name
        instance._folded = folded + "\n"
        return instance

    def fold(self, *, policy: Policy) -> str:
        """The wire text with the line ends of the policy doing the writing."""
        return self._folded.replace("\n", policy.linesep)

    def __getattr__(self, attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raw = self._folded[len(self.name) + 2 :].replace("\n", "")
        return getattr(READ_POLICY.header_factory(self.name, raw), attribute)


def _fold_tokens(tokens: Sequence[str], first_line: int) -> str:
    """Join tokens with single spaces, breaking lines before a space when a line would pass 78."""
    lines: list[str] = []
    line, used = "", first_line
    for token in tokens:
        if line and used + len(line) + 1 + len(token) > MAX_LINE:
            lines.append(line)
            line, used = token, 1
        else:
            line = f"{line} {token}" if line else token
    lines.append(line)
    return "\n ".join(lines)


def _q_chars(text: str) -> list[str]:
    """RFC 2047 § 4.2 "Q" form of each character, safe in both text and phrases (§ 5 (3))."""
    chars: list[str] = []
    for char in text:
        chars.append(
            "".join(
                chr(byte) if byte in _Q_SAFE else "_" if byte == 0x20 else f"={byte:02X}"
                for byte in char.encode("utf-8")
            )
        )
    return chars


def encoded_words(text: str, *, split: bool) -> list[str]:
    """``text`` as encoded-words; ``split`` cuts them to 75 characters, never inside a character."""
    words: list[str] = []
    current = ""
    limit = _ENCODED_WORD_MAX - len(_EW_PREFIX) - 2
    for chunk in _q_chars(text):
        if split and current and len(current) + len(chunk) > limit:
            words.append(f"{_EW_PREFIX}{current}?=")
            current = ""
        current += chunk
    words.append(f"{_EW_PREFIX}{current}?=")
    return words


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word or _PRINTABLE.fullmatch(word) is None


def text_header(name: str, value: str) -> WireHeader:
    """An unstructured field (Subject, X-MSS-*), RFC 2047 § 5 (1); surrounding white space dropped.

    Runs of words that need encoding become encoded-words carrying their inner spaces; the white
    space between two encoded-words is not significant (RFC 2047 § 6.2), the space between an
    encoded-word and a plain word is, so every space of the value survives.
    """
    value = value.strip()
    if "\t" in value or "  " in value:
        # Irregular spacing is kept only inside encoded-words.
        return WireHeader(name, value, _fold_tokens(encoded_words(value, split=True), len(name) + 2))
    tokens: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        # A word too long for a line is carried by encoded-words, which may be cut anywhere.
        if _needs_encoding(word) or len(word) > _LONG_WORD:
            run.append(word)
            continue
        if run:
            tokens.extend(encoded_words(" ".join(run), split=True))
            run = []
        tokens.append(word)
    if run:
        tokens.extend(encoded_words(" ".join(run), split=True))
    return WireHeader(name, value, _fold_tokens(tokens, len(name) + 2))


def _phrase_tokens(display_name: str) -> list[str]:
    """RFC 5322 phrase tokens where no two encoded-words touch.

    Python 3.11 (among others) inserts a space between two adjacent encoded-words of a display name
    although RFC 2047 § 6.2 says to drop it, so each run of non-ASCII words is one encoded-word, even
    past 75 characters, and ASCII words between runs stay atoms or quoted strings.
    """
    if display_name != display_name.strip(" ") or "\t" in display_name or "  " in display_name:
        return encoded_words(display_name, split=False)
    tokens: list[str] = []
    run: list[str] = []
    run_encoded: bool | None = None
    for word in [*display_name.split(" "), None]:
        encoded = _needs_encoding(word) if word is not None else None
        if run and encoded != run_encoded:
            text = " ".join(run)
            if run_encoded:
                tokens.extend(encoded_words(text, split=False))
            elif all(_ATOM.fullmatch(part) for part in run):
                tokens.extend(run)
            else:
                tokens.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
            run = []
        if word is not None:
            run.append(word)
            run_encoded = encoded
    return tokens


def address_header(name: str, addresses: Sequence[Address]) -> WireHeader:
    """An address list field (From, To, Cc, Sender, Reply-To, Disposition-Notification-To)."""
    rendered: list[list[str]] = []
    for address in addresses:
        angle = f"<{address.addr_spec}>"
        if address.display_name:
            rendered.append([*_phrase_tokens(address.display_name), angle])
        else:
            rendered.append([address.addr_spec])
    one_line = ", ".join(" ".join(tokens) for tokens in rendered)
    if len(name) + 2 + len(one_line) <= MAX_LINE:
        folded = one_line
    else:
        folded = ",\n ".join(_fold_tokens(tokens, 1) for tokens in rendered)
    value = ", ".join(str(address) for address in addresses)
    return WireHeader(name, value, folded)


def date_header(name: str, moment: dt.datetime) -> WireHeader:
    """A date field in RFC 5322 § 3.3 form."""
    text = format_datetime(moment)
    return WireHeader(name, text, text)


def ids_header(name: str, identifiers: Sequence[str]) -> WireHeader:
    """Message-ID, In-Reply-To, References: ASCII msg-ids separated by folding white space."""
    return WireHeader(name, " ".join(identifiers), _fold_tokens(identifiers, len(name) + 2))


def _parameter(key: str, value: str) -> list[str]:
    """``key=value`` as a quoted string, or RFC 2231 § 3-4 extended continuations when needed."""
    # Readers unquote backslashes and quotes unevenly, and many (Python too) decode a quoted "=?…?="
    # as an RFC 2047 word: such values take the RFC 2231 form, which every reader decodes alike.
    if _QUOTABLE.fullmatch(value) and len(value) <= 60 and "=?" not in value:
        return [f'{key}="{value}"']
    pieces = [urllib.parse.quote(char, safe="", encoding="utf-8") for char in value]
    chunks: list[str] = []
    current = "utf-8''"
    for piece in pieces:
        if len(current) + len(piece) > 60 and current != "utf-8''":
            chunks.append(current)
            current = ""
        current += piece
    chunks.append(current)
    if len(chunks) == 1:
        return [f"{key}*={chunks[0]}"]
    return [f"{key}*{n}*={chunk}" for n, chunk in enumerate(chunks)]


def parameter_header(name: str, value: str, parameters: Sequence[tuple[str, str]]) -> WireHeader:
    """Content-Type or Content-Disposition with parameters, one per line when long."""
    parts = [value]
    for key, parameter in parameters:
        parts.extend(_parameter(key, parameter))
    one_line = "; ".join(parts)
    folded = one_line if len(name) + 2 + len(one_line) <= MAX_LINE else ";\n ".join(parts)
    return WireHeader(name, one_line, folded)


def is_token(text: str) -> bool:
    """True for an RFC 2045 token (a media type or subtype name)."""
    return _TOKEN.fullmatch(text) is not None


def text_body(text: str) -> tuple[str, str]:
    """A UTF-8 text body and its transfer encoding: 7bit when plain ASCII, else quoted-printable.

    The text ends with one line end, as ``EmailMessage.set_content`` writes it; 8bit is never used
    because a relay towards an operator without 8BITMIME would have to convert it.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    lines = text.split("\n")
    if all(_PRINTABLE.fullmatch(line.replace("\t", " ")) and len(line) <= HARD_LINE for line in lines):
        return "7bit", text
    return "quoted-printable", _quoted_printable(text.encode("utf-8"))


def _quoted_printable(data: bytes) -> str:
    """RFC 2045 § 6.7: soft line breaks at 76 characters, line ends kept as hard line breaks."""
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).decode("ascii")


def base64_body(data: bytes) -> str:
    """Base64 in 76-character lines (RFC 2045 § 6.8)."""
    return base64.encodebytes(data).decode("ascii")


def crlf(data: bytes) -> bytes:
    """``data`` with every bare CR or LF made CRLF; ``data`` itself, not a copy, when it has none.

    Matching only the bare ones (rather than every line end) matters for large mail: a 20 MB message
    has 270 000 line ends, and replacing each one built pieces worth several times its size (issue 11).
    """
    if not has_bare_line_end(data):
        return data
    return _BARE_LINE_END.sub(b"\r\n", data)


def has_bare_line_end(data: bytes) -> bool:
    """Whether ``data`` holds a CR or an LF that is not part of a CRLF.

    Every CR and LF is in a CRLF when there are twice as many of them as CRLFs (which cannot overlap).
    Two passes (one deleting every CR and LF, one counting CRLFs) instead of a regex with look-around:
    about fifteen times faster on a 1 MiB message, which the listener checks once and the relay for
    every delivery (issue 16), and a third faster than counting CRs, LFs and CRLFs apart.
    """
    return len(data) - len(data.translate(None, b"\r\n")) != 2 * data.count(b"\r\n")

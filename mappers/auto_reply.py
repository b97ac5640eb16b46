"""Automatic replies (absence, redirection): recognise them so they become a receipt, never a conversation.

The seed guides' "vignette rouge" is a mailbox that answers with an absence or redirection message. For the
gateway such a reply is information about a delivery — the recipient is away, or reads elsewhere — not mail
to act on: answering it (an MDN, a notice) could loop with a peer that answers everything, and a patient's
vacation message quoting "[FIN]" must not close a citizen channel. RFC 3834 ``Auto-Submitted`` is the
standard mark; ``X-Autoreply``, ``X-Autorespond`` and ``Precedence: auto_reply`` are what common
responders (Exchange, Zimbra, Sieve vacation scripts of some operators) write instead. Pure: no store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import getaddresses
from typing import Final

__all__ = ["MAX_TEXT", "AutoReply", "is_auto_reply", "read_auto_reply"]

MAX_TEXT: Final = 500
"""Characters of the reply's text kept for ``mssgw queue show``: enough for "absent until …, write to …"."""

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True, slots=True)
class AutoReply:
    """Who answered automatically, about which message, and what the answer said (first lines)."""

    responder: str
    original_message_id: str
    text: str


def is_auto_reply(headers: Message) -> bool:
    """Whether the header section marks an automatic reply (any of the recognised forms)."""
    # ``auto-generated`` is a notice of its own (RFC 3834 § 5.1), not an answer: it stays ordinary mail.
    if str(headers.get("Auto-Submitted", "")).split(";")[0].strip().lower() == "auto-replied":
        return True
    if headers.get("X-Autoreply") is not None or headers.get("X-Autorespond") is not None:
        return True
    return str(headers.get("Precedence", "")).strip().lower() == "auto_reply"


def read_auto_reply(message: EmailMessage) -> AutoReply | None:
    """The automatic reply ``message`` is, or ``None`` when it is not one, or names no responder or no
    message it answers (then it is nobody's receipt and stays ordinary mail)."""
    if not is_auto_reply(message):
        return None
    responders = [address for _, address in getaddresses([_raw(message, "From")]) if "@" in address]
    original = _original_id(message)
    if not responders or original is None:
        return None
    return AutoReply(responders[0], original, _text(message))


def _original_id(message: Message) -> str | None:
    """In-Reply-To, else the last of References (RFC 5322 § 3.6.4): the message answered."""
    for name, pick in (("In-Reply-To", 0), ("References", -1)):
        found: list[str] = _MESSAGE_ID.findall(_raw(message, name))
        if found:
            return found[pick]
    return None


def _raw(message: Message, name: str) -> str:
    """A field's value as received: a malformed From must not stop the reading (the parsed header
    objects raise on some of them)."""
    wanted = name.lower()
    return next((str(value) for field, value in message.raw_items() if field.lower() == wanted), "")


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        return ""
    text = " ".join(str(content).split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"

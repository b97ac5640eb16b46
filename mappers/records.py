"""The internal message record: what the store keeps and what the mappers turn into MIME and back.

This is the lowest layer of the gateway: ``gateway.store`` converts rows to these records and back, the
mappers convert them to and from ``email.message.EmailMessage``. No behaviour here, only shapes (and a
received body's text, read when first asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mappers.documents import Document
from mappers.patient import Patient


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address with its optional display name (``Dr_Marie_MARTIN_Cabinet <marie@x.mssante.fr>``)."""

    address: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A plain attachment (not a health document with XDS metadata)."""

    filename: str
    content_type: str
    content: bytes


class LazyText:
    """A text read only when first asked for: a received message's body.

    Decoding a 1 MiB body and normalising its line ends took 13 % of the gateway's time relaying 1 MiB
    mail (issue 16), and only the packaging of an internal sender's PDFs and HL7 MDMs read it. Equal to
    the same text, lazy or not, so that records compare as before.
    """

    __slots__ = ("_read", "_text")

    def __init__(self, read: Callable[[], str]) -> None:
        self._read: Callable[[], str] | None = read
        self._text = ""

    @property
    def text(self) -> str:
        """The text, read at the first call; the reader (and what it holds) is dropped then."""
        if self._read is not None:
            self._text, self._read = self._read(), None
        return self._text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyText):
            return self.text == other.text
        return isinstance(other, str) and self.text == other

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"LazyText({self.text!r})" if self._read is None else "LazyText(<unread>)"


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as the hospital's store sees it, before MIME or after parsing.

    ``author`` is the From mailbox; ``on_behalf_of`` the person writing for an organisational mailbox (the
    ``Sender`` header). ``documents`` and ``patient`` travel in the IHE_XDM.zip; ``end_of_exchange`` is
    ``X-MSS-MES: FIN``. ``problems`` lists what a received message got wrong without being unreadable
    (an XDM hash that disagrees, an X-MSS-INS that contradicts the package); it is empty when sending.
    ``package_metadata`` is the received package's METADATA.XML, as it came (for drop folders); building
    ignores it and it does not count in comparisons, since the documents already say what it says.
    ``body`` is the body text as given, or as parsing will read it when asked (``LazyText``); read it as
    ``body_text``.
    """

    author: Mailbox
    to: tuple[Mailbox, ...]
    subject: str
    body: str | LazyText = ""
    message_id: str | None = None
    date: datetime | None = None
    cc: tuple[Mailbox, ...] = field(default_factory=tuple)
    on_behalf_of: Mailbox | None = None
    reply_to: Mailbox | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = field(default_factory=tuple)
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    patient: Patient | None = None
    documents: tuple[Document, ...] = field(default_factory=tuple)
    disposition_notification_to: Mailbox | None = None
    end_of_exchange: bool = False
    problems: tuple[str, ...] = field(default_factory=tuple)
    package_metadata: tuple[bytes, ...] = field(default_factory=tuple, compare=False)

    @property
    def body_text(self) -> str:
        """The body text (read now if parsing left it for later)."""
        return self.body if isinstance(self.body, str) else self.body.text

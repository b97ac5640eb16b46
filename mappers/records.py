"""The internal message record: what the store keeps and what the mappers turn into MIME and back.

This is the lowest layer of the gateway: ``gateway.store`` converts rows to these records and back, the
mappers convert them to and from ``email.message.EmailMessage``. No behaviour here, only shapes.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as the hospital's store sees it, before MIME or after parsing.

    ``author`` is the From mailbox; ``on_behalf_of`` the person writing for an organisational mailbox (the
    ``Sender`` header). ``documents`` and ``patient`` travel in the IHE_XDM.zip; ``end_of_exchange`` is
    ``X-MSS-MES: FIN``. ``problems`` lists what a received message got wrong without being unreadable
    (an XDM hash that disagrees, an X-MSS-INS that contradicts the package); it is empty when sending.
    ``package_metadata`` is the received package's METADATA.XML, as it came (for drop folders); building
    ignores it and it does not count in comparisons, since the documents already say what it says.
    """

    author: Mailbox
    to: tuple[Mailbox, ...]
    subject: str
    body_text: str = ""
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

"""SQLAlchemy tables of the store: messages, attachments, patients, deliveries (the queue), attempts,
citizen channels, audit events, IMAP cursors, the HL7 messages already taken (per producer and MSH-10),
the national MSSanté directory, the business acknowledgements (ZAM) owed to HL7 producers, and the MDMs
owed to HL7 consumers.

Raw messages are kept as received or built (a BLOB), so what leaves is byte-for-byte what was accepted.
Times are stored in UTC and always read back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 7
"""Bumped with every change to these tables; stored in ``schema_version`` on first start."""


class UtcDateTime(TypeDecorator[datetime]):
    """A datetime stored as naive UTC (SQLite has no time zones) and read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class SchemaVersion(Base):
    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("matricule", "oid"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    matricule: Mapped[str] = mapped_column(String(15))
    oid: Mapped[str] = mapped_column(String(64))
    birth_name: Mapped[str] = mapped_column(String(200))
    given_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(1))


class Message(Base):
    """One message, inbound or outbound, with its raw bytes and its envelope."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_dedup", "message_id", "digest"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default="message")
    state: Mapped[str] = mapped_column(String(16), default="stored")
    state_reason: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998))
    digest: Mapped[str] = mapped_column(String(64))
    envelope_from: Mapped[str] = mapped_column(String(320))
    envid: Mapped[str | None] = mapped_column(String(100))
    ret: Mapped[str | None] = mapped_column(String(4))
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    related_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The ``[[submission.clients]]`` name that handed the message in: its delivery reports go back there.
    client: Mapped[str | None] = mapped_column(String(200))


class Attachment(Base):
    """What a message carries, described for the store's readers (the bytes stay in ``messages.raw``)."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha1: Mapped[str] = mapped_column(String(40))
    metadata_json: Mapped[dict[str, str] | None] = mapped_column(JSON)


class Delivery(Base):
    """One (message, recipient) pair: a row of the outbound queue."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    notify: Mapped[str | None] = mapped_column(String(40))
    orcpt: Mapped[str | None] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    crashes: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    notice_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    # What the recipient's side said afterwards (a DSN or an MDN): delivered, failed, displayed,
    # processed, error, or a Mon Espace Santé refusal (mailbox-closed, patient-not-found …).
    receipt_status: Mapped[str | None] = mapped_column(String(24))
    receipt_detail: Mapped[str | None] = mapped_column(Text)
    receipt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    receipt_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    # A delivery report's way back to its sender (``mailbox``, ``client:<name>``), which the recipient's
    # domain must not decide: the report never leaves for the operator. None: routed by recipient.
    via: Mapped[str | None] = mapped_column(String(200))


class DeliveryAttempt(Base):
    """One try at a delivery and what the next hop answered."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_pk: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(10))
    code: Mapped[int | None] = mapped_column(Integer)
    reply: Mapped[str | None] = mapped_column(Text)
    peer: Mapped[str | None] = mapped_column(String(300))


class Channel(Base):
    """A citizen channel: a professional mailbox × a patient, open until [FIN] or expiry.

    ``closed_by`` is the Message-ID of the closing message, or ``admin:<user>`` for ``mssgw channels close``.
    """

    __tablename__ = "channels"
    __table_args__ = (Index("ix_channels_pair", "mailbox", "patient_matricule"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(320))
    patient_matricule: Mapped[str] = mapped_column(String(15))
    state: Mapped[str] = mapped_column(String(8))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    opened_by: Mapped[str | None] = mapped_column(String(998))
    last_activity_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(998))
    reason: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Base):
    """The per-message trail: accepted, queued, delivered, deferred, bounced, channel changes."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(40))
    message_pk: Mapped[int | None] = mapped_column(Id, index=True)
    delivery_pk: Mapped[int | None] = mapped_column(Id)
    channel_pk: Mapped[int | None] = mapped_column(Id, index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class ImapCursor(Base):
    """How far the IMAP bridge has read one folder of one account."""

    __tablename__ = "imap_cursors"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    last_sync_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Hl7Transmission(Base):
    """An HL7 message taken from a producer (its MSH-10), committed with the mail it became: a producer
    that lost our ACK sends the same MSH-10 again and gets the ACK again, not a second mail."""

    __tablename__ = "hl7_transmissions"

    producer: Mapped[str] = mapped_column(String(200), primary_key=True)
    control_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    zam_events: Mapped[str | None] = mapped_column(String(20))
    """The ZAM the producer asked for, ``Z02,Z03`` (ACK_RECEPTION, ACK_LECTURE_MSS); NULL for none."""


# Directory words are compared as byte strings so that a prefix is an index range on PostgreSQL as on SQLite.
_Word = Text().with_variant(Text(collation="C"), "postgresql")


class DirectoryImport(Base):
    """One import of the national directory (a generation of its rows) and what came of it.

    ``state``: ``loading`` while its rows are written, then ``current`` (the one lookups read: at most
    one), ``replaced`` by a later one, ``refused`` (checks failed: its rows are gone) or ``failed``.
    """

    __tablename__ = "directory_imports"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    state: Mapped[str] = mapped_column(String(10), index=True)
    source: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str | None] = mapped_column(Text)
    file_timestamp: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    addresses: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)


class DirectoryEntry(Base):
    """One mailbox of the directory (one row per address): its holder and the structure's postal address.

    ``line`` is the file line the address first stands on; its other lines are more ``DirectoryRole`` rows.
    ``profession`` and ``speciality`` are the first line's labels, for lists; the ``*_words`` columns are
    normalised (``mappers.directory.normalise``) over every role, for filters.
    """

    __tablename__ = "directory_entries"
    __table_args__ = (
        Index("ix_directory_entries_address", "generation", "address"),
        Index("ix_directory_entries_domain", "generation", "domain", "local_part"),
    )

    generation: Mapped[int] = mapped_column(Id, primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(_Word)
    domain: Mapped[str] = mapped_column(_Word)
    local_part: Mapped[str] = mapped_column(_Word)
    mailbox_type: Mapped[str] = mapped_column(String(3))
    civility: Mapped[str] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(Text)
    pp_id_type: Mapped[str] = mapped_column(Text)
    pp_id: Mapped[str] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(Text)
    organisation: Mapped[str] = mapped_column(Text)
    street: Mapped[str] = mapped_column(Text)
    routing_line: Mapped[str] = mapped_column(Text)
    city: Mapped[str] = mapped_column(Text)
    postal_code: Mapped[str] = mapped_column(Text)
    department: Mapped[str] = mapped_column(Text)
    country: Mapped[str] = mapped_column(Text)
    dematerialisation: Mapped[str] = mapped_column(Text)
    profession: Mapped[str] = mapped_column(Text)
    speciality: Mapped[str] = mapped_column(Text)
    profession_words: Mapped[str] = mapped_column(Text)
    speciality_words: Mapped[str] = mapped_column(Text)
    city_words: Mapped[str] = mapped_column(Text)


class DirectoryRole(Base):
    """One line of the directory file: what the holder of ``entry_line``'s address does, and where."""

    __tablename__ = "directory_roles"
    __table_args__ = (Index("ix_directory_roles_entry", "generation", "entry_line"),)

    generation: Mapped[int] = mapped_column(Id, primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_line: Mapped[int] = mapped_column(Integer)
    category_code: Mapped[str] = mapped_column(Text)
    category_label: Mapped[str] = mapped_column(Text)
    profession_code: Mapped[str] = mapped_column(Text)
    profession_label: Mapped[str] = mapped_column(Text)
    skill_code: Mapped[str] = mapped_column(Text)
    skill_label: Mapped[str] = mapped_column(Text)
    service: Mapped[str] = mapped_column(Text)
    structure_id_type: Mapped[str] = mapped_column(Text)
    structure_id: Mapped[str] = mapped_column(Text)
    organisation: Mapped[str] = mapped_column(Text)
    trade_name: Mapped[str] = mapped_column(Text)


class DirectoryTerm(Base):
    """A word a search matches an entry on; the key doubles as the index a prefix search ranges over."""

    __tablename__ = "directory_terms"

    generation: Mapped[int] = mapped_column(Id, primary_key=True)
    term: Mapped[str] = mapped_column(_Word, primary_key=True)
    entry_line: Mapped[int] = mapped_column(Integer, primary_key=True)


DIRECTORY_TABLES = (DirectoryImport, DirectoryEntry, DirectoryRole, DirectoryTerm)


class Hl7Zam(Base):
    """A ZAM owed to a producer, written with the receipt that causes it and kept until the producer's AA."""

    __tablename__ = "hl7_zams"
    __table_args__ = (Index("ix_hl7_zams_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    producer: Mapped[str] = mapped_column(String(200))
    control_id: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(3))
    address: Mapped[str] = mapped_column(String(320))
    failure_code: Mapped[str | None] = mapped_column(String(40))
    failure_text: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Hl7Mdm(Base):
    """One received document owed to an HL7 consumer as an MDM, written with the mail it came in and kept
    with the consumer's answer; the mail's MDN is written when the last of its MDMs is settled.

    ``state``: ``pending`` until an ACK (or the end of the retry schedule) settles it as ``answered`` or
    ``unanswered``. ``document_id``/``replaces`` are TXA-12/TXA-13: an MDM waits while an earlier unsettled
    one for the consumer names the same document (a T10 never overtakes its T02). ``mdn_to`` is where the
    MDN goes (NULL: none was asked, or RFC 8098 forbids an automatic one).
    """

    __tablename__ = "hl7_mdms"
    __table_args__ = (Index("ix_hl7_mdms_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    consumer: Mapped[str] = mapped_column(String(200))
    mailbox: Mapped[str] = mapped_column(String(320))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(3))
    control_id: Mapped[str] = mapped_column(String(200))
    document_id: Mapped[str] = mapped_column(String(500), index=True)
    replaces: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    mdn_to: Mapped[str | None] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    result_code: Mapped[int | None] = mapped_column(Integer)
    result_label: Mapped[str | None] = mapped_column(Text)
    result_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    mdn_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))


CONTENT_COLUMNS = (Message.__table__.c.raw, Hl7Mdm.__table__.c.payload)
"""The columns that hold mail and documents, whole: stored without pglz on PostgreSQL
(``db.store_content_without_pglz``)."""

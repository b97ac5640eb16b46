"""Health documents with the XDS metadata that travels with them in an IHE XDM package.

Record types only (and how a submission's author is completed from the defaults); building and parsing
packages lives in ``mappers.xdm``, CDA wrapping in ``mappers.cda``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class DocumentAction(StrEnum):
    """What the sender asks the receiver to do with a document: file it, replace an earlier one, delete it.

    Written into METADATA.XML (``mappers.metadata``) and read back (``mappers.metadata_read``); an HL7
    producer asks for it with the MDM event or OBX-11 (``mappers.hl7_transmission``).
    """

    ORIGINAL = "original"
    REPLACEMENT = "replacement"
    DELETION = "deletion"


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value: code, display label and the OID of its coding scheme."""

    code: str
    label: str
    scheme: str


@dataclass(frozen=True, slots=True)
class Author:
    """The professional (RPPS) and the institution who authored a document."""

    rpps: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    institution_name: str | None = None
    institution_id: str | None = None
    specialty: Code | None = None
    role: Code | None = None

    def filled_from(self, defaults: Author) -> Author:
        """This author, with what it leaves unset taken from ``defaults`` (options over settings).

        The person is taken whole: a submission naming its own professional gets none of the default
        professional's RPPS, name, profession or specialty (two people's traits mixed would misattribute
        the document); the organisation is completed key by key.
        """
        named = bool(self.rpps or self.family_name or self.given_name)
        person = self if named else defaults
        return Author(
            rpps=person.rpps,
            family_name=person.family_name,
            given_name=person.given_name,
            institution_name=self.institution_name or defaults.institution_name,
            institution_id=self.institution_id or defaults.institution_id,
            specialty=self.specialty or (None if named else defaults.specialty),
            role=self.role or (None if named else defaults.role),
        )


@dataclass(frozen=True, slots=True)
class HeaderDefaults:
    """Values the CDA built around a bare PDF and METADATA.XML need that are the same for a whole hospital
    or department (the ``[documents]`` settings): given once, ``mssgw send`` and ``X-MSSGW-*`` submissions
    need not repeat them; what a submission gives wins. ``class_code`` (XDS classCode, JDV_J06) and
    ``content_type`` (SubmissionSet contentTypeCode) are XDS only: no CDA header part carries them;
    ``format_code`` is the formatCode of a structured CDA (a wrapped PDF's is always XDS-SD PDF)."""

    author: Author = field(default_factory=Author)
    facility_type: Code | None = None
    practice_setting: Code | None = None
    class_code: Code | None = None
    content_type: Code | None = None
    format_code: Code | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """One document of an XDM submission set, with its content and DocumentEntry metadata.

    Times are timezone-aware; they are written in UTC (``AAAAMMJJhhmmss``) in METADATA.XML.
    ``confidentiality`` holds the codes beyond the default ``N`` (e.g. ``INVISIBLE_PATIENT``, ``MASQUE_PS``).
    ``filename`` is the sender's name for the file; in a parsed package it is the name inside the package
    (``DOC0001.XML``), since XDM keeps no other. ``action`` says whether it replaces (or deletes) a document
    sent before; which one is named by the CDA itself (``relatedDocument`` RPLC).
    """

    filename: str
    content: bytes
    mime_type: str
    title: str
    type_code: Code
    creation_time: datetime
    unique_id: str
    class_code: Code | None = None
    format_code: Code | None = None
    service_start: datetime | None = None
    service_stop: datetime | None = None
    author: Author | None = None
    confidentiality: tuple[Code, ...] = field(default_factory=tuple)
    healthcare_facility_type: Code | None = None
    practice_setting: Code | None = None
    language: str = "fr-FR"
    event_codes: tuple[Code, ...] = field(default_factory=tuple)
    legal_authenticator: Author | None = None
    action: DocumentAction = DocumentAction.ORIGINAL


@dataclass(frozen=True, slots=True)
class SubmissionSet:
    """The XDS SubmissionSet of an XDM package: who sent the documents, when, under which ids.

    ``source_id`` is the OID of the sending system (a setting of the gateway); ``unique_id`` the OID of this
    submission. ``content_type`` uses the French code system 1.2.250.1.213.2.2 (MSSANTE.md §5.4).
    """

    unique_id: str
    source_id: str
    submission_time: datetime
    author: Author | None = None
    content_type: Code | None = None
    title: str | None = None
    comments: str | None = None

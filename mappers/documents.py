"""Health documents with the XDS metadata that travels with them in an IHE XDM package.

Record types only; building and parsing packages lives in ``mappers.xdm``, CDA wrapping in ``mappers.cda``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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


@dataclass(frozen=True, slots=True)
class Document:
    """One document of an XDM submission set, with its content and DocumentEntry metadata.

    Times are timezone-aware; they are written in UTC (``AAAAMMJJhhmmss``) in METADATA.XML.
    ``confidentiality`` holds the codes beyond the default ``N`` (e.g. ``INVISIBLE_PATIENT``, ``MASQUE_PS``).
    ``filename`` is the sender's name for the file; in a parsed package it is the name inside the package
    (``DOC0001.XML``), since XDM keeps no other.
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

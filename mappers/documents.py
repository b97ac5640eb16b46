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


@dataclass(frozen=True, slots=True)
class Document:
    """One document of an XDM submission set, with its content and DocumentEntry metadata.

    Times are timezone-aware; they are written in UTC (``AAAAMMJJhhmmss``) in METADATA.XML.
    ``confidentiality`` holds the codes beyond the default ``N`` (e.g. ``INVISIBLE_PATIENT``, ``MASQUE_PS``).
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

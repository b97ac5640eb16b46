"""IHE XDS metadata vocabulary for METADATA.XML: ebRIM UUIDs, French OIDs and HL7 v2 value formats.

Constants come from MSSANTE.md §5.3–5.4 (ANS sample METADATA.XML); the CX/XCN/XON/DTM helpers format and
parse the French conventions both ways. Used by ``mappers.metadata``; no XML and no I/O here.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Final

from mappers.documents import Author, Code
from mappers.errors import MappingError

RIM_NS: Final = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM_NS: Final = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"

# MSSANTE.md §5.3 (IHE ITI TF-3 §4.2.5, confirmed in the ANS sample).
SUBMISSION_SET_NODE: Final = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR: Final = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE: Final = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID: Final = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID: Final = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID: Final = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
DOCUMENT_ENTRY_TYPE: Final = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_AUTHOR: Final = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE: Final = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_TYPE_CODE: Final = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_CONFIDENTIALITY: Final = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT_CODE: Final = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY_TYPE: Final = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING: Final = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_EVENT_CODE: Final = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_PATIENT_ID: Final = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID: Final = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
HAS_MEMBER: Final = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"

RPPS_OID: Final = "1.2.250.1.71.4.2.1"
STRUCTURE_OID: Final = "1.2.250.1.71.4.2.2"
LOINC_OID: Final = "2.16.840.1.113883.6.1"
CONTENT_TYPE_OID: Final = "1.2.250.1.213.2.2"
CLASS_CODE_OID: Final = "1.2.250.1.213.1.1.4.1"
CONFIDENTIALITY_HL7_OID: Final = "2.16.840.1.113883.5.25"
CONFIDENTIALITY_FR_OID: Final = "1.2.250.1.213.1.1.4.13"
FACILITY_TYPE_OID: Final = "1.2.250.1.71.4.2.4"
PRACTICE_SETTING_OID: Final = "1.2.250.1.213.1.1.4.9"
IHE_FORMAT_OID: Final = "1.3.6.1.4.1.19376.1.2.3"

NORMAL: Final = Code("N", "Normal", CONFIDENTIALITY_HL7_OID)
MASQUE_PS: Final = Code("MASQUE_PS", "Masqué aux professionnels de santé", CONFIDENTIALITY_FR_OID)
INVISIBLE_PATIENT: Final = Code("INVISIBLE_PATIENT", "Non visible par le patient", CONFIDENTIALITY_FR_OID)
# Label not found in the stored sources (MSSANTE.md §5.4 names the code only).
INVISIBLE_REP_LEGAUX: Final = Code(
    "INVISIBLE_REP_LEGAUX", "Non visible par les représentants légaux", CONFIDENTIALITY_FR_OID
)
MASKING_CODES: Final = {code.code: code for code in (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX)}
"""The French confidentiality codes a sender may set on a document (MSSANTE.md §7.14), by code."""
# CDA R2 level 1 with a PDF body (IHE XDS-SD); JDV_J10 / JDV_J60 map CDA N1 to this code. The scheme is the
# IHE format code system; the 1.2.250.1.213.1.1.4.12 seen in one tool is doubtful (MSSANTE.md §5.4).
PDF_FORMAT: Final = Code(
    "urn:ihe:iti:xds-sd:pdf:2008", "Document à corps non structuré en Pdf/A-1", IHE_FORMAT_OID
)


class MetadataValueError(MappingError):
    """A metadata value (time, CX, XCN …) that does not have the expected HL7 v2 shape."""


_ESCAPES: Final = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def hl7_escape(text: str) -> str:
    """Escape HL7 v2 delimiters so a name with ``^`` or ``&`` cannot shift the components."""
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text


_UNESCAPE: Final = {escaped[1]: raw for raw, escaped in _ESCAPES}
_ESCAPE_SEQUENCE: Final = re.compile(r"\\([EFSTR])\\")


def hl7_unescape(text: str) -> str:
    """Inverse of ``hl7_escape``, in one left-to-right pass: ``\\E\\R\\E\\`` is ``\\R\\``, not ``\\~\\``."""
    return _ESCAPE_SEQUENCE.sub(lambda match: _UNESCAPE[match.group(1)], text)


def _components(value: str, separator: str = "^") -> list[str]:
    return [hl7_unescape(part) for part in value.split(separator)]


def format_time(moment: datetime) -> str:
    """``AAAAMMJJhhmmss`` in UTC (MSSANTE.md §5.4); naive times are refused, not guessed."""
    if moment.tzinfo is None:
        raise MetadataValueError(f"time {moment.isoformat()} has no time zone; metadata times are UTC")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def parse_time(value: str) -> datetime:
    """A DTM of 4 to 14 digits (``AAAA[MM[JJ[hh[mm[ss]]]]]``), read as UTC."""
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) in (4, 6, 8, 10, 12, 14)):
        raise MetadataValueError(f"time {text!r} is not AAAAMMJJhhmmss")
    padded = text + "0101000000"[len(text) - 4 :] if len(text) < 14 else text
    try:
        return datetime.strptime(padded, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError as error:
        raise MetadataValueError(f"time {text!r} is not a valid date: {error}") from error


def format_cx(identifier: str, oid: str, type_code: str = "NH") -> str:
    """``<id>^^^&<OID>&ISO^<type>`` — NH for the INS, PI for a local IPP (MSSANTE.md §5.4)."""
    return f"{hl7_escape(identifier)}^^^&{oid}&ISO^{type_code}"


def parse_cx(value: str) -> tuple[str, str, str]:
    """``(identifier, oid, type)`` of a CX; the OID is the universal id of the assigning authority."""
    parts = value.strip().split("^")
    if len(parts) < 4 or not parts[0]:
        raise MetadataValueError(f"patient id {value!r} is not in CX form id^^^&OID&ISO")
    authority = parts[3].split("&")
    oid = authority[1] if len(authority) > 1 else authority[0]
    type_code = parts[4] if len(parts) > 4 else ""
    return hl7_unescape(parts[0]), oid, type_code


_RPPS: Final = re.compile(r"[0-9]{11}")
_RPPS_NATIONAL_ID: Final = re.compile(r"8[0-9]{11}")


def national_ps_id(identifier: str) -> str:
    """The identifiant national (IdNat_PS) the ANS writes under OID 1.2.250.1.71.4.2.1: "8" + the
    11-digit RPPS number; any other identifier (already national, an ADELI-based "0…") as it is.

    The CDA header and METADATA.XML both carry this form, so an author reads back the same from either.
    """
    identifier = identifier.strip()
    return "8" + identifier if _RPPS.fullmatch(identifier) else identifier


def check_rpps(value: str) -> str:
    """A professional's RPPS number as typed (11 digits, spaces allowed, or its national id "8" + 11
    digits), as its national id; ``MetadataValueError`` otherwise."""
    national = national_ps_id(value.replace(" ", ""))
    if not _RPPS_NATIONAL_ID.fullmatch(national):
        raise MetadataValueError(f"{value!r} is not an RPPS number (11 digits, or 8 followed by the 11)")
    return national


def format_xcn(author: Author) -> str:
    """authorPerson ``<IdNat_PS>^<NOM>^<Prénom>^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS``."""
    family = hl7_escape(author.family_name or "")
    given = hl7_escape(author.given_name or "")
    if author.rpps:
        return f"{hl7_escape(national_ps_id(author.rpps))}^{family}^{given}^^^^^^&{RPPS_OID}&ISO^D^^^IDNPS"
    return f"^{family}^{given}"


def parse_xcn(value: str) -> tuple[str | None, str | None, str | None]:
    """``(rpps, family, given)`` of an XCN; empty components become ``None``."""
    parts = _components(value)
    parts += [""] * (3 - len(parts))
    return parts[0] or None, parts[1] or None, parts[2] or None


def format_xon(name: str, structure_id: str | None) -> str:
    """authorInstitution ``<Nom>^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<id national de structure>``."""
    if structure_id:
        return f"{hl7_escape(name)}^^^^^&{STRUCTURE_OID}&ISO^IDNST^^^{hl7_escape(structure_id)}"
    return hl7_escape(name)


def parse_xon(value: str) -> tuple[str | None, str | None]:
    """``(name, structure id)`` of an XON (id in component 10, as the ANS sample writes it)."""
    parts = _components(value)
    name = parts[0] or None
    structure_id = parts[9] if len(parts) > 9 and parts[9] else None
    return name, structure_id


def format_code_triplet(code: Code) -> str:
    """authorSpecialty ``<code>^<libellé>^<codeSystem>``."""
    return f"{hl7_escape(code.code)}^{hl7_escape(code.label)}^{code.scheme}"


def parse_code_option(value: str, what: str, scheme: str | None) -> Code:
    """``CODE^LABEL`` (``CODE^LABEL^SYSTEM`` when ``scheme`` is None), as an operator types a code in an
    option, a setting or an ``X-MSSGW-*`` field: code and label both required, since METADATA.XML and the
    CDA carry both. ``what`` names where it was typed, for the refusal."""
    parts = value.split("^")
    if len(parts) != (3 if scheme is None else 2) or not all(p.strip() for p in parts):
        form = "CODE^LABEL^SYSTEM" if scheme is None else "CODE^LABEL"
        raise MetadataValueError(f"{what}: {value!r} is not {form}")
    code, system = parts[0].strip(), parts[2].strip() if scheme is None else scheme
    if any(c.isspace() for c in code + system):
        # HL7 codes and OIDs hold no white space (the CDA N1 schema's CodeValue and Oid say so too).
        raise MetadataValueError(f"{what}: {value!r}: the code and the code system cannot hold white space")
    return Code(code, parts[1].strip(), system)


def parse_code_triplet(value: str) -> Code:
    """Inverse of ``format_code_triplet``."""
    parts = _components(value) + ["", ""]
    return Code(code=parts[0], label=parts[1], scheme=parts[2])


def format_date(day: date) -> str:
    """PID-7 ``AAAAMMJJ``."""
    return day.strftime("%Y%m%d")


def parse_date(value: str) -> date:
    """PID-7 back to a date (a longer DTM keeps its date part)."""
    text = value.strip()[:8]
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError as error:
        raise MetadataValueError(f"birth date {value!r} is not AAAAMMJJ") from error

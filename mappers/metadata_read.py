"""Reading METADATA.XML back into records, tolerant of producers' variations, strict on XML safety.

Called by ``mappers.xdm`` on received packages (through ``mappers.metadata``, which re-exports it). Element
names are matched by local name (producers vary in prefixes and in nesting classifications); missing or bad
values become ``problems`` sentences rather than exceptions. XML is parsed by ``mappers.safe_xml`` only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - types only; parsing goes through defusedxml
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

from mappers import xds
from mappers.documents import Author, Code, Document, SubmissionSet
from mappers.documents import DocumentAction as DocumentAction  # re-exported: its readers import it from here
from mappers.errors import MappingError
from mappers.patient import Patient
from mappers.safe_xml import parse_xml
from mappers.sourcepatient import parse_patient

_T = TypeVar("_T")
# Stand-in for a missing required time, so a damaged package can still be shown; a problem is reported.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class MetadataError(MappingError):
    """A METADATA.XML that is well-formed but cannot describe a submission set."""


#: The extra-metadata slot French XDM producers write on a DocumentEntry: ``C`` a corrected (replacing)
#: version, ``D`` a deletion; the values of HL7 table 0085 that the consumer's OBX-11 carries.
ACTION_SLOT: Final = "urn:action:extraMetadataSlot"
_ACTIONS: Final = {"C": DocumentAction.REPLACEMENT, "D": DocumentAction.DELETION}
#: The slot value ``mappers.metadata`` writes for a document that is not an original.
ACTION_LETTERS: Final = {action: letter for letter, action in _ACTIONS.items()}
#: IHE ITI TF-3 §4.2.2: the associations that make a DocumentEntry replace another.
REPLACEMENT_ASSOCIATIONS: Final = frozenset(
    {"urn:ihe:iti:2007:AssociationType:RPLC", "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"}
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One DocumentEntry as read: the document (content empty until the file is found) and the checks."""

    document: Document
    uri: str | None
    sha1: str | None
    size: int | None
    patient_id: str | None
    patient: Patient | None


@dataclass(frozen=True, slots=True)
class Metadata:
    """A parsed METADATA.XML; ``problems`` are human-readable sentences about missing or bad values."""

    submission: SubmissionSet | None
    patient_id: str | None
    entries: tuple[Entry, ...]
    problems: tuple[str, ...]


def _first(items: Sequence[_T] | None) -> _T | None:
    return items[0] if items else None


def _local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _slots(element: ET.Element) -> dict[str, list[str]]:
    slots: dict[str, list[str]] = {}
    for slot in _children(element, "Slot"):
        values = [
            value.text or ""
            for value_list in _children(slot, "ValueList")
            for value in _children(value_list, "Value")
        ]
        slots.setdefault(slot.get("name", ""), []).extend(values)
    return slots


def _localized(element: ET.Element, name: str = "Name") -> str | None:
    for holder in _children(element, name):
        for string in _children(holder, "LocalizedString"):
            return string.get("value")
    return None


def _classifications(element: ET.Element, extra: Sequence[ET.Element]) -> list[ET.Element]:
    """Nested classifications plus top-level ones pointing at this object (both forms exist)."""
    ident = element.get("id")
    return _children(element, "Classification") + [
        c for c in extra if ident and c.get("classifiedObject") == ident
    ]


def _code(classification: ET.Element) -> Code:
    scheme = _slots(classification).get("codingScheme", [""])
    return Code(
        code=classification.get("nodeRepresentation", ""),
        label=_localized(classification) or "",
        scheme=scheme[0] if scheme else "",
    )


def _read_author(classification: ET.Element) -> Author:
    slots = _slots(classification)
    rpps = family = given = None
    if slots.get("authorPerson"):
        rpps, family, given = xds.parse_xcn(slots["authorPerson"][0])
    name = structure = None
    if slots.get("authorInstitution"):
        name, structure = xds.parse_xon(slots["authorInstitution"][0])
    specialty = role = None
    if slots.get("authorSpecialty"):
        specialty = xds.parse_code_triplet(slots["authorSpecialty"][0])
    if slots.get("authorRole"):
        role = xds.parse_code_triplet(slots["authorRole"][0])
    return Author(rpps, family, given, name, structure, specialty, role)


def _signer(slots: dict[str, list[str]]) -> Author | None:
    values = slots.get("legalAuthenticator")
    if not values:
        return None
    rpps, family, given = xds.parse_xcn(values[0])
    return Author(rpps=rpps, family_name=family, given_name=given)


def _identifiers(element: ET.Element) -> dict[str, str]:
    return {
        child.get("identificationScheme", ""): child.get("value", "")
        for child in _children(element, "ExternalIdentifier")
    }


def _time(slots: dict[str, list[str]], name: str, where: str, problems: list[str]) -> datetime | None:
    values = slots.get(name)
    if not values:
        return None
    try:
        return xds.parse_time(values[0])
    except xds.MetadataValueError as error:
        problems.append(f"{where}: {name}: {error}")
        return None


def _read_submission(package: ET.Element, extra: Sequence[ET.Element], problems: list[str]) -> SubmissionSet:
    slots = _slots(package)
    ids = _identifiers(package)
    author = content_type = None
    for classification in _classifications(package, extra):
        scheme = classification.get("classificationScheme")
        if scheme == xds.SS_AUTHOR:
            author = _read_author(classification)
        elif scheme == xds.SS_CONTENT_TYPE:
            content_type = _code(classification)
    when = _time(slots, "submissionTime", "SubmissionSet", problems)
    if when is None:
        problems.append("SubmissionSet has no submissionTime")
    return SubmissionSet(
        unique_id=ids.get(xds.SS_UNIQUE_ID, ""),
        source_id=ids.get(xds.SS_SOURCE_ID, ""),
        submission_time=when or _EPOCH,
        author=author,
        content_type=content_type,
        title=_localized(package),
        comments=_localized(package, "Description"),
    )


def _read_entry(element: ET.Element, extra: Sequence[ET.Element], problems: list[str]) -> Entry:
    slots = _slots(element)
    ids = _identifiers(element)
    uri = _first(slots.get("URI"))
    where = f"DocumentEntry {uri or element.get('id', '?')}"
    codes: dict[str, list[Code]] = {}
    author = None
    for classification in _classifications(element, extra):
        scheme = classification.get("classificationScheme", "")
        if scheme == xds.DE_AUTHOR:
            author = author or _read_author(classification)
        else:
            codes.setdefault(scheme, []).append(_code(classification))
    type_code = _first(codes.get(xds.DE_TYPE_CODE))
    if type_code is None:
        problems.append(f"{where} has no typeCode")
    created = _time(slots, "creationTime", where, problems)
    if created is None:
        problems.append(f"{where} has no creationTime")
    unique_id = ids.get(xds.DE_UNIQUE_ID, "")
    if not unique_id:
        problems.append(f"{where} has no uniqueId")
    size: int | None = None
    if slots.get("size"):
        text = slots["size"][0].strip()
        size = int(text) if text.isascii() and text.isdigit() else None
        if size is None:
            problems.append(f"{where}: size {text!r} is not a number")
    patient_id = ids.get(xds.DE_PATIENT_ID)
    patient, patient_problems = parse_patient(
        patient_id, _first(slots.get("sourcePatientId")), slots.get("sourcePatientInfo", [])
    )
    problems.extend(f"{where}: {problem}" for problem in patient_problems)

    def first(scheme: str) -> Code | None:
        return _first(codes.get(scheme))

    document = Document(
        filename=uri or "",
        content=b"",
        mime_type=element.get("mimeType", "application/octet-stream"),
        title=_localized(element) or "",
        type_code=type_code or Code("", "", ""),
        creation_time=created or _EPOCH,
        unique_id=unique_id,
        class_code=first(xds.DE_CLASS_CODE),
        format_code=first(xds.DE_FORMAT_CODE),
        service_start=_time(slots, "serviceStartTime", where, problems),
        service_stop=_time(slots, "serviceStopTime", where, problems),
        author=author,
        confidentiality=tuple(c for c in codes.get(xds.DE_CONFIDENTIALITY, []) if c != xds.NORMAL),
        healthcare_facility_type=first(xds.DE_FACILITY_TYPE),
        practice_setting=first(xds.DE_PRACTICE_SETTING),
        language=(slots.get("languageCode") or ["fr-FR"])[0],
        event_codes=tuple(codes.get(xds.DE_EVENT_CODE, [])),
        legal_authenticator=_signer(slots),
    )
    sha1 = _first(slots.get("hash"))
    return Entry(document, uri, sha1.strip().lower() if sha1 else None, size, patient_id, patient)


def parse_metadata(data: bytes) -> Metadata:
    """Read a METADATA.XML; unsafe or malformed XML raises, missing values become ``problems``."""
    root = parse_xml(data, what="METADATA.XML")
    if _local(root.tag) != "SubmitObjectsRequest":
        raise MetadataError(f"METADATA.XML root is {_local(root.tag)!r}, not SubmitObjectsRequest")
    objects = [obj for holder in _children(root, "RegistryObjectList") for obj in holder]
    extra = [obj for obj in objects if _local(obj.tag) == "Classification"]
    packages = [obj for obj in objects if _local(obj.tag) == "RegistryPackage"]
    submissions = [
        p
        for p in packages
        if any(c.get("classificationNode") == xds.SUBMISSION_SET_NODE for c in _classifications(p, extra))
        or xds.SS_UNIQUE_ID in _identifiers(p)
    ]
    problems: list[str] = []
    if len(submissions) > 1:
        problems.append(f"METADATA.XML has {len(submissions)} submission sets; the first is used")
    submission = _read_submission(submissions[0], extra, problems) if submissions else None
    if submission is None:
        problems.append("METADATA.XML has no SubmissionSet")
    patient_id = _identifiers(submissions[0]).get(xds.SS_PATIENT_ID) if submissions else None
    entries = tuple(
        _read_entry(obj, extra, problems) for obj in objects if _local(obj.tag) == "ExtrinsicObject"
    )
    if not entries:
        problems.append("METADATA.XML lists no document")
    return Metadata(submission, patient_id, entries, tuple(problems))


def document_actions(data: bytes) -> dict[str, DocumentAction]:
    """Each DocumentEntry's uniqueId → what the sender asks for it, from one METADATA.XML.

    A deletion is the ``D`` of the action slot; a replacement is its ``C`` or an RPLC (XFRM_RPLC)
    association whose sourceObject is the entry; anything else is an original. Raises ``MetadataError`` for
    an action value that is neither: guessing would file a deletion as a new document.
    """
    root = parse_xml(data, what="METADATA.XML")
    objects = [obj for holder in _children(root, "RegistryObjectList") for obj in holder]
    replacing = {
        obj.get("sourceObject", "")
        for obj in objects
        if _local(obj.tag) == "Association" and obj.get("associationType") in REPLACEMENT_ASSOCIATIONS
    }
    actions: dict[str, DocumentAction] = {}
    for entry in (obj for obj in objects if _local(obj.tag) == "ExtrinsicObject"):
        unique_id = _identifiers(entry).get(xds.DE_UNIQUE_ID, "")
        values = [value.strip().upper() for value in _slots(entry).get(ACTION_SLOT, []) if value.strip()]
        unknown = [value for value in values if value not in _ACTIONS]
        if unknown:
            raise MetadataError(
                f"DocumentEntry {unique_id or '?'}: {ACTION_SLOT} {unknown[0]!r} is not C or D"
            )
        if DocumentAction.DELETION in {_ACTIONS[value] for value in values}:
            actions[unique_id] = DocumentAction.DELETION
        elif values or entry.get("id") in replacing:
            actions[unique_id] = DocumentAction.REPLACEMENT
        else:
            actions[unique_id] = DocumentAction.ORIGINAL
    return actions

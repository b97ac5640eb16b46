"""METADATA.XML of an IHE XDM submission set: build it from records, and read it back into records.

Sits between ``mappers.xdm`` (the ZIP package) and ``mappers.xds`` (vocabulary). Writing follows the ebRIM
3.0 element order and the French conventions of MSSANTE.md §5.3–5.6; reading matches element names by local
name (producers vary in prefixes) and reports what is missing instead of failing. Untrusted XML goes
through ``mappers.safe_xml`` only.

Public API (stable):
    build_metadata(
        patient: Patient, entries: Sequence[tuple[Document, str]], submission: SubmissionSet
    ) -> bytes
    parse_metadata(data: bytes) -> Metadata        # raises XmlError / MetadataError
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET  # noqa: S405 - only builds XML; parsing goes through defusedxml
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

from mappers import xds
from mappers.documents import Author, Code, Document, SubmissionSet
from mappers.errors import MappingError
from mappers.patient import Patient
from mappers.safe_xml import parse_xml
from mappers.sourcepatient import format_source_patient_info, parse_patient

_XML_LANG: Final = "xml:lang"
_T = TypeVar("_T")
_SUBMISSION_ID: Final = "SubmissionSet01"
# Stand-in for a missing required time, so a damaged package can still be shown; a problem is reported.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class MetadataError(MappingError):
    """A METADATA.XML that is well-formed but cannot describe a submission set."""


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


# --- building -------------------------------------------------------------------------------------


# The tree is built with literal prefixed names and namespace declarations, so that the output has rim as
# the default namespace and lcm on the root (as MSSANTE.md §5.6) without touching ElementTree's global
# prefix registry; the result is namespace-well-formed and read back by namespace-aware parsers.
def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    return ET.SubElement(parent, tag, attributes)


def _slot(parent: ET.Element, name: str, *values: str) -> None:
    value_list = _sub(_sub(parent, "Slot", name=name), "ValueList")
    for value in values:
        _sub(value_list, "Value").text = value


def _name(parent: ET.Element, text: str, tag: str = "Name") -> None:
    _sub(_sub(parent, tag), "LocalizedString", charset="UTF8", value=text).set(_XML_LANG, "FR")


def _classify(parent: ET.Element, scheme: str, obj: str, ident: str, code: Code) -> None:
    element = _sub(
        parent,
        "Classification",
        classificationScheme=scheme,
        classifiedObject=obj,
        id=ident,
        nodeRepresentation=code.code,
    )
    _slot(element, "codingScheme", code.scheme)
    _name(element, code.label)


def _author(parent: ET.Element, scheme: str, obj: str, author: Author) -> None:
    element = _sub(
        parent,
        "Classification",
        classificationScheme=scheme,
        classifiedObject=obj,
        id=f"{obj}-author",
        nodeRepresentation="",
    )
    if author.rpps or author.family_name or author.given_name:
        _slot(element, "authorPerson", xds.format_xcn(author))
    if author.institution_name:
        _slot(
            element,
            "authorInstitution",
            xds.format_xon(author.institution_name, author.institution_id),
        )
    if author.specialty:
        _slot(element, "authorSpecialty", xds.format_code_triplet(author.specialty))


def _identify(parent: ET.Element, scheme: str, obj: str, ident: str, value: str, label: str) -> None:
    element = _sub(
        parent,
        "ExternalIdentifier",
        id=ident,
        identificationScheme=scheme,
        registryObject=obj,
        value=value,
    )
    _name(element, label)


def _patient_ids(patient: Patient) -> tuple[str, str]:
    """(patientId, sourcePatientId): the INS as NH; the local IPP as PI when known (MSSANTE.md §5.4)."""
    patient_id = xds.format_cx(patient.matricule, patient.oid, "NH")
    if patient.local_id and patient.local_id_root:
        return patient_id, xds.format_cx(patient.local_id, patient.local_id_root, "PI")
    return patient_id, patient_id


def _document_entry(parent: ET.Element, number: int, document: Document, uri: str, patient: Patient) -> str:
    obj = f"Document{number:02d}"
    patient_id, source_patient_id = _patient_ids(patient)
    entry = _sub(parent, "ExtrinsicObject", id=obj, mimeType=document.mime_type)
    entry.set("objectType", xds.DOCUMENT_ENTRY_TYPE)
    _slot(entry, "creationTime", xds.format_time(document.creation_time))
    _slot(entry, "languageCode", document.language)
    if document.service_start:
        _slot(entry, "serviceStartTime", xds.format_time(document.service_start))
    if document.service_stop:
        _slot(entry, "serviceStopTime", xds.format_time(document.service_stop))
    _slot(entry, "sourcePatientId", source_patient_id)
    _slot(entry, "sourcePatientInfo", *format_source_patient_info(patient))
    _slot(entry, "hash", hashlib.sha1(document.content, usedforsecurity=False).hexdigest())
    _slot(entry, "size", str(len(document.content)))
    _slot(entry, "URI", uri)
    _name(entry, document.title)
    if document.author:
        _author(entry, xds.DE_AUTHOR, obj, document.author)
    if document.class_code:
        _classify(entry, xds.DE_CLASS_CODE, obj, f"{obj}-classCode", document.class_code)
    _classify(entry, xds.DE_TYPE_CODE, obj, f"{obj}-typeCode", document.type_code)
    codes = (xds.NORMAL, *(c for c in document.confidentiality if c != xds.NORMAL))
    for index, code in enumerate(codes, start=1):
        _classify(entry, xds.DE_CONFIDENTIALITY, obj, f"{obj}-confidentiality{index}", code)
    if document.format_code:
        _classify(entry, xds.DE_FORMAT_CODE, obj, f"{obj}-formatCode", document.format_code)
    if document.healthcare_facility_type:
        _classify(
            entry,
            xds.DE_FACILITY_TYPE,
            obj,
            f"{obj}-healthcareFacilityTypeCode",
            document.healthcare_facility_type,
        )
    if document.practice_setting:
        _classify(
            entry,
            xds.DE_PRACTICE_SETTING,
            obj,
            f"{obj}-practiceSettingCode",
            document.practice_setting,
        )
    _identify(entry, xds.DE_PATIENT_ID, obj, f"{obj}-patientId", patient_id, "XDSDocumentEntry.patientId")
    _identify(
        entry,
        xds.DE_UNIQUE_ID,
        obj,
        f"{obj}-uniqueId",
        document.unique_id,
        "XDSDocumentEntry.uniqueId",
    )
    return obj


def build_metadata(
    patient: Patient, entries: Sequence[tuple[Document, str]], submission: SubmissionSet
) -> bytes:
    """METADATA.XML for one patient: SubmissionSet, one DocumentEntry per (document, URI), HasMember links."""
    root = ET.Element("lcm:SubmitObjectsRequest", {"xmlns:lcm": xds.LCM_NS, "xmlns": xds.RIM_NS})
    objects = _sub(root, "RegistryObjectList")
    package = _sub(objects, "RegistryPackage", id=_SUBMISSION_ID)
    _slot(package, "submissionTime", xds.format_time(submission.submission_time))
    if submission.title:
        _name(package, submission.title)
    if submission.comments:
        _name(package, submission.comments, tag="Description")
    if submission.author:
        _author(package, xds.SS_AUTHOR, _SUBMISSION_ID, submission.author)
    if submission.content_type:
        _classify(
            package, xds.SS_CONTENT_TYPE, _SUBMISSION_ID, "SubmissionSet01-contentTypeCode",
            submission.content_type,
        )  # fmt: skip
    node = _sub(package, "Classification", classificationNode=xds.SUBMISSION_SET_NODE)
    node.set("classifiedObject", _SUBMISSION_ID)
    node.set("id", "SubmissionSet01-node")
    patient_id, _ = _patient_ids(patient)
    for scheme, suffix, value in (
        (xds.SS_PATIENT_ID, "patientId", patient_id),
        (xds.SS_SOURCE_ID, "sourceId", submission.source_id),
        (xds.SS_UNIQUE_ID, "uniqueId", submission.unique_id),
    ):
        _identify(
            package, scheme, _SUBMISSION_ID, f"SubmissionSet01-{suffix}", value,
            f"XDSSubmissionSet.{suffix}",
        )  # fmt: skip
    members = [
        _document_entry(objects, number, document, uri, patient)
        for number, (document, uri) in enumerate(entries, start=1)
    ]
    for number, member in enumerate(members, start=1):
        association = _sub(
            objects,
            "Association",
            id=f"Association{number:02d}",
            associationType=xds.HAS_MEMBER,
            sourceObject=_SUBMISSION_ID,
            targetObject=member,
        )
        _slot(association, "SubmissionSetStatus", "Original")
    ET.indent(root, space=" ")
    body: bytes = ET.tostring(root, encoding="unicode").encode("utf-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


# --- reading --------------------------------------------------------------------------------------


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
    specialty = None
    if slots.get("authorSpecialty"):
        specialty = xds.parse_code_triplet(slots["authorSpecialty"][0])
    return Author(rpps, family, given, name, structure, specialty)


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
        size = int(text) if text.isdigit() else None
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

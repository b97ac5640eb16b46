"""METADATA.XML of an IHE XDM submission set: build it from records, and read it back into records.

Sits between ``mappers.xdm`` (the ZIP package) and ``mappers.xds`` (vocabulary). Writing follows the ebRIM
3.0 element order and the French conventions of MSSANTE.md §5.3–5.6; reading lives in
``mappers.metadata_read`` and is re-exported here. Never parses XML itself.

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
from typing import Final

from mappers import xds
from mappers.documents import Author, Code, Document, SubmissionSet
from mappers.metadata_read import ACTION_LETTERS, ACTION_SLOT, Entry, Metadata, MetadataError, parse_metadata
from mappers.patient import Patient
from mappers.safe_xml import sanitize_tree
from mappers.sourcepatient import format_source_patient_info

_XML_LANG: Final = "xml:lang"
_SUBMISSION_ID: Final = "SubmissionSet01"

__all__ = ["Entry", "Metadata", "MetadataError", "build_metadata", "parse_metadata"]


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
    if author.role:
        _slot(element, "authorRole", xds.format_code_triplet(author.role))
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
    signer = document.legal_authenticator
    if signer and (signer.rpps or signer.family_name):
        _slot(entry, "legalAuthenticator", xds.format_xcn(signer))
    if document.service_start:
        _slot(entry, "serviceStartTime", xds.format_time(document.service_start))
    if document.service_stop:
        _slot(entry, "serviceStopTime", xds.format_time(document.service_stop))
    _slot(entry, "sourcePatientId", source_patient_id)
    _slot(entry, "sourcePatientInfo", *format_source_patient_info(patient))
    _slot(entry, "hash", hashlib.sha1(document.content, usedforsecurity=False).hexdigest())
    _slot(entry, "size", str(len(document.content)))
    _slot(entry, "URI", uri)
    if document.action in ACTION_LETTERS:
        # The French packaging tools' slot (MSSANTE.md §5.4), which ``document_actions`` reads back. No RPLC
        # association: its target is the replaced entry's id in a registry the sender never saw.
        _slot(entry, ACTION_SLOT, ACTION_LETTERS[document.action])
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
    for index, code in enumerate(document.event_codes, start=1):
        _classify(entry, xds.DE_EVENT_CODE, obj, f"{obj}-eventCode{index}", code)
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
    sanitize_tree(root)
    ET.indent(root, space=" ")
    body: bytes = ET.tostring(root, encoding="unicode").encode("utf-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"

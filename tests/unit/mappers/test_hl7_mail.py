"""The mail record of an HL7 transmission: recipients by route, the PID patient checked against the CDA."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from mappers import xds
from mappers.documents import Code, DocumentAction, HeaderDefaults, SubmissionSet
from mappers.errors import MappingError
from mappers.hl7_mail import transmission_record
from mappers.hl7_transmission import read_transmission
from mappers.metadata import build_metadata
from mappers.metadata_read import document_actions
from mappers.records import Mailbox
from tests.support.hl7 import FIRST_VERSION_ID, PID_PATIENT, PROS_ONLY, message, patient_cda, replacement_cda

AUTHOR = Mailbox("dpi@hopital.mssante.fr", "DPI CHU X")
WHEN = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_professionals_and_patient_with_the_cda_metadata() -> None:
    record = transmission_record(read_transmission(message(cdas=(patient_cda(),))), AUTHOR, WHEN)
    assert [m.address for m in record.to] == [
        "dr.martin@hopital.mssante.fr",
        "279035121518989@patient.mssante.fr",
    ]
    assert record.author == AUTHOR and record.reply_to == Mailbox("secretariat@hopital.mssante.fr")
    [document] = record.documents
    assert document.title == "Compte rendu de consultation" and document.type_code.code == "11488-4"
    assert record.patient is not None and record.patient.matricule == PID_PATIENT.matricule


def test_professionals_only_masks_from_the_flags() -> None:
    er7 = message(flags=PROS_ONLY, cdas=(patient_cda(),))
    record = transmission_record(read_transmission(er7), AUTHOR, WHEN)
    assert [m.address for m in record.to] == ["dr.martin@hopital.mssante.fr"]
    assert [c.code for c in record.documents[0].confidentiality] == ["INVISIBLE_PATIENT"]


def test_a_cda_of_another_patient_is_refused() -> None:
    other = dataclasses.replace(PID_PATIENT, birth_name="AUTRE")
    with pytest.raises(MappingError, match="AUTRE|TEST"):
        transmission_record(read_transmission(message(cdas=(patient_cda(other),))), AUTHOR, WHEN)


@pytest.mark.parametrize(
    ("kind", "status", "content", "action"),
    [
        ("MDM^T10^MDM_T02", "C", replacement_cda(), DocumentAction.REPLACEMENT),
        ("MDM^T04^MDM_T02", "D", patient_cda(), DocumentAction.DELETION),
    ],
)
def test_a_replacement_or_deletion_is_marked_in_the_package_metadata(
    kind: str, status: str, content: bytes, action: DocumentAction
) -> None:
    er7 = message(kind=kind, version="2.6", status=status, flags=PROS_ONLY, cdas=(content,))
    record = transmission_record(read_transmission(er7), AUTHOR, WHEN)
    [document] = record.documents
    assert document.action is action
    assert record.patient is not None
    metadata = build_metadata(
        record.patient, [(document, "DOC0001.XML")], SubmissionSet("1.2.3", "1.2", WHEN)
    )
    # What the receiving PFI (mssgw's own consumer side among them) reads back from METADATA.XML.
    assert document_actions(metadata) == {document.unique_id: action}


def test_a_replacement_names_the_version_it_replaces_in_its_cda() -> None:
    er7 = message(kind="MDM^T10^MDM_T02", version="2.6", status="C", cdas=(replacement_cda(),))
    [document] = transmission_record(read_transmission(er7), AUTHOR, WHEN).documents
    assert FIRST_VERSION_ID.encode() in document.content and document.unique_id != FIRST_VERSION_ID


def test_a_replacement_whose_cda_names_no_earlier_version_is_refused() -> None:
    er7 = message(kind="MDM^T10^MDM_T02", version="2.6", status="C", cdas=(patient_cda(),))
    with pytest.raises(MappingError, match="must name the document it replaces"):
        transmission_record(read_transmission(er7), AUTHOR, WHEN)


def test_the_xds_only_codes_come_from_the_document_settings_and_an_n1_keeps_its_pdf_format() -> None:
    classes = Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
    structured = Code("urn:mssgw:test:cr", "Format de test", "1.2.250.1.999.9.1")
    defaults = HeaderDefaults(class_code=classes, format_code=structured)
    er7 = message(cdas=(patient_cda(),))
    [document] = transmission_record(read_transmission(er7), AUTHOR, WHEN, defaults).documents
    assert (document.class_code, document.format_code) == (classes, xds.PDF_FORMAT)

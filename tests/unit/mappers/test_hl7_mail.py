"""The mail record of an HL7 transmission: recipients by route, the PID patient checked against the CDA, the
body from the CORPSMAIL_* texts of its readers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from mappers import xds
from mappers.documents import Code, DocumentAction, HeaderDefaults, SubmissionSet
from mappers.errors import MappingError
from mappers.hl7_mail import transmission_record
from mappers.hl7_transmission import Hl7Refusal, read_transmission
from mappers.metadata import build_metadata
from mappers.metadata_read import document_actions
from mappers.records import Mailbox
from tests.support.hl7 import (
    FIRST_VERSION_ID,
    PID_PATIENT,
    PROS_ONLY,
    body_obx,
    message,
    patient_cda,
    replacement_cda,
)

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
    # No CORPSMAIL text: the default body tells the reader what the mail does to the earlier document.
    assert ("remplace" if action is DocumentAction.REPLACEMENT else "retiré") in record.body_text
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


def test_a_mail_to_professionals_and_patient_carries_both_bodies() -> None:
    bodies = (
        body_obx("CORPSMAIL_PS", "Cher confrère, voici le compte rendu de votre patiente."),
        body_obx("CORPSMAIL_PATIENT", "Madame, votre compte rendu d’imagerie est joint."),
    )
    record = transmission_record(
        read_transmission(message(cdas=(patient_cda(),), extra=bodies)), AUTHOR, WHEN
    )
    assert record.body_text == (
        "Cher confrère, voici le compte rendu de votre patiente.\n\n"
        "Madame, votre compte rendu d’imagerie est joint."
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (PROS_ONLY, "Pour les professionnels."),
        ({name: False for name in PROS_ONLY} | {"DESTMSSANTEPAT": True}, "Pour le patient, accentué."),
    ],
    ids=["professionals-only", "patient-only"],
)
def test_each_single_route_mail_carries_its_readers_body_only(flags: dict[str, bool], expected: str) -> None:
    bodies = (
        body_obx("CORPSMAIL_PS", "Pour les professionnels."),
        body_obx("CORPSMAIL_PATIENT", "Pour le patient, accentué.", "iso-8859-15"),
    )
    recipients = () if flags.get("DESTMSSANTEPAT") else ("dr.martin@hopital.mssante.fr",)
    er7 = message(flags=flags, recipients=recipients, cdas=(patient_cda(),), extra=bodies)
    assert transmission_record(read_transmission(er7), AUTHOR, WHEN).body_text == expected


def test_a_body_that_is_not_base64_is_refused_with_102() -> None:
    bad = "OBX|40|ED|CORPSMAIL_PS^Corps du mail^MetaDMPMSS||^TEXT^^Base64^!!||||||F"
    with pytest.raises(Hl7Refusal, match="CORPSMAIL_PS") as refused:
        read_transmission(message(flags=PROS_ONLY, cdas=(patient_cda(),), extra=(bad,)))
    assert refused.value.code == 102


def test_the_xds_only_codes_come_from_the_document_settings_and_an_n1_keeps_its_pdf_format() -> None:
    classes = Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
    structured = Code("urn:mssgw:test:cr", "Format de test", "1.2.250.1.999.9.1")
    defaults = HeaderDefaults(class_code=classes, format_code=structured)
    er7 = message(cdas=(patient_cda(),))
    [document] = transmission_record(read_transmission(er7), AUTHOR, WHEN, defaults).documents
    assert (document.class_code, document.format_code) == (classes, xds.PDF_FORMAT)

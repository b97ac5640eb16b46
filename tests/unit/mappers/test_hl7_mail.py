"""The mail record of an HL7 transmission: recipients by route, the PID patient checked against the CDA."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from mappers.errors import MappingError
from mappers.hl7_mail import transmission_record
from mappers.hl7_transmission import read_transmission
from mappers.records import Mailbox
from tests.support.hl7 import PID_PATIENT, PROS_ONLY, message, patient_cda

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

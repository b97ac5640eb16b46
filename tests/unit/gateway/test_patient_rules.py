"""Rules on outgoing patient mail: each refusal is checked with its exact sentence and SMTP code."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.channels.rules import check_patient_mail
from mappers import ins
from mappers.patient import Sex
from mappers.records import Mailbox, MessageRecord
from tests.unit.mappers import samples

PATIENT_ADDRESS = "279035121518989@patient.mssante.fr"
MAX = 25 * 1024 * 1024


def record(**changes: object) -> MessageRecord:
    values: dict[str, object] = {
        "author": Mailbox("dr.chaput@hopital.test.mssante.fr"),
        "to": (Mailbox(PATIENT_ADDRESS),),
        "subject": "Ordonnance",
        "patient": samples.patient(oid=ins.NIR_OID),
    }
    values.update(changes)
    return MessageRecord(**values)  # type: ignore[arg-type]


def reply(rec: MessageRecord, to: str = PATIENT_ADDRESS, size: int = 1000, test_mode: bool = False) -> str:
    refusal = check_patient_mail(rec, [to], size, test_mode=test_mode, max_size=MAX)
    assert refusal is not None
    return refusal.smtp_reply


def test_a_qualified_patient_message_passes_and_professional_mail_is_not_concerned() -> None:
    assert check_patient_mail(record(), [PATIENT_ADDRESS], 1000, test_mode=False, max_size=MAX) is None
    bare = record(patient=None)
    assert check_patient_mail(bare, ["dr.x@cabinet.mssante.fr"], 10**9, test_mode=False, max_size=MAX) is None


def test_a_patient_address_with_a_wrong_key_is_refused() -> None:
    assert reply(record(), to="279035121518988@patient.mssante.fr") == (
        "553 5.1.3 recipient 2************88@patient.mssante.fr is not a valid patient address: "
        "key 89 expected, got 88"
    )


def test_no_patient_identity_is_refused_naming_the_whole_identity() -> None:
    assert reply(record(patient=None)) == (
        "550 5.7.1 mail to a patient address needs the patient's qualified INS; missing: the patient's "
        "identity (matricule, OID, birth name, first given name, birth date, sex)"
    )


def test_missing_traits_are_each_named() -> None:
    patient = samples.patient(oid=ins.NIR_OID, birth_date=None, sex=Sex.UNKNOWN, given_name="")
    assert reply(record(patient=patient)) == (
        "550 5.7.1 mail to a patient address needs the patient's qualified INS; missing: first given name, "
        "birth date, sex"
    )


def test_an_oid_that_is_not_an_ins_authority_is_refused() -> None:
    patient = samples.patient(oid="1.2.250.1.213.1.4.2")
    assert reply(record(patient=patient)) == (
        "550 5.7.1 mail to a patient address needs a qualified INS: patient id 2************89 is not an "
        "INS: OID 1.2.250.1.213.1.4.2 is not an INS authority"
    )


def test_a_matricule_with_a_bad_key_is_refused() -> None:
    patient = samples.patient(oid=ins.NIR_OID, matricule="279035121518988")
    assert reply(record(patient=patient), to="279035121518989@patient.mssante.fr") == (
        "550 5.7.1 mail to a patient address needs a qualified INS: INS 2************88 is not a valid "
        "matricule: key 89 expected, got 88"
    )


def test_the_address_must_be_the_patient_of_the_message() -> None:
    assert reply(record(), to="146026322000196@patient.mssante.fr") == (
        "550 5.7.1 recipient 1************96@patient.mssante.fr is not the patient of this message "
        "(INS 2************89): one patient per message"
    )


@pytest.mark.parametrize(("oid", "name"), [(ins.TEST_OID, "INS-NIR-TEST"), (ins.DEMO_OID, "INS-NIR-DEMO")])
def test_test_and_demo_oids_are_refused_outside_test_mode(oid: str, name: str) -> None:
    rec = record(patient=samples.patient(oid=oid))
    assert reply(rec) == (
        f"550 5.7.1 the patient's INS comes from the {name} authority ({oid}), which is for test data "
        "only; refused unless gateway.test_mode = true"
    )
    assert check_patient_mail(rec, [PATIENT_ADDRESS], 1000, test_mode=True, max_size=MAX) is None


def test_a_document_hidden_from_the_patient_is_never_sent_to_the_patient() -> None:
    document = samples.cda_document(samples.patient(oid=ins.NIR_OID))
    rec = record(documents=(document,))
    assert reply(rec) == (
        f'550 5.7.1 document "CR d\'imagerie - Scanner" ({document.filename}) is marked INVISIBLE_PATIENT '
        "(not visible to the patient) and is never sent to a patient address"
    )
    visible = dataclasses.replace(document, confidentiality=())
    assert (
        check_patient_mail(
            record(documents=(visible,)), [PATIENT_ADDRESS], 1000, test_mode=False, max_size=MAX
        )
        is None
    )


def test_a_message_over_the_patient_size_limit_is_refused() -> None:
    assert reply(record(), size=MAX + 1) == (
        f"552 5.3.4 message of {MAX + 1} bytes is larger than the {MAX} bytes accepted for a patient "
        "address (Mon Espace Santé limit, channels.patient_max_size)"
    )
    assert check_patient_mail(record(), [PATIENT_ADDRESS], MAX, test_mode=False, max_size=MAX) is None

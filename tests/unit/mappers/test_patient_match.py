"""One patient per message: a declared patient against the patients the documents name, item by item."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers import ins, xdm
from mappers.identity import Difference, differences
from mappers.patient import Patient, Sex
from mappers.patient_match import NamedPatient, PatientMismatchError, message_patients, one_patient
from mappers.records import Attachment, Mailbox, MessageRecord

from .samples import NOW, cda_document, patient

OTHER_MATRICULE = "180077512345623"  # valid key, another person


def test_the_same_patient_has_no_differences() -> None:
    assert differences(patient(), patient()) == ()


def test_names_compare_without_case_or_extra_spaces() -> None:
    assert differences(patient(), patient(birth_name="pat-trois ", given_name="  Dominique")) == ()


def test_every_item_that_differs_is_named_with_both_values_and_the_ins_masked() -> None:
    other = patient(
        matricule=OTHER_MATRICULE,
        oid=ins.NIR_OID,
        birth_name="MARTIN",
        given_name="Paul",
        birth_date=date(1980, 7, 7),
        sex=Sex.MALE,
    )
    assert differences(patient(), other) == (
        Difference("INS matricule", "2************89", "1************23"),
        Difference("INS OID", ins.TEST_OID, ins.NIR_OID),
        Difference("birth name", "PAT-TROIS", "MARTIN"),
        Difference("first given name", "DOMINIQUE", "Paul"),
        Difference("birth date", "1979-03-28", "1980-07-07"),
        Difference("sex", "F", "M"),
    )


_CHANGES = {
    "INS matricule": {"matricule": OTHER_MATRICULE},
    "INS OID": {"oid": ins.NIA_OID},
    "birth name": {"birth_name": "DURAND"},
    "first given name": {"given_name": "CAMILLE"},
    "birth date": {"birth_date": date(1979, 3, 29)},
    "sex": {"sex": Sex.UNKNOWN},
}


@given(st.sets(st.sampled_from(sorted(_CHANGES)), min_size=0))
def test_exactly_the_changed_items_are_reported(changed: set[str]) -> None:
    values: dict[str, object] = {}
    for item in changed:
        values.update(_CHANGES[item])
    other = patient(**values)
    assert {d.item for d in differences(patient(), other)} == changed
    assert {d.item for d in differences(other, patient())} == changed


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(_names, _names, st.dates(), st.sampled_from(list(Sex)))
def test_a_patient_never_differs_from_itself_and_no_full_ins_is_shown(
    birth_name: str, given_name: str, born: date, sex: Sex
) -> None:
    declared = Patient("279035121518989", ins.NIR_OID, birth_name, given_name, born, sex)
    assert differences(declared, dataclasses.replace(declared)) == ()
    found = differences(declared, patient(matricule=OTHER_MATRICULE))
    shown = " ".join(f"{d.declared} {d.named}" for d in found)
    assert "279035121518989" not in shown and OTHER_MATRICULE not in shown


def test_one_patient_takes_the_first_document_s_patient_when_none_is_declared() -> None:
    named = [NamedPatient("a.xml", patient()), NamedPatient("b.xml", patient(given_name="dominique"))]
    assert one_patient(None, "the patient file", named) == patient()


def test_the_declared_patient_takes_the_ipp_and_birth_place_the_cda_gives() -> None:
    declared = patient(local_id=None, local_id_root=None, birth_place_code=None)
    settled = one_patient(declared, "the patient file", [NamedPatient("cr.xml", patient())])
    assert settled is not None
    assert (settled.local_id, settled.local_id_root, settled.birth_place_code) == (
        "1234567890121",
        "1.2.3.4.567.8.9.10",
        "63220",
    )
    own = patient(local_id="42", local_id_root="1.2.3", birth_place_code="75056")
    assert one_patient(own, "the patient file", [NamedPatient("cr.xml", patient())]) == own  # given wins


def test_one_patient_lists_each_document_that_disagrees() -> None:
    named = [
        NamedPatient("a.xml", patient(birth_name="MARTIN")),
        NamedPatient("b.xml", None),
    ]
    with pytest.raises(PatientMismatchError) as caught:
        one_patient(patient(), "X-MSSGW-Patient", named)
    assert str(caught.value) == (
        "one patient per message: a.xml: birth name PAT-TROIS in X-MSSGW-Patient, MARTIN in the document"
        " | b.xml: the document names no patient (no INS identifier)"
    )


def _record(*attachments: Attachment) -> MessageRecord:
    return MessageRecord(Mailbox("a@b.test"), (Mailbox("c@d.test"),), "x", attachments=attachments)


def test_a_bare_cda_attachment_and_the_cdas_of_an_attached_package_are_found() -> None:
    other = patient(birth_name="MARTIN")
    bare = cda_document(other)
    package = xdm.build_package(patient(), [cda_document()], now=NOW)
    record = _record(
        Attachment("cr.xml", "text/xml", bare.content),
        Attachment("IHE_XDM.zip", "application/zip", package),
        Attachment("notes.xml", "text/xml", b"<notes/>"),
        Attachment("broken.xml", "text/xml", b"<notes>"),
    )
    assert message_patients(record) == [
        NamedPatient("cr.xml", other),
        NamedPatient("IHE_XDM.zip METADATA.XML", patient()),
        NamedPatient("IHE_XDM.zip DOC0001.XML", patient()),
    ]

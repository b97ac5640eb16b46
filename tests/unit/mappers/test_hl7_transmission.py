"""ORU^R01 / MDM^T02, T10, T04 read into a transmission record, written from the ANS profile."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.documents import DocumentAction
from mappers.hl7_ack import escape
from mappers.hl7_transmission import (
    REQUIRED_FLAGS,
    Hl7Refusal,
    Route,
    check_flags,
    decode_er7,
    read_header,
    read_transmission,
)
from mappers.patient import Sex
from tests.support.hl7 import CDA, PROS_AND_PATIENT, message


def test_oru_with_two_cdas_gives_the_record() -> None:
    n3 = b"<ClinicalDocument xmlns='urn:hl7-org:v3'><component/></ClinicalDocument>"
    body = "OBX|30|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS||Bonjour \\T\\ merci||||||F"
    record = read_transmission(message(cdas=(CDA, n3), extra=(body,), nte_fin=True))
    assert (record.sending_application, record.sending_facility) == ("DPI", "CHU_X")
    assert record.control_id == "MSG-42" and record.message_type == "ORU^R01" and record.charset == "utf-8"
    assert record.patient.matricule == "279035121518989"
    assert record.patient.oid == "1.2.250.1.213.1.4.10"
    assert (record.patient.birth_name, record.patient.given_name) == ("TEST", "ANNE")
    assert record.patient.birth_date == date(1979, 3, 21) and record.patient.sex is Sex.FEMALE
    assert record.cdas == (CDA, n3)
    assert record.recipients == ("dr.martin@hopital.mssante.fr",)
    assert record.reply_to == "secretariat@hopital.mssante.fr"
    assert record.route is Route.PROFESSIONALS_AND_PATIENT and record.patient_reply_closed
    assert record.body_professionals == "Bonjour & merci" and record.body_patient is None


def test_mdm_t02_in_v2_6() -> None:
    record = read_transmission(message(kind="MDM^T02^MDM_T02", version="2.6"))
    assert record.message_type == "MDM^T02" and record.version == "2.6" and not record.patient_reply_closed


@pytest.mark.parametrize(
    ("kind", "version", "status", "action"),
    [
        ("MDM^T02^MDM_T02", "2.6", "F", DocumentAction.ORIGINAL),
        ("MDM^T10^MDM_T02", "2.6", "C", DocumentAction.REPLACEMENT),
        ("MDM^T04^MDM_T02", "2.6", "D", DocumentAction.DELETION),
        ("ORU^R01^ORU_R01", "2.5", "F", DocumentAction.ORIGINAL),
        ("ORU^R01^ORU_R01", "2.5", "C", DocumentAction.REPLACEMENT),
        ("ORU^R01^ORU_R01", "2.5", "D", DocumentAction.DELETION),
    ],
)
def test_the_event_and_obx11_say_what_is_asked_for_the_document(
    kind: str, version: str, status: str, action: DocumentAction
) -> None:
    record = read_transmission(message(kind=kind, version=version, status=status))
    assert record.action is action and record.message_type == kind.rpartition("^")[0]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"kind": "MDM^T10^MDM_T02", "version": "2.6", "status": "F"}, 207),
        ({"kind": "MDM^T04^MDM_T02", "version": "2.6", "status": "C"}, 207),
        ({"kind": "MDM^T02^MDM_T02", "version": "2.6", "status": "D"}, 207),
        ({"kind": "MDM^T10^MDM_T02", "version": "2.5", "status": "C"}, 203),
        ({"status": "X"}, 103),
        ({"status": ""}, 103),
        ({"kind": "ORU^R01^ORU_R01", "version": "2.6"}, 203),
        ({"kind": "MDM^T02^MDM_T02", "version": "2.5"}, 203),
        ({"kind": "ADT^A01^ADT_A01"}, 201),
        ({"cdas": ()}, 101),
        ({"recipients": ()}, 101),
        ({"recipients": ("not-an-address",)}, 102),
        ({"flags": PROS_AND_PATIENT | {"MASQUE_PS": True}}, 207),
    ],
)
def test_refusals_carry_their_table_0357_code(kwargs: dict[str, object], code: int) -> None:
    with pytest.raises(Hl7Refusal) as refused:
        read_transmission(message(**kwargs))  # type: ignore[arg-type]
    assert refused.value.code == code and refused.value.text


def test_no_ins_in_pid3_is_refused() -> None:
    er7 = message().replace("^INS||", "^PI||")
    with pytest.raises(Hl7Refusal, match="INS"):
        read_transmission(er7)


def test_header_for_the_ack_even_when_refused() -> None:
    header = read_header(message(version="9.9"))
    assert header is not None
    assert (header.sending_application, header.control_id, header.version, header.trigger) == (
        "DPI",
        "MSG-42",
        "9.9",
        "R01",
    )
    assert read_header("garbage") is None


def test_the_three_routes_and_the_ans_example_reading() -> None:
    none = {name: False for name in REQUIRED_FLAGS}
    assert check_flags(PROS_AND_PATIENT) is Route.PROFESSIONALS_AND_PATIENT
    pros = none | {"INVISIBLE_PATIENT": True, "DESTMSSANTEPS": True}
    assert check_flags(pros) is Route.PROFESSIONALS_ONLY
    assert check_flags(pros | {"INVISIBLE_REP_LEGAUX": True}) is Route.PROFESSIONALS_ONLY
    patient = none | {"DESTMSSANTEPAT": True, "MASQUE_PS": True, "INVISIBLE_REP_LEGAUX": True}
    assert check_flags(patient) is Route.PATIENT_ONLY


def test_every_combination_is_a_route_or_207() -> None:
    """Exhaustive: a document invisible to the patient never reaches them, a masked one never reaches a PS."""
    for values in itertools.product((False, True), repeat=len(REQUIRED_FLAGS)):
        flags = dict(zip(REQUIRED_FLAGS, values, strict=True))
        try:
            route = check_flags(flags)
        except Hl7Refusal as refused:
            assert refused.code == 207
            continue
        to_patient = route is not Route.PROFESSIONALS_ONLY
        to_pros = route is not Route.PATIENT_ONLY
        assert not (to_patient and flags["INVISIBLE_PATIENT"])
        assert not (to_pros and flags["MASQUE_PS"])
        assert to_patient == flags["DESTMSSANTEPAT"] and to_pros == flags["DESTMSSANTEPS"]


@given(st.text(max_size=400))
def test_any_text_is_a_record_or_a_refusal(text: str) -> None:
    try:
        read_transmission(text)
    except Hl7Refusal as refused:
        assert refused.code in {100, 101, 102, 103, 200, 201, 203, 207}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
def test_body_text_round_trips_through_er7_escapes(text: str) -> None:
    escaped = escape(text)
    body = f"OBX|30|ED|CORPSMAIL_PATIENT^Corps^MetaDMPMSS||{escaped}||||||F"
    record = read_transmission(message(extra=(body,)))
    assert record.body_patient == text.strip()


def test_frames_decode_as_their_msh18_says() -> None:
    utf8 = message().replace("ANNE MARIE", "ANNE-HÉLÈNE")
    assert decode_er7(utf8.encode("utf-8")) == utf8
    latin = utf8.replace("UNICODE UTF-8", "8859/1")
    assert decode_er7(latin.encode("iso-8859-1")) == latin
    with pytest.raises(Hl7Refusal) as refused:
        decode_er7(latin.encode("iso-8859-1").replace(b"8859/1", b"UNICODE UTF-8"))
    assert refused.value.code == 102
    with pytest.raises(Hl7Refusal) as refused:
        decode_er7(utf8.replace("UNICODE UTF-8", "EBCDIC").encode())
    assert refused.value.code == 203


@given(st.binary(max_size=200))
def test_any_frame_decodes_or_is_refused(block: bytes) -> None:
    try:
        decode_er7(b"MSH|^~\\&|" + block)
    except Hl7Refusal as refused:
        assert refused.code in {100, 102, 203}

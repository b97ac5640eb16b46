"""ZAM Z02/Z03 as the guide's ZAM_Z01 profile lays them out, field by field, safe for any address/reason."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.er7 import Er7Error
from mappers.hl7_zam import ZamEvent, ZamFailure, ZamHeader, ZamReceipt, build_zam, requested_events

HEADER = ZamHeader("PFI", "CHU_X", "DPI", "CHU_X", "P")
NOW = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)


def _parse(text: str) -> hl7.Message:
    return hl7.parse(text)


def test_z02_success_golden() -> None:
    text = build_zam(HEADER, ZamReceipt(ZamEvent.DELIVERY, "MSG-42", "dr.b@hop.mssante.fr"), NOW, "ZAM-1")
    assert text.split("\r") == [
        "MSH|^~\\&|PFI|CHU_X|DPI|CHU_X|20261207083000+0000||ZAM^Z02^ZAM_Z01|ZAM-1|P|2.6|||||FRA"
        "|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        "OBX|1|CWE|ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM|MSG-42"
        "|Y^^expandedYes-NoIndicator||||||F",
        "OBX|2|XTN|DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM||^^X.400^dr.b@hop.mssante.fr||||||F",
        "",
    ]


def test_z02_failure_carries_the_smtp_code_in_err() -> None:
    failure = ZamFailure("550", "5.1.1 mailbox unknown")
    receipt = ZamReceipt(ZamEvent.DELIVERY, "MSG-42", "x@y.fr", failure)
    message = _parse(build_zam(HEADER, receipt, NOW, "ZAM-2"))
    assert message.extract_field("OBX", 1, 5, 1, 1) == "N"
    err = message.segment("ERR")
    assert str(err[3]) == "207^Application error^messageErrorCondition"
    assert str(err[4]) == "E"
    assert str(err[5]) == "550^5.1.1 mailbox unknown^SMTPERRORCODE"


def test_z03_success_names_the_reader() -> None:
    receipt = ZamReceipt(ZamEvent.READ, "MSG-7", "lecteur@hop.mssante.fr")
    message = _parse(build_zam(HEADER, receipt, NOW, "ZAM-3"))
    assert str(message.segment("MSH")[9]) == "ZAM^Z03^ZAM_Z01"
    obx1, obx2 = (s for s in message if str(s[0]) == "OBX")
    assert str(obx1[3]) == "ACK_LECTURE_MSS^Accusé de lecture^AckMetierZAM"
    assert (str(obx1[4]), str(obx1[5]), str(obx1[11])) == ("MSG-7", "Y^^expandedYes-NoIndicator", "F")
    assert str(obx2[3]) == "LECTEUR_MSS^Lecteur du courriel MSSanté^AckMetierZAM"
    assert (str(obx2[2]), str(obx2[5]), str(obx2[11])) == ("XTN", "^^X.400^lecteur@hop.mssante.fr", "F")
    with pytest.raises(KeyError):
        message.segment("ERR")


def test_z03_failure_uses_the_application_error_table() -> None:
    failure = ZamFailure("E001", "CDA illisible", "F")
    message = _parse(build_zam(HEADER, ZamReceipt(ZamEvent.READ, "MSG-7", "x@y.fr", failure), NOW, "ZAM-4"))
    assert message.extract_field("OBX", 1, 5, 1, 1) == "N"
    assert str(message.segment("ERR")[4]) == "F"
    assert str(message.segment("ERR")[5]) == "E001^CDA illisible^applicationErrorCondition"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(Er7Error):
        build_zam(HEADER, ZamReceipt(ZamEvent.READ, "M", "x@y.fr"), datetime(2026, 1, 1), "ZAM-5")


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60).filter(
    lambda s: s == s.strip()
)


@given(
    event=st.sampled_from(ZamEvent),
    control_id=_text,
    address=_text,
    reason=st.none() | _text,
)
def test_round_trip_through_the_hl7_parser(
    event: ZamEvent, control_id: str, address: str, reason: str | None
) -> None:
    failure = None if reason is None else ZamFailure("550", reason)
    message = _parse(build_zam(HEADER, ZamReceipt(event, control_id, address, failure), NOW, "ZAM-6"))
    assert [str(s[0]) for s in message] == ["MSH", "OBX", "OBX", *(["ERR"] if failure else [])]
    assert message.extract_field("OBX", 1, 4, 1, 1) == control_id
    assert message.extract_field("OBX", 2, 5, 1, 4) == address
    assert message.extract_field("OBX", 1, 5, 1, 1) == ("N" if failure else "Y")
    if reason is not None:
        assert message.extract_field("ERR", 1, 5, 1, 2) == reason


def test_the_flags_say_which_zam_are_owed() -> None:
    assert requested_events(True, True) == "Z02,Z03"
    assert requested_events(False, True) == "Z03"
    assert requested_events(False, False) is None

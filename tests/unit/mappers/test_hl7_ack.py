"""The technical ACK: codes, ERR with table 0357, the producer's version, and safe against hostile reasons."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.hl7_ack import AckCode, RequestHeader, build_ack

REQUEST = RequestHeader("DPI", "CHU_X", "PFI", "CHU_X", "MSG-42", "P", "2.6", "T02")
NOW = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)


def test_aa_swaps_the_applications_and_echoes_the_control_id() -> None:
    ack = hl7.parse(build_ack(REQUEST, AckCode.ACCEPTED, None, NOW, "ACK-1"))
    msh = ack.segment("MSH")
    assert (str(msh[3]), str(msh[5]), str(msh[12])) == ("PFI", "DPI", "2.6")
    assert str(msh[9]) == "ACK^T02^ACK" and str(msh[10]) == "ACK-1"
    assert str(ack.segment("MSA")[1]) == "AA" and str(ack.segment("MSA")[2]) == "MSG-42"
    with pytest.raises(KeyError):
        ack.segment("ERR")


def test_ae_carries_err_code_and_text() -> None:
    ack = hl7.parse(build_ack(REQUEST, AckCode.ERROR, (207, "MetaDMPMSS combination"), NOW, "ACK-2"))
    err = ack.segment("ERR")
    assert ack.extract_field("ERR", 1, 3, 1, 1, 1) == "207"
    assert str(err[4]) == "E" and ack.extract_field("ERR", 1, 8, 1, 1, 1) == "MetaDMPMSS combination"


def test_a_refusal_needs_its_error() -> None:
    with pytest.raises(ValueError, match="needs its error"):
        build_ack(REQUEST, AckCode.REJECTED, None, NOW, "ACK-3")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=80).filter(str.strip))
def test_any_reason_keeps_the_structure(reason: str) -> None:
    text = build_ack(REQUEST, AckCode.REJECTED, (199, reason), NOW, "ACK-4")
    ack = hl7.parse(text)
    assert [str(s[0]) for s in ack] == ["MSH", "MSA", "ERR"]
    assert ack.extract_field("ERR", 1, 8, 1, 1, 1) == reason.rstrip()  # the parser trims line ends

"""The directory's recipient check on documents from HL7 producers: in refuse mode a mistyped MSSanté
address in a PRT segment gets an ``AE`` naming the address and the closest ones, and no mail leaves; the
right address goes out as before. (Issue 15: "AE for HL7 when that interface exists".)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.directory import line, write_file
from tests.support.fake_operator import FakeOperator
from tests.support.gateway import Gateway, gateway_for
from tests.support.hl7 import PROS_ONLY, message, patient_cda
from tests.support.mllp import send
from tests.support.pki import Pki
from tests.system.test_hl7_mllp import DOCTOR, hl7_port, hl7_section
from tests.unit.mappers.test_trustlist import trust_list_xml

MISTYPED = DOCTOR.replace("martin", "martn")


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, operator: FakeOperator) -> Iterator[Gateway]:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["gateway"]["test_mode"] = True
    gateway.sections["hl7"] = hl7_section()
    gateway.sections["directory"] = {"check": "refuse", "min_entries": 1}
    gateway.write()
    trust = tmp_path / "trust.xml"
    trust.write_bytes(trust_list_xml(DOCTOR.split("@")[1]))
    gateway.command("trust", "update", "--from", str(trust))
    extraction = write_file(tmp_path / "directory.txt", [line(address=DOCTOR)])
    gateway.command("directory", "update", "--from", str(extraction))
    gateway.start()
    yield gateway
    gateway.cleanup()


def test_a_mistyped_recipient_is_refused_with_ae_and_suggestions_and_nothing_leaves(
    gateway: Gateway, operator: FakeOperator
) -> None:
    port = hl7_port(gateway)
    refused = send(port, message(recipients=(MISTYPED,), flags=PROS_ONLY, cdas=(patient_cda(),)))
    assert refused.code == "AE", (refused, gateway.output())
    assert f"<{MISTYPED}>: not in the national MSSante directory" in refused.text, refused
    assert f"did you mean {DOCTOR}?" in refused.text, refused
    corrected = message(recipients=(DOCTOR,), flags=PROS_ONLY, cdas=(patient_cda(),))
    accepted = send(port, corrected.replace("|MSG-42|", "|MSG-43|"))
    assert accepted.code == "AA", (accepted, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert gateway.stop() == 0
    assert mail.rcpt_tos == (DOCTOR,)

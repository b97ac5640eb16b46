"""``mssgw hl7 show`` and ``mssgw hl7 send`` as a sysadmin runs them: what a file would become, and an ACK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import Gateway, gateway_for
from tests.support.hl7 import PROS_AND_PATIENT, PROS_ONLY, message, patient_cda
from tests.support.pki import Pki
from tests.system.test_hl7_mllp import DOCTOR, PRODUCER_BOX, hl7_port, hl7_section


def configured(tmp_path: Path, pki: Pki, operator: FakeOperator | None) -> Gateway:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["gateway"]["test_mode"] = True
    gateway.sections["hl7"] = hl7_section()
    gateway.write()
    return gateway


def er7_file(tmp_path: Path, er7: str, line_end: str = "\n") -> str:
    path = tmp_path / "message.hl7"
    path.write_text(er7.replace("\r", line_end), encoding="utf-8")
    return str(path)


def hl7_send(path: str, target: str) -> subprocess.CompletedProcess[str]:
    """``mssgw hl7 send`` needs no configuration: it is a producer, not the gateway."""
    command = [sys.executable, "-m", "gateway", "hl7", "send", path, "--to", target]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_show_prints_the_mail_a_message_would_become_without_storing_it(tmp_path: Path, pki: Pki) -> None:
    gateway = configured(tmp_path, pki, None)
    result = gateway.command("hl7", "show", er7_file(tmp_path, message(cdas=(patient_cda(),))))
    out = result.stdout
    assert "producer: dpi" in out and "would be accepted: ORU^R01 MSH-10 MSG-42" in out
    assert f"envelope from: {PRODUCER_BOX}" in out and f"to: {DOCTOR}" in out
    assert "279035121518989" not in out  # the patient address is shown masked
    assert "attachment: IHE_XDM.zip" in out
    assert gateway.json("queue", "list", "--all") == []


def test_show_says_why_a_message_would_be_refused(tmp_path: Path, pki: Pki) -> None:
    gateway = configured(tmp_path, pki, None)
    er7 = message(flags=PROS_AND_PATIENT | {"MASQUE_PS": True}, cdas=(patient_cda(),))
    result = gateway.command("hl7", "show", er7_file(tmp_path, er7, "\r\n"), check=False)
    assert result.returncode == 65
    assert "refused: AE 207 MetaDMPMSS combination not allowed" in result.stdout


def test_send_prints_the_ack_of_a_running_gateway(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    gateway = configured(tmp_path, pki, operator)
    gateway.start()
    gateways.append(gateway)
    target = f"127.0.0.1:{hl7_port(gateway)}"
    accepted = hl7_send(er7_file(tmp_path, message(flags=PROS_ONLY, cdas=(patient_cda(),))), target)
    assert accepted.returncode == 0 and "MSA|AA|MSG-42" in accepted.stdout, accepted.stderr
    refused = hl7_send(er7_file(tmp_path, message(application="LABO")), target)
    assert refused.returncode == 65 and "MSA|AR|MSG-42" in refused.stdout
    operator.wait_for_messages(1)

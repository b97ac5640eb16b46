"""Real traffic through ``mssgw run`` with patient data everywhere it can hide (patient address, INS in the
subject and body, attachment name, the peer's reply, SMTP credentials): the logs keep the audit trail by
ids and masked addresses, and none of that data."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.pki import Pki, write_private

MATRICULE = "279035121518989"
PATIENT = f"{MATRICULE}@patient.mssante.fr"
DOCTOR = "dr.martin@cabinet.test.mssante.fr"
PASSWORD = "Tr0ub4dor&3-smtp"
SECRETS = (MATRICULE, "DUPONT", "Jeanne", "compte rendu confidentiel", "CR_DUPONT", PASSWORD)


def test_logs_carry_the_audit_trail_but_no_patient_data_or_credentials(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator(auth=("gw-app", PASSWORD), auth_required=True)
    operator.script(("RCPT", 550, f"5.1.1 <{PATIENT}> no channel for {MATRICULE}", PATIENT))
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    password_file = write_private(tmp_path / "smtp.password", PASSWORD.encode())
    gateway.sections["smarthost"].update(username="gw-app", password_file=str(password_file))
    gateway.sections["logging"] = {"level": "debug"}
    gateway.write()
    gateways.append(gateway)
    body = tmp_path / "body.txt"
    body.write_text(f"Madame DUPONT Jeanne, INS {MATRICULE} : compte rendu confidentiel.\n", encoding="utf-8")
    # A note, not a PDF: a health document goes to a patient only inside IHE_XDM.zip (ECO.2.1.1).
    attachment = tmp_path / f"CR_DUPONT_{MATRICULE}.txt"
    attachment.write_bytes(b"Rendez-vous le 12 janvier.\n")
    patient = tmp_path / "patient.json"
    patient.write_text(
        json.dumps(
            {
                "matricule": MATRICULE,
                "oid": "1.2.250.1.213.1.4.8",
                "birth_name": "DUPONT",
                "given_name": "Jeanne",
                "birth_date": "1979-03-12",
                "sex": "F",
            }
        ),
        encoding="utf-8",
    )
    gateway.start()
    sent = gateway.command(
        "send",
        "--from",
        SENDER,
        "--to",
        DOCTOR,
        "--to",
        PATIENT,
        "--subject",
        f"CR DUPONT Jeanne {MATRICULE}",
        "--body-file",
        str(body),
        "--attach",
        str(attachment),
        "--patient",
        str(patient),
    )
    queue_id = int(sent.stdout)
    operator.wait_for_messages(1)
    output = gateway.wait_for_output("event=bounced")
    gateway.wait_for_output("event=dsn-queued")
    assert gateway.stop() == 0
    logs = gateway.output() + sent.stderr

    for secret in SECRETS:
        assert secret not in logs, f"{secret!r} leaked into the logs:\n{logs}"
    audit = [line for line in output.splitlines() if "logger=gateway.audit" in line]
    delivered = next(line for line in audit if "event=delivered" in line)
    assert f"queue_id={queue_id}" in delivered and f"recipient={DOCTOR}" in delivered
    bounced = next(line for line in audit if "event=bounced" in line)
    assert "recipient=2************89@patient.mssante.fr" in bounced and "code=550" in bounced
    assert "no channel for 2************89" in bounced

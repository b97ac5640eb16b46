"""ZAM end to end: a producer asks ACK_RECEPTION and ACK_LECTURE_MSS on an ORU sent over MLLP to mssgw run;
the DSN and the MDN the operator hands back become ZAM^Z02 and ZAM^Z03 at the producer's MLLP endpoint,
through a restart of mssgw and of the endpoint (retried until the producer's AA)."""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest

from mappers import dsn
from mappers.mdn import Disposition, build_mdn
from tests.support.fake_operator import FakeOperator
from tests.support.gateway import Gateway, gateway_for, operator_mode
from tests.support.hl7 import PROS_ONLY, message, patient_cda
from tests.support.listener import client_tls
from tests.support.mllp import ZamEndpoint, send
from tests.support.pki import Pki
from tests.system.test_hl7_mllp import DOCTOR, PRODUCER_BOX, hl7_port, hl7_section

_OPERATOR_PORT = re.compile(r"event=listening listener=operator address=127\.0\.0\.1:(\d+)")


@pytest.fixture
def endpoint_port() -> int:
    with ZamEndpoint() as probe:
        return probe.port


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, operator: FakeOperator, endpoint_port: int) -> Iterator[Gateway]:
    gw = gateway_for(tmp_path / "gw", pki, operator)
    operator_mode(gw, pki, operator)
    gw.sections["inbound"] = {"domains": ["hopital.test.mssante.fr"]}
    section = hl7_section()
    section["producers"][0].update(zam_host="127.0.0.1", zam_port=endpoint_port)  # type: ignore[index]
    gw.sections["hl7"] = section
    gw.write()
    with gw.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[[inbound.mailboxes]]\naddress = "{PRODUCER_BOX}"\n')
    yield gw
    gw.cleanup()


def operator_hands_back(gateway: Gateway, pki: Pki, raw: bytes) -> str:
    """The operator delivers a report to our port-25 listener, addressed to the producer's mailbox."""
    found = _OPERATOR_PORT.search(gateway.wait_for_output("listener=operator"))
    assert found, gateway.output()
    with smtplib.SMTP("127.0.0.1", int(found.group(1)), local_hostname="op.test", timeout=10) as client:
        client.starttls(context=client_tls(pki, certificate=True))
        client.ehlo()
        assert client.mail("")[0] == 250
        assert client.rcpt(PRODUCER_BOX)[0] == 250
        code, text = client.data(raw)
        return f"{code} {text.decode()}"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.1)


def test_z02_and_z03_reach_the_producer_through_restarts(
    gateway: Gateway, operator: FakeOperator, pki: Pki, endpoint_port: int
) -> None:
    gateway.start()
    flags = PROS_ONLY | {"ACK_RECEPTION": True, "ACK_LECTURE_MSS": True}
    ack = send(hl7_port(gateway), message(flags=flags, recipients=(DOCTOR,), cdas=(patient_cda(),)))
    assert ack.code == "AA", ack.text
    [delivered] = operator.wait_for_messages(1)
    assert delivered.rcpt_params(DOCTOR)["NOTIFY"] == "SUCCESS,FAILURE"
    [entry] = gateway.json("queue", "list", "--all")
    queue_id = str(entry["id"])

    # The producer's endpoint is down when the DSN comes: the Z02 waits in the store.
    report = dsn.build_dsn(
        delivered.content,
        [dsn.RecipientReport(DOCTOR, "delivered", "2.0.0")],
        reporting_mta="op.test",
        postmaster="MAILER-DAEMON@hopital.mssante.fr",
        sender=PRODUCER_BOX,
        now=datetime.now(UTC),
    )
    assert operator_hands_back(gateway, pki, report.as_bytes()).startswith("250")
    gateway.wait_for_output("event=zam-deferred")
    assert "ZAM 1 Z02 to producer dpi for dr.martin@hopital.mssante.fr (Y): pending" in (
        gateway.command("queue", "show", queue_id).stdout
    )

    # mssgw restarts, then the endpoint comes back on its port: the Z02 is sent and acknowledged.
    assert gateway.stop() == 0
    gateway.start()
    with ZamEndpoint(endpoint_port) as endpoint:
        wait_for(lambda: len(endpoint.received()) == 1, "Z02")
        read = build_mdn(
            delivered.content,
            disposition=Disposition(type="displayed", automatic=False),
            final_recipient=DOCTOR,
            sender=DOCTOR,
            recipient=PRODUCER_BOX,
            hostname="op.test",
            now=datetime.now(UTC),
        )
        assert operator_hands_back(gateway, pki, read.as_bytes()).startswith("250")
        wait_for(lambda: len(endpoint.received()) == 2, "Z03")
        z02, z03 = (hl7.parse(frame) for frame in endpoint.received())
    for zam, event, status, party in ((z02, "Z02", "ACK_RECEPTION_MSS", "DESTINATAIRE_MSS"),
                                      (z03, "Z03", "ACK_LECTURE_MSS", "LECTEUR_MSS")):  # fmt: skip
        assert str(zam.segment("MSH")[9]) == f"ZAM^{event}^ZAM_Z01"
        assert zam.extract_field("OBX", 1, 3, 1, 1) == status
        assert zam.extract_field("OBX", 1, 4, 1, 1) == "MSG-42"
        assert zam.extract_field("OBX", 1, 5, 1, 1) == "Y"
        assert zam.extract_field("OBX", 2, 3, 1, 1) == party
        assert zam.extract_field("OBX", 2, 5, 1, 4) == DOCTOR
    shown = gateway.command("queue", "show", queue_id).stdout
    assert "Z02 to producer dpi for dr.martin@hopital.mssante.fr (Y): acked" in shown
    assert "Z03 to producer dpi for dr.martin@hopital.mssante.fr (Y): acked" in shown
    assert [line.split()[-1] for line in shown.splitlines() if " zam-" in line] == [
        "zam-z02-owed",
        "zam-acked",
        "zam-z03-owed",
        "zam-acked",
    ]


def test_an_operator_5xx_at_relay_time_sends_a_negative_z02(
    gateway: Gateway, operator: FakeOperator, endpoint_port: int
) -> None:
    # The relay's own SMTP transaction fails for good: no DSN will ever come from the recipient's side, so
    # the gateway's own failure report is what the producer hears about, as a Z02 with N and the SMTP code.
    operator.script(("RCPT", 550, "5.1.1 no such mailbox", DOCTOR))
    with ZamEndpoint(endpoint_port) as endpoint:
        gateway.start()
        flags = PROS_ONLY | {"ACK_RECEPTION": True}
        ack = send(hl7_port(gateway), message(flags=flags, recipients=(DOCTOR,), cdas=(patient_cda(),)))
        assert ack.code == "AA", ack.text
        wait_for(lambda: len(endpoint.received()) == 1, "Z02")
        [z02] = (hl7.parse(frame) for frame in endpoint.received())
    assert str(z02.segment("MSH")[9]) == "ZAM^Z02^ZAM_Z01"
    assert z02.extract_field("OBX", 1, 3, 1, 1) == "ACK_RECEPTION_MSS"
    assert z02.extract_field("OBX", 1, 5, 1, 1) == "N"
    assert z02.extract_field("OBX", 2, 5, 1, 4) == DOCTOR
    assert z02.extract_field("ERR", 1, 5, 1, 1) == "550"
    assert z02.extract_field("ERR", 1, 5, 1, 3) == "SMTPERRORCODE"
    assert operator.messages == []
    [entry] = gateway.json("queue", "list", "--all")
    shown = gateway.command("queue", "show", str(entry["id"])).stdout
    assert "Z02 to producer dpi for dr.martin@hopital.mssante.fr (N 550): acked" in shown

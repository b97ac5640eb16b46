"""HL7 consumers end to end with ``mssgw run``: a peer operator delivers a document mail to our mailbox on the
port-25 listener; the DPI (a real MLLP consumer) gets the MDM; its ACK comes back to the sender as the MDN
the fake operator receives, with the ANS subject and disposition. ``kill -9`` while the MDM awaits its ACK:
the same MDM is sent again after the restart and the MDN goes once. The same from a real Dovecot through the
IMAP bridge."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import hl7
import pytest

from tests.integration.test_hl7_consumers import document_mail
from tests.integration.test_receipts import COLLEAGUE, PRO
from tests.support.consumer import Consumer
from tests.support.dovecot import BINARY, Dovecot
from tests.support.fake_operator import FakeOperator
from tests.support.gateway import Gateway, gateway_for, operator_mode
from tests.support.imap_bridge import PASSWORD, USER, secret_file
from tests.support.listener import client_tls
from tests.support.pki import Pki
from tests.system.test_hl7_zam import _OPERATOR_PORT, wait_for
from tests.system.test_metrics import Samples, scrape, value
from tests.system.test_operator_end_to_end import wait_for_files


@pytest.fixture
def consumer_port() -> int:
    with Consumer() as probe:
        return probe.port


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, operator: FakeOperator, consumer_port: int) -> Iterator[Gateway]:
    gw = gateway_for(tmp_path / "gw", pki, operator)
    operator_mode(gw, pki, operator)
    (tmp_path / "trusted.txt").write_text("cabinet.test.mssante.fr\n", encoding="utf-8")
    gw.sections["inbound"] = {
        "domains": ["hopital.test.mssante.fr"],
        "trust_list_file": str(tmp_path / "trusted.txt"),
    }
    gw.sections["metrics"] = {"listen": "127.0.0.1:0"}
    gw.sections["hl7"] = {
        "application": "MSSGW",
        "facility": "CHU_Y",
        "consumers": [
            {
                "name": "dpi",
                "mailboxes": [PRO],
                "host": "127.0.0.1",
                "port": consumer_port,
                "application": "DPI",
                "facility": "CHU_Y",
                "ack_timeout": 2.0,
                "retry_schedule": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            }
        ],
    }
    gw.write()
    with gw.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[[inbound.mailboxes]]\naddress = "{PRO}"\n')
    yield gw
    gw.cleanup()


def deliver(gateway: Gateway, pki: Pki, raw: bytes) -> str:
    """The peer operator hands the sender's mail to our port-25 listener."""
    found = _OPERATOR_PORT.search(gateway.wait_for_output("listener=operator"))
    assert found, gateway.output()
    with smtplib.SMTP("127.0.0.1", int(found.group(1)), local_hostname="op.test", timeout=10) as client:
        client.starttls(context=client_tls(pki, certificate=True))
        client.ehlo()
        assert client.mail(COLLEAGUE)[0] == 250
        assert client.rcpt(PRO)[0] == 250
        code, text = client.data(raw)
        return f"{code} {text.decode()}"


def consumer_samples(gateway: Gateway) -> Samples:
    """A scrape of this run's metrics endpoint (each start listens on a new port)."""
    address = re.findall(r"event=metrics-listening address=(\S+)", gateway.output())[-1]
    return scrape(address)


def mdn_of(content: bytes) -> tuple[str, str]:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    notification = message.get_payload()[1].get_payload()[0]  # type: ignore[index, union-attr]
    return str(message["Subject"]), str(notification["Disposition"])


def test_ae_902_from_the_dpi_reaches_the_sender_as_the_ans_ko_mdn(
    gateway: Gateway, operator: FakeOperator, pki: Pki, consumer_port: int
) -> None:
    with Consumer(["AE 902"], port=consumer_port) as dpi:
        gateway.start()
        assert deliver(gateway, pki, document_mail()).startswith("250")
        [mdn] = operator.wait_for_messages(1)
        [frame] = dpi.received()
    assert str(hl7.parse(frame).segment("MSH")[9]) == "MDM^T02^MDM_T02"
    assert mdn.rcpt_tos == (COLLEAGUE,)
    subject, disposition = mdn_of(mdn.content)
    assert subject.startswith("[KO Intégration système !][902] XDM/1.0/DDM+")
    assert (
        disposition
        == "automatic-action/MDN-sent-automatically; processed/Error: 902^Identifiant patient inconnu"
    )
    [answer] = [e for e in gateway.json("queue", "list", "--all") if e["kind"] == "mdn"]
    original = gateway.json("queue", "show", "--json", str(answer["id"]))["related_id"]
    shown = gateway.command("queue", "show", str(original)).stdout
    assert "MDM 1 T02 to consumer dpi for CR d'imagerie - Scanner: answered, 1 attempt(s)" in shown
    assert "ACK AE " in shown and "error 902^Identifiant patient inconnu" in shown
    assert "consumer said: " in shown
    assert f"MDN to the sender: queue id {answer['id']}" in shown
    samples = consumer_samples(gateway)
    assert value(samples, "mssgw_hl7_consumer_messages_total", consumer="dpi", outcome="AE") == 1
    assert value(samples, "mssgw_hl7_consumer_messages_total", consumer="dpi", outcome="AA") == 0
    assert value(samples, "mssgw_hl7_consumer_pending", consumer="dpi") == 0
    assert gateway.stop() == 0


def test_kill_9_before_the_ack_sends_the_mdm_again_and_the_mdn_once(
    gateway: Gateway, operator: FakeOperator, pki: Pki, consumer_port: int
) -> None:
    with Consumer([None], port=consumer_port) as dpi:
        gateway.start()
        assert deliver(gateway, pki, document_mail()).startswith("250")
        wait_for(lambda: len(dpi.received()) == 1, "MDM")
        waiting = consumer_samples(gateway)  # the backlog an alert watches
        assert value(waiting, "mssgw_hl7_consumer_pending", consumer="dpi") == 1
        assert value(waiting, "mssgw_hl7_consumer_oldest_age_seconds", consumer="dpi") >= 0
        assert gateway.kill() == -9  # while the MDM awaits its ACK
        dpi.answers = ["AA"]
        gateway.start()
        wait_for(lambda: len(dpi.received()) >= 2, "MDM sent again")
        [mdn] = operator.wait_for_messages(1)
        time.sleep(3)  # a second MDN would have had time to leave
        assert len(operator.messages) == 1
        frames = dpi.received()
    assert frames[0] == frames[1]  # the same MDM, the same MSH-10
    assert mdn_of(mdn.content)[1] == "automatic-action/MDN-sent-automatically; processed"
    settled = consumer_samples(gateway)
    assert value(settled, "mssgw_hl7_consumer_messages_total", consumer="dpi", outcome="AA") == 1
    assert value(settled, "mssgw_hl7_consumer_pending", consumer="dpi") == 0
    assert gateway.stop() == 0


def test_a_mailbox_with_a_consumer_keeps_its_drop_folder(
    gateway: Gateway, operator: FakeOperator, pki: Pki, consumer_port: int, tmp_path: Path
) -> None:
    with gateway.config.open("a", encoding="utf-8") as config:
        config.write(f'drop_folder = "{tmp_path / "drop"}"\n')  # the mailbox's table ends the file
    with Consumer(["AA"], port=consumer_port) as dpi:
        gateway.start()
        assert deliver(gateway, pki, document_mail()).startswith("250")
        [mdn] = operator.wait_for_messages(1)
        [dropped] = wait_for_files(tmp_path / "drop", "*.eml", 1)
        assert len(dpi.received()) == 1
    assert email.message_from_bytes(dropped.read_bytes())["Message-ID"]
    assert mdn_of(mdn.content)[1] == "automatic-action/MDN-sent-automatically; processed"
    assert gateway.stop() == 0


@pytest.fixture
def dovecot(tmp_path: Path, pki: Pki) -> Iterator[Dovecot]:
    if BINARY is None:
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    server = Dovecot(tmp_path / "dovecot", pki, {USER: PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def imap_gateway(
    tmp_path: Path,
    pki: Pki,
    operator: FakeOperator,
    consumer_port: int,
    dovecot: Dovecot,
    gateways: list[Gateway],
) -> Gateway:
    """``mssgw run`` reading our mailbox from Dovecot (moved to Done once committed), the DPI its consumer."""
    gw = gateway_for(tmp_path / "gw", pki, operator)
    gw.sections["inbound"] = {"domains": ["hopital.test.mssante.fr"], "mailboxes": [{"address": PRO}]}
    gw.sections["imap"] = {
        "accounts": [
            {
                "name": "dpi-box",
                "host": "127.0.0.1",
                "port": dovecot.port,
                "security": "starttls",
                "address": PRO,
                "username": USER,
                "password_file": str(secret_file(tmp_path / "imap.password", PASSWORD)),
                "after_import": "move",
                "processed_folder": "Done",
                "backfill_days": 1,
            }
        ]
    }
    gw.sections["hl7"] = {
        "application": "MSSGW",
        "consumers": [
            {
                "name": "dpi",
                "mailboxes": [PRO],
                "host": "127.0.0.1",
                "port": consumer_port,
                "application": "DPI",
                "ack_timeout": 2.0,
                "retry_schedule": [1.0] * 10,
            }
        ],
    }
    gw.write()
    gateways.append(gw)
    return gw


def imap_document_mail() -> bytes:
    """The document mail as the operator's IMAP server holds it: its Return-Path is the envelope sender the
    MDN rules compare."""
    return f"Return-Path: <{COLLEAGUE}>\r\n".encode() + document_mail()


@pytest.mark.peer
def test_mail_read_by_imap_from_dovecot_goes_to_the_dpi_and_its_aa_becomes_the_mdn(
    imap_gateway: Gateway, operator: FakeOperator, consumer_port: int, dovecot: Dovecot
) -> None:
    with Consumer(["AA"], port=consumer_port) as dpi, dovecot.mailbox(USER) as mailbox:
        mailbox.append(imap_document_mail())
        imap_gateway.start()
        [mdn] = operator.wait_for_messages(1)
        assert len(dpi.received()) == 1
        wait_for(lambda: mailbox.count() == 0, "the message taken off the server")
    assert mdn.rcpt_tos == (COLLEAGUE,)
    assert mdn_of(mdn.content)[1] == "automatic-action/MDN-sent-automatically; processed"
    assert imap_gateway.stop() == 0


@pytest.mark.peer
def test_kill_9_before_the_ack_of_mail_read_by_imap_sends_the_mdm_again_and_the_mdn_once(
    imap_gateway: Gateway, operator: FakeOperator, consumer_port: int, dovecot: Dovecot
) -> None:
    with Consumer([None], port=consumer_port) as dpi, dovecot.mailbox(USER) as mailbox:
        mailbox.append(imap_document_mail())
        imap_gateway.start()
        wait_for(lambda: len(dpi.received()) == 1, "MDM")
        # The mail was committed before the MDM left: it is off the server, never imported twice.
        wait_for(lambda: mailbox.count() == 0, "the message taken off the server")
        assert imap_gateway.kill() == -9  # while the MDM awaits its ACK
        dpi.answers = ["AA"]
        imap_gateway.start()
        wait_for(lambda: len(dpi.received()) >= 2, "MDM sent again")
        [mdn] = operator.wait_for_messages(1)
        time.sleep(3)  # a second MDN, or a second MDM from a second import, would have had time to leave
        assert len(operator.messages) == 1
        frames = dpi.received()
    assert frames == [frames[0], frames[0]]  # the same MDM, the same MSH-10, and only it
    assert mdn_of(mdn.content)[1] == "automatic-action/MDN-sent-automatically; processed"
    assert imap_gateway.stop() == 0

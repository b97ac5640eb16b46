"""End to end, as a sysadmin runs it: ``mssgw run`` as a subprocess, ``mssgw send``, a test operator.

The operator is a real SMTP server on a loopback port that demands STARTTLS and a client certificate from
the test CA; the gateway must deliver once, DKIM-signed, and never in clear text.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from tests.support.dkim import DkimKey, make_dkim_key
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.pki import Pki

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def dkim_key(tmp_path: Path) -> DkimKey:
    return make_dkim_key(tmp_path / "dkim")


def test_a_message_is_delivered_once_over_tls_with_a_valid_dkim_signature(
    tmp_path: Path,
    pki: Pki,
    fake_operator: FakeOperatorFactory,
    dkim_key: DkimKey,
    store_url: str,
    gateways: list[Gateway],
) -> None:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator, store_url=store_url, dkim_key=dkim_key)
    gateways.append(gateway)
    body = tmp_path / "body.txt"
    body.write_text("Bonjour,\nvoici le compte rendu.\n.\nCordialement\n", encoding="utf-8")
    attachment = tmp_path / "lettre.pdf"
    attachment.write_bytes(b"%PDF-1.4 test\n")
    gateway.start()

    queue_id = gateway.send(
        "--from",
        SENDER,
        "--to",
        RECIPIENT,
        "--subject",
        "Compte rendu",
        "--body-file",
        str(body),
        "--attach",
        str(attachment),
    )

    received = operator.wait_for_messages(1)
    assert gateway.stop() == 0
    assert len(operator.messages) == 1
    delivered = received[0]
    assert delivered.mail_from == SENDER and delivered.rcpt_tos == (RECIPIENT,)
    assert delivered.tls_active and delivered.peer_cn == pki.client_address
    assert dkim_key.verify(delivered.content), dkim_key.failure(delivered.content)
    message = delivered.message
    assert message["X-MSS-NIL"] == "DEV935997"
    assert message["Subject"] == "Compte rendu"
    text = message.get_body(("plain",))
    assert text is not None
    assert "voici le compte rendu.\n.\nCordialement" in text.get_content().replace("\r\n", "\n")
    assert [p.get_filename() for p in message.iter_attachments()] == ["lettre.pdf"]
    shown = gateway.json("queue", "show", str(queue_id))
    assert [(d["recipient"], d["state"], d["attempts"]) for d in shown["deliveries"]] == [
        (RECIPIENT, "sent", 1)
    ]


def test_temporary_refusals_are_retried_until_accepted(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    operator.script(("DATA", 451, "4.3.0 Try again later"), ("DATA", 451, "4.3.0 Try again later"))
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateways.append(gateway)
    gateway.start()
    queue_id = gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", "retry me")
    operator.wait_for_messages(1)
    assert gateway.stop() == 0
    assert len(operator.messages) == 1
    (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
    assert delivery["state"] == "sent" and delivery["attempts"] == 3
    assert [(a["outcome"], a["code"]) for a in delivery["history"]] == [
        ("deferred", 451),
        ("deferred", 451),
        ("sent", 250),
    ]


def test_a_permanent_refusal_writes_a_dsn_for_the_sender(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    operator.script(("RCPT", 550, "5.1.1 <nobody@cabinet.test.mssante.fr>: mailbox unknown"))
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateways.append(gateway)
    gateway.start()
    queue_id = gateway.send("--from", SENDER, "--to", "nobody@cabinet.test.mssante.fr", "--subject", "x")
    operator.wait_until(lambda: len(operator.refusals) == 1)
    notice_id = _wait_for_notice(gateway, queue_id)
    assert gateway.stop() == 0
    assert operator.messages == []
    (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
    assert delivery["state"] == "notified"
    assert delivery["last_reply"] == "550 5.1.1 <nobody@cabinet.test.mssante.fr>: mailbox unknown"
    notice = gateway.json("queue", "show", str(notice_id))
    assert notice["kind"] == "dsn" and notice["envelope_from"] == "" and notice["deliveries"] == []
    raw = gateway.command("queue", "show", str(notice_id), "--raw").stdout.encode()
    dsn = email.message_from_bytes(raw, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["To"] == SENDER
    status = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    assert status and "Status: 5.1.1" in status[0].as_string()


def _wait_for_notice(gateway: Gateway, queue_id: int) -> int:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
        if delivery["notice_id"]:
            return int(delivery["notice_id"])
        time.sleep(0.1)
    raise AssertionError(f"no DSN written:\n{gateway.output()}")


@pytest.mark.parametrize(
    "peer",
    ["unreachable", "untrusted-server-certificate", "client-certificate-refused", "no-starttls"],
)
def test_a_peer_we_cannot_reach_safely_defers_and_nothing_goes_in_clear(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway], peer: str
) -> None:
    operator: FakeOperator | None
    if peer == "unreachable":
        operator = None
    elif peer == "untrusted-server-certificate":
        operator = fake_operator(cert=pki.untrusted.server)
    elif peer == "client-certificate-refused":
        operator = fake_operator(client_ca=pki.untrusted.ca)
    else:
        operator = fake_operator(cert=None, require_starttls=False, require_client_cert=False)
    gateway = gateway_for(tmp_path / "gw", pki, operator, relay={"retry_schedule": ["1h"]})
    gateways.append(gateway)
    gateway.start()
    queue_id = gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", "stay safe")
    delivery = _wait_for_state(gateway, queue_id, "deferred")
    assert gateway.stop() == 0
    expected = {
        "unreachable": "cannot deliver through smtp:127.0.0.1:",
        "untrusted-server-certificate": "TLS certificate not trusted",
        "client-certificate-refused": "cannot deliver through smtp:127.0.0.1:",
        "no-starttls": "does not offer STARTTLS; refusing to send in clear text",
    }[peer]
    assert expected in delivery["last_reply"]
    assert delivery["next_attempt_at"] is not None
    if operator is not None:
        assert operator.messages == [] and operator.transactions == 0


def _wait_for_state(gateway: Gateway, queue_id: int, state: str) -> dict[str, object]:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
        if delivery["state"] == state:
            return dict(delivery)
        time.sleep(0.1)
    raise AssertionError(f"delivery never {state}:\n{gateway.output()}")

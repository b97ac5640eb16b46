"""End to end through the submission listener: ``mssgw run`` as a subprocess, smtplib as the hospital's
software, the fake operator as the next hop. What is submitted with DSN parameters leaves with them, and a
refusal comes back as a delivery report that carries ENVID and ORCPT.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.mail import message
from tests.support.pki import Pki
from tests.support.submission import add_submission, submission_client

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory) -> Iterator[Gateway]:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    add_submission(gateway, pki, tmp_path)
    gateway.operator = operator  # type: ignore[attr-defined]
    gateway.start()
    yield gateway
    gateway.cleanup()


def submit(gateway: Gateway, pki: Pki) -> dict[str, tuple[int, bytes]]:
    with submission_client(gateway, pki) as client:
        return client.sendmail(
            SENDER,
            [RECIPIENT],
            message(sender=SENDER, to=RECIPIENT),
            mail_options=["RET=HDRS", "ENVID=abc"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{RECIPIENT}"],
        )


def test_an_authenticated_submission_over_starttls_is_queued_and_relayed(gateway: Gateway, pki: Pki) -> None:
    assert submit(gateway, pki) == {}
    received = gateway.operator.wait_for_messages(1)  # type: ignore[attr-defined]
    assert gateway.stop() == 0
    delivered = received[0]
    assert delivered.mail_from == SENDER and delivered.rcpt_tos == (RECIPIENT,)
    assert delivered.tls_active and delivered.peer_cn == pki.client_address
    assert delivered.mail_params["ENVID"] == "abc" and delivered.mail_params["RET"] == "HDRS"
    assert delivered.rcpt_params(RECIPIENT) == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": f"rfc822;{RECIPIENT}"}
    # Every message leaving for MSSanté names the product (ECO.2.4.3), as mail built by ``mssgw send``.
    assert b"\r\nX-MSS-NIL: DEV935997\r\n" in b"\r\n" + delivered.content.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def test_a_refused_delivery_gives_a_report_carrying_envid_and_orcpt(gateway: Gateway, pki: Pki) -> None:
    gateway.operator.script(("RCPT", 550, "5.1.1 no such user", RECIPIENT))  # type: ignore[attr-defined]
    assert submit(gateway, pki) == {}
    entry = gateway.json("queue", "list", "--all")[0]
    deadline = time.monotonic() + 30
    # The relay records the refusal and the report in one commit; the CLI has no event to wait on.
    while not (delivery := gateway.json("queue", "show", str(entry["id"]))["deliveries"][0])["notice_id"]:
        assert time.monotonic() < deadline, gateway.output()
        time.sleep(0.1)
    report = gateway.command("queue", "show", str(delivery["notice_id"]), "--raw").stdout
    assert gateway.stop() == 0
    assert "Original-Envelope-Id: abc" in report
    assert re.search(rf"Original-Recipient: rfc822; ?{re.escape(RECIPIENT)}", report), report
    assert "Status: 5.1.1" in report


def test_a_message_being_received_during_a_reload_is_accepted(gateway: Gateway, pki: Pki) -> None:
    with submission_client(gateway, pki) as client:
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(RECIPIENT)[0] == 250
        gateway.reload()
        gateway.wait_for_output("event=reloaded")
        code, reply = client.data(message(sender=SENDER, to=RECIPIENT))
    assert code == 250, reply
    received = gateway.operator.wait_for_messages(1)  # type: ignore[attr-defined]
    assert received[0].rcpt_tos == (RECIPIENT,)
    # The listener still takes new sessions after the reload.
    assert submit(gateway, pki) == {}
    gateway.operator.wait_for_messages(2)  # type: ignore[attr-defined]
    assert gateway.stop() == 0

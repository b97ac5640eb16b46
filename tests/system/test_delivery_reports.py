"""Delivery reports go back the way their sender came: ``mssgw run`` as a subprocess, smtplib as the
hospital's software on the submission listener, the fake operator as the next hop, and a plain-text fake
server as the hospital's internal MTA (the submission client's ``return_host``).
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.inbound.credentials import hash_password
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory, ReceivedMessage
from tests.support.gateway import SENDER, Gateway, gateway_for, submission_port, submission_section
from tests.support.mail import message
from tests.support.pki import Pki, write_private

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"
PASSWORD = "s3cret submission password"
MAILBOX = "accueil@hopital.test.mssante.fr"
APPLICATION = "app@hopital.test.mssante.fr"

Start = Callable[..., tuple[Gateway, FakeOperator, FakeOperator]]


@pytest.fixture
def start(tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory) -> Iterator[Start]:
    """``start(**operator options)``: the gateway, its operator and the internal MTA reports go back to."""
    gateways: list[Gateway] = []

    def run(**operator_options: Any) -> tuple[Gateway, FakeOperator, FakeOperator]:
        operator = fake_operator(**operator_options)
        internal = fake_operator(cert=None, require_starttls=False, require_client_cert=False)
        gateway = gateway_for(tmp_path / "gw", pki, operator)
        credentials = write_private(
            tmp_path / "credentials", f"dpi:{hash_password(PASSWORD, log2_n=10)}\n".encode()
        )
        client = {
            "name": "dpi",
            "senders": [SENDER],
            "return_host": "127.0.0.1",
            "return_port": internal.port,
        }
        gateway.sections["submission"] = submission_section(pki, [client], credentials_file=str(credentials))
        gateway.sections["inbound"] = {
            "domains": ["hopital.test.mssante.fr"],
            "mailboxes": [{"address": MAILBOX, "drop_folder": str(tmp_path / "drop")}],
        }
        gateway.write()
        gateway.start()
        gateways.append(gateway)
        return gateway, operator, internal

    yield run
    for gateway in gateways:
        gateway.cleanup()


def submit(gateway: Gateway, pki: Pki, notify: str) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    with smtplib.SMTP("127.0.0.1", submission_port(gateway), timeout=10) as client:
        client.starttls(context=context)
        client.login("dpi", PASSWORD)
        refused = client.sendmail(
            SENDER,
            [RECIPIENT],
            message(sender=SENDER, to=RECIPIENT, subject="Compte rendu"),
            mail_options=["ENVID=cr-42"],
            rcpt_options=[f"NOTIFY={notify}"],
        )
    assert refused == {}


def report_of(received: ReceivedMessage) -> str:
    parsed = email.message_from_bytes(received.content, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    return received.content.decode("utf-8", "replace")


def wait_for_state(gateway: Gateway, queue_id: int, state: str) -> dict[str, Any]:
    """The message once its delivery reached ``state`` (the CLI has no event to wait on)."""
    deadline = time.monotonic() + 30
    while (entry := gateway.json("queue", "show", str(queue_id)))["deliveries"][0]["state"] != state:
        assert time.monotonic() < deadline, gateway.output()
        time.sleep(0.1)
    return dict(entry)


def test_a_bounce_goes_back_to_the_submission_clients_internal_mta(start: Start, pki: Pki) -> None:
    gateway, operator, internal = start()
    operator.script(("RCPT", 550, "5.1.1 no such user", RECIPIENT))
    submit(gateway, pki, "FAILURE")
    returned = internal.wait_for_messages(1)[0]
    queue_id = gateway.json("queue", "list", "--all")[0]["id"]
    shown = gateway.command("queue", "show", str(queue_id)).stdout
    assert gateway.stop() == 0
    assert returned.mail_from == "<>" and returned.rcpt_tos == (SENDER,)
    report = report_of(returned)
    assert "Status: 5.1.1" in report and "Original-Envelope-Id: cr-42" in report
    assert f"delivery reports: sent to 127.0.0.1:{internal.port} (submission client dpi)" in shown
    assert "delivery report written for the sender" in shown


def test_notify_never_gets_no_report_and_success_through_a_hop_without_dsn_is_relayed(
    start: Start, pki: Pki
) -> None:
    gateway, operator, internal = start(dsn=False)
    operator.script(("RCPT", 550, "5.1.1 no such user", RECIPIENT))
    submit(gateway, pki, "NEVER")
    never = wait_for_state(gateway, gateway.json("queue", "list", "--all")[0]["id"], "failed")
    submit(gateway, pki, "SUCCESS")
    returned = internal.wait_for_messages(1)[0]
    assert gateway.stop() == 0
    assert never["deliveries"][0]["notice_id"] is None
    report = report_of(returned)
    assert "Action: relayed" in report and "Status: 2.0.0" in report
    # The one report is the success: NOTIFY=NEVER wrote nothing.
    assert len(internal.messages) == 1 and returned.rcpt_tos == (SENDER,)


def test_reports_of_mssgw_send_stay_in_the_store_unless_the_sender_is_a_mailbox(
    start: Start, tmp_path: Path
) -> None:
    gateway, operator, _ = start()
    operator.script(
        ("RCPT", 550, "5.1.1 no such user", RECIPIENT), ("RCPT", 550, "5.1.1 no such user", RECIPIENT)
    )
    kept = gateway.send("--from", APPLICATION, "--to", RECIPIENT, "--subject", "Analyse")
    dropped = gateway.send("--from", MAILBOX, "--to", RECIPIENT, "--subject", "Analyse")
    kept_entry = wait_for_state(gateway, kept, "notified")
    wait_for_state(gateway, dropped, "notified")
    deadline = time.monotonic() + 30
    while not list((tmp_path / "drop").glob("*.eml")):
        assert time.monotonic() < deadline, gateway.output()
        time.sleep(0.1)
    notice = gateway.json("queue", "show", str(kept_entry["deliveries"][0]["notice_id"]))
    shown = gateway.command("queue", "show", str(kept)).stdout
    shown_mailbox = gateway.command("queue", "show", str(dropped)).stdout
    assert gateway.stop() == 0
    assert notice["kind"] == "dsn" and notice["deliveries"] == []
    assert "delivery reports: kept in the store (message created by mssgw send / store API)" in shown
    assert f"delivery reports: sent to the drop folder {tmp_path / 'drop'} (mailbox {MAILBOX})" in (
        shown_mailbox
    )
    [drop] = list((tmp_path / "drop").glob("*.eml"))
    content = drop.read_text(encoding="utf-8", errors="replace")
    assert "Status: 5.1.1" in content and f"To: {MAILBOX}" in content


def test_a_report_refused_by_the_internal_mta_gets_no_report_of_its_own(start: Start, pki: Pki) -> None:
    gateway, operator, internal = start()
    operator.script(("RCPT", 550, "5.1.1 no such user", RECIPIENT))
    internal.script(("RCPT", 550, "5.1.1 unknown here", SENDER))
    submit(gateway, pki, "FAILURE")
    original = gateway.json("queue", "list", "--all")[0]["id"]
    notice_id = wait_for_state(gateway, original, "notified")["deliveries"][0]["notice_id"]
    report = wait_for_state(gateway, notice_id, "failed")
    # Nothing was stored after the report (ids are sequential): no report about it (RFC 5321 § 4.5.5).
    after = gateway.command("queue", "show", str(notice_id + 1), check=False)
    assert gateway.stop() == 0
    assert report["envelope_from"] == "" and report["deliveries"][0]["notice_id"] is None
    assert after.returncode == 66, after.stdout

"""A professional's exchange with a patient through Mon Espace Santé, end to end.

``mssgw run`` (operator mode) relays to a test operator standing in for Mon Espace Santé and listens on its
port-25 listener for what Mon Espace Santé sends back (the patient's replies, DSNs, MDNs); the professional
uses ``mssgw send``; the sysadmin looks with ``mssgw channels`` and ``mssgw queue show``. In client mode the
patient's replies come by IMAP: once through the intake with ``source="imap"`` in this process (as the bridge
calls it), and once through the real IMAP bridge of ``mssgw run`` reading a Dovecot mailbox.
"""

from __future__ import annotations

import json
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import settings as settings_module
from gateway.channels.steps import citizen_intake
from gateway.inbound.arrival import Arrival, Recipient
from gateway.store.db import Store, open_store
from gateway.store.tables import Message
from mappers import dsn
from mappers.mdn import Disposition, build_mdn
from tests.support.dovecot import BINARY as DOVECOT
from tests.support.dovecot import Dovecot
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.listener import client_tls
from tests.support.mail import message
from tests.support.pki import Pki

PATIENT = "279035121518989@patient.mssante.fr"
PATIENT_FILE = {
    "matricule": "279035121518989",
    "oid": "1.2.250.1.213.1.4.10",
    "birth_name": "PAT-TROIS",
    "given_name": "DOMINIQUE",
    "birth_date": "1979-03-28",
    "sex": "F",
}
_LISTENING = re.compile(r"event=listening listener=operator address=127\.0\.0\.1:(\d+)")


@pytest.fixture
def mes(fake_operator: FakeOperatorFactory) -> FakeOperator:
    """The test operator standing in for Mon Espace Santé."""
    return fake_operator()


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, mes: FakeOperator) -> Iterator[Gateway]:
    gw = gateway_for(tmp_path / "gw", pki, mes)
    gw.sections["gateway"].update(mode="operator", test_mode=True)  # the ANS test patient has a test OID
    gw.routes.append({"domain": "*", "transport": "smtp", "host": "127.0.0.1", "port": mes.port})
    gw.sections["operator_listener"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
    }
    gw.sections["inbound"] = {
        "domains": ["hopital.test.mssante.fr"],
        "trusted_domains": ["patient.mssante.fr"],
    }
    gw.write()
    with gw.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[[inbound.mailboxes]]\naddress = "{SENDER}"\n')
    (tmp_path / "patient.json").write_text(json.dumps(PATIENT_FILE), encoding="utf-8")
    yield gw
    gw.cleanup()


def mes_delivers(gateway: Gateway, pki: Pki, sender: str, raw: bytes) -> str:
    """Mon Espace Santé hands ``raw`` to our port-25 listener; the reply to RCPT, or to DATA once accepted."""
    found = _LISTENING.search(gateway.output())
    assert found, gateway.output()
    with smtplib.SMTP("127.0.0.1", int(found.group(1)), local_hostname="mes.test", timeout=10) as client:
        client.starttls(context=client_tls(pki, certificate=True))
        client.ehlo()
        assert client.mail(sender)[0] == 250
        code, text = client.rcpt(SENDER)
        if code != 250:
            return f"{code} {text.decode()}"
        code, text = client.data(raw)
        return f"{code} {text.decode()}"


def patient_says(text: str, in_reply_to: str) -> bytes:
    return message(sender=PATIENT, to=SENDER, subject="Re: Ordonnance", body=text, In_Reply_To=in_reply_to)


async def test_a_patient_exchange_from_first_message_to_fin(
    gateway: Gateway, mes: FakeOperator, pki: Pki, tmp_path: Path
) -> None:
    patient_file = str(tmp_path / "patient.json")
    gateway.start()
    first = gateway.send(
        "--from", SENDER, "--to", PATIENT, "--subject", "Ordonnance", "--patient", patient_file,
        "--read-receipt",
    )  # fmt: skip
    [delivered] = mes.wait_for_messages(1)
    assert delivered.rcpt_tos == (PATIENT,)
    assert delivered.rcpt_params(PATIENT)["NOTIFY"] == "SUCCESS,FAILURE"
    assert delivered.message["X-MSS-MES"] is None and delivered.message["X-MSSGW-Patient"] is None
    assert delivered.message["Disposition-Notification-To"] == SENDER
    original_id = delivered.message["Message-ID"]
    [channel] = gateway.json("channels", "list", "--open")
    assert (channel["mailbox"], channel["matricule"], channel["opened_by"]) == (
        SENDER,
        "2************89",
        original_id,
    )

    # The patient answers while the channel is open: accepted, and filed in the professional's thread.
    reply = mes_delivers(gateway, pki, PATIENT, patient_says("Merci docteur", original_id))
    assert reply.startswith("250 2.0.0 Queued as")
    answer_id = int(reply.rsplit(" ", 1)[1])
    assert gateway.json("queue", "show", str(answer_id))["related_id"] == first

    # Mon Espace Santé reports delivery (DSN), then the patient's reading (MDN): per-recipient status.
    report = dsn.build_dsn(
        delivered.content,
        [dsn.RecipientReport(PATIENT, "delivered", "2.0.0")],
        reporting_mta="mes.test",
        postmaster="MAILER-DAEMON@patient.mssante.fr",
        sender=SENDER,
        now=datetime.now(UTC),
    )
    assert mes_delivers(gateway, pki, "", report.as_bytes()).startswith("250")
    assert "    receipt: delivered (2.0.0)" in gateway.command("queue", "show", str(first)).stdout
    read = build_mdn(
        delivered.content,
        disposition=Disposition(type="displayed", automatic=False),
        final_recipient=PATIENT,
        sender=PATIENT,
        recipient=SENDER,
        hostname="mes.test",
        now=datetime.now(UTC),
    )
    assert mes_delivers(gateway, pki, "", read.as_bytes()).startswith("250")
    [status] = gateway.json("queue", "show", str(first))["deliveries"]
    assert (status["state"], status["receipt_status"]) == ("sent", "displayed")

    # The professional closes the exchange the way the regional guides say: [FIN] in the subject.
    closing = gateway.send(
        "--from", SENDER, "--to", PATIENT, "--subject", "Re: [FIN]", "--patient", patient_file
    )
    fin = mes.wait_for_messages(2)[1]
    assert fin.message["X-MSS-MES"] == "FIN" and fin.message["Subject"] == "Re: [FIN]"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    why = f"Citizen channel closed: the patient can no longer reply to this mailbox ([FIN] sent {today})"

    # The patient's next reply is refused on SMTP with the explained 550 …
    assert mes_delivers(gateway, pki, PATIENT, patient_says("Encore une question", original_id)) == (
        f"550 5.7.1 {why}"
    )
    # … and kept aside, visible, when it comes by IMAP (through the same intake, source "imap").
    settings = settings_module.load(gateway.config)
    store = open_store(settings.store_url)
    try:
        intake, _ = citizen_intake(settings, store, lambda: datetime.now(UTC))
        raw = patient_says("Encore une question", original_id)
        kept = await intake.receive(Arrival(raw, PATIENT, (Recipient(SENDER),), "imap", peer="mes/INBOX"))
    finally:
        store.close()
    assert kept.message_pk is not None and kept.verdicts[0].code == 250
    assert gateway.stop() == 0

    [closed] = gateway.json("channels", "list", "--closed")
    assert (closed["state"], closed["closed_by"], closed["reason"]) == (
        "closed",
        fin.message["Message-ID"],
        "[FIN] sent",
    )
    assert closed["closed_at"].startswith(today)
    listing = gateway.command("channels", "list").stdout
    assert f"closed    2************89  {SENDER}" in listing
    assert f"by {fin.message['Message-ID']} ([FIN] sent)" in listing
    assert "279035121518989" not in listing
    assert "279035121518989" in gateway.command("channels", "list", "--reveal").stdout
    refused = gateway.command("channels", "refused").stdout
    assert f"queue id {kept.message_pk}" in refused
    assert "by imap  from 2************89@patient.mssante.fr" in refused and why in refused
    history = gateway.command("channels", "show", str(closed["id"])).stdout
    assert f"channel-opened (queue id {first})" in history
    assert f"channel-closed (queue id {closing})" in history


def test_a_mon_espace_sante_refusal_at_delivery_becomes_an_explicit_status(
    gateway: Gateway, mes: FakeOperator, tmp_path: Path
) -> None:
    mes.script(("RCPT", 550, "5.2.1 Messagerie fermee pour ce patient", PATIENT))
    gateway.start()
    patient_file = str(tmp_path / "patient.json")
    sent = gateway.send(
        "--from", SENDER, "--to", PATIENT, "--subject", "Ordonnance", "--patient", patient_file
    )
    mes.wait_until(lambda: len(mes.refusals) == 1)
    assert gateway.stop() == 0  # a stop lets the delivery in flight record its outcome
    [delivery] = gateway.json("queue", "show", str(sent))["deliveries"]
    assert (delivery["state"], delivery["receipt_status"]) == ("notified", "mailbox-closed")
    assert delivery["receipt_detail"] == "550 5.2.1 Messagerie fermee pour ce patient"


def test_an_absence_reply_from_a_peer_that_answers_everything_is_a_receipt_and_no_conversation(
    gateway: Gateway, mes: FakeOperator, pki: Pki, tmp_path: Path
) -> None:
    gateway.start()
    sent = gateway.send(
        "--from", SENDER, "--to", PATIENT, "--subject", "Ordonnance",
        "--patient", str(tmp_path / "patient.json"), "--read-receipt",
    )  # fmt: skip
    [delivered] = mes.wait_for_messages(1)
    # The mailbox answers everything automatically, quoting the subject; "[FIN]" in it closes nothing.
    absence = message(
        PATIENT, SENDER, subject="Réponse automatique : Re: [FIN] Ordonnance", body="Je suis absente.\n",
        In_Reply_To=delivered.message["Message-ID"], Auto_Submitted="auto-replied",
    )  # fmt: skip
    assert mes_delivers(gateway, pki, PATIENT, absence).startswith("250 2.0.0 Queued as")
    shown = gateway.command("queue", "show", str(sent)).stdout
    assert "    receipt: auto-reply (Je suis absente.)" in shown, shown
    [channel] = gateway.json("channels", "list", "--open")
    assert channel["opened_by"] == delivered.message["Message-ID"]
    assert gateway.stop() == 0  # after the stop nothing more can leave: nothing answered the reply
    assert len(mes.messages) == 1


def imported(store: Store) -> list[tuple[int, str, int | None, str | None]]:
    """(queue id, state, thread, reason) of what the IMAP bridge stored, in order."""
    with store.sessions() as session:
        rows = session.execute(
            select(Message.id, Message.state, Message.related_message_id, Message.state_reason)
            .where(Message.source == "imap")
            .order_by(Message.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Bounded polling of the daemon's progress (no event crosses the process boundary)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.05)


@pytest.mark.peer
@pytest.mark.skipif(DOVECOT is None, reason="dovecot is not installed (apt-get install dovecot-imapd)")
def test_patient_replies_read_by_imap_are_filed_while_open_and_kept_refused_after_fin(
    tmp_path: Path, pki: Pki, mes: FakeOperator, gateways: list[Gateway]
) -> None:
    """Client mode: the patient's replies wait in our mailbox at the operator and are read by IMAP."""
    dovecot = Dovecot(tmp_path / "dovecot", pki, {SENDER: "imap-s3cret"}).start()
    try:
        password = tmp_path / "imap.password"
        password.write_text("imap-s3cret\n", encoding="utf-8")
        password.chmod(0o600)
        gateway = gateway_for(tmp_path / "gw", pki, mes)
        gateway.sections["gateway"]["test_mode"] = True
        drop = tmp_path / "drop"
        gateway.sections["inbound"] = {
            "domains": ["hopital.test.mssante.fr"],
            "mailboxes": [{"address": SENDER, "drop_folder": str(drop)}],
        }
        gateway.sections["imap"] = {
            "backoff_initial": "100ms",
            "accounts": [
                {
                    "name": "secretariat",
                    "host": "127.0.0.1",
                    "port": dovecot.port,
                    "security": "starttls",
                    "address": SENDER,
                    "username": SENDER,
                    "password_file": str(password),
                }
            ],
        }
        gateway.write()
        gateways.append(gateway)
        identity = tmp_path / "patient.json"
        identity.write_text(json.dumps(PATIENT_FILE), encoding="utf-8")
        gateway.start()
        first = gateway.send(
            "--from", SENDER, "--to", PATIENT, "--subject", "Ordonnance", "--patient", str(identity)
        )
        original_id = mes.wait_for_messages(1)[0].message["Message-ID"]
        store = open_store(settings_module.load(gateway.config).store_url)
        try:
            with dovecot.mailbox(SENDER) as mailbox:
                mailbox.append(patient_says("Merci docteur", original_id))
                wait_for(lambda: len(imported(store)) == 1, "the open-channel reply stored")
                wait_for(lambda: len(list(drop.glob("*.eml"))) == 1, "the open-channel reply dropped")
                gateway.send(
                    "--from", SENDER, "--to", PATIENT, "--subject", "[FIN]", "--patient", str(identity)
                )
                mes.wait_for_messages(2)
                mailbox.append(patient_says("Encore une question", original_id))
                wait_for(lambda: len(imported(store)) == 2, "the closed-channel reply stored")
                wait_for(lambda: all("\\Seen" in f for f in mailbox.flags()), "both flagged on the server")
                assert mailbox.count() == 2  # nothing deleted on the server
            wait_for(lambda: any(drop.glob("*.eml")), "the open-channel reply in the drop folder")
            (open_id, open_state, thread, _), (kept_id, kept_state, _, reason) = imported(store)
        finally:
            store.close()
        assert gateway.stop() == 0
    finally:
        dovecot.stop()
    assert (open_state, thread) == ("stored", first)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    why = f"Citizen channel closed: the patient can no longer reply to this mailbox ([FIN] sent {today})"
    assert (kept_state, reason) == ("refused", why)
    assert [(r["id"], r["source"], r["reason"]) for r in gateway.json("channels", "refused")] == [
        (kept_id, "imap", why)
    ]
    # Kept, never delivered: only the open-channel reply reaches the drop folder, and the refused one has
    # no queue row at all.
    assert [p.name.split("-")[0] for p in drop.glob("*.eml")] == [f"{open_id:010d}"]
    queue = {entry["id"]: entry["deliveries"] for entry in gateway.json("queue", "list", "--all")}
    assert kept_id not in queue and [d["recipient"] for d in queue[open_id]] == [SENDER]

"""A professional's exchange with a patient through Mon Espace Santé, end to end.

``mssgw run`` relays to a test operator standing in for Mon Espace Santé; the professional uses
``mssgw send``; the patient's replies enter through the intake (the same object the SMTP operator listener
and the IMAP bridge call: ``source="operator"`` answers as SMTP would, ``source="imap"`` keeps what it
cannot refuse); the sysadmin looks with ``mssgw channels`` and ``mssgw queue show``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import settings as settings_module
from gateway.channels.steps import CitizenSteps
from gateway.inbound.arrival import Arrival, Decision, Recipient
from gateway.inbound.intake import Intake
from gateway.inbound.policy import Policy
from gateway.inbound.trust import StaticTrustList
from gateway.settings import MailboxSettings
from gateway.store.db import Store, open_store
from mappers import dsn
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.mail import CLIENTS, inbound_settings, message
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


@pytest.fixture
def mes(fake_operator: FakeOperatorFactory) -> FakeOperator:
    """The test operator standing in for Mon Espace Santé."""
    return fake_operator()


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, mes: FakeOperator) -> Iterator[Gateway]:
    gw = gateway_for(tmp_path / "gw", pki, mes)
    gw.sections["gateway"]["test_mode"] = True  # the ANS test patient has the INS-NIR-TEST OID
    gw.write()
    (tmp_path / "patient.json").write_text(json.dumps(PATIENT_FILE), encoding="utf-8")
    yield gw
    gw.cleanup()


def intake_of(gw: Gateway, store: Store) -> Intake:
    settings = settings_module.load(gw.config)
    steps = CitizenSteps(settings, store.channels, lambda: datetime.now(UTC))
    inbound = inbound_settings(
        domains=("hopital.test.mssante.fr",),
        mailboxes=(MailboxSettings(SENDER),),
        trusted_domains=("patient.mssante.fr",),
    )
    policy = Policy(inbound, CLIENTS, StaticTrustList(["patient.mssante.fr"]), recipient_rules=[steps.rule])
    return Intake(
        policy, store.repository.add_messages, lambda: datetime.now(UTC), finish=steps.finish_arrival
    )


def patient_says(text: str, in_reply_to: str, source: str) -> Arrival:
    raw = message(sender=PATIENT, to=SENDER, subject="Re: Ordonnance", body=text, In_Reply_To=in_reply_to)
    return Arrival(raw, PATIENT, (Recipient(SENDER),), source, peer="mes")


async def test_a_patient_exchange_from_first_message_to_fin(
    gateway: Gateway, mes: FakeOperator, tmp_path: Path
) -> None:
    operator = mes
    patient_file = str(tmp_path / "patient.json")
    gateway.start()
    first = gateway.send(
        "--from",
        SENDER,
        "--to",
        PATIENT,
        "--subject",
        "Ordonnance",
        "--patient",
        patient_file,
        "--read-receipt",
    )
    [delivered] = operator.wait_for_messages(1)
    assert delivered.rcpt_tos == (PATIENT,)
    assert delivered.rcpt_params(PATIENT)["NOTIFY"] == "SUCCESS,FAILURE"
    assert delivered.message["X-MSS-MES"] is None
    assert delivered.message["Disposition-Notification-To"] == SENDER
    original_id = delivered.message["Message-ID"]
    [channel] = gateway.json("channels", "list", "--open")
    assert (channel["mailbox"], channel["matricule"], channel["opened_by"]) == (
        SENDER,
        "2************89",
        original_id,
    )

    store = open_store(f"sqlite:///{gateway.state_dir / 'mssgw.db'}")
    try:
        intake = intake_of(gateway, store)
        # The patient answers while the channel is open: accepted, and filed in the professional's thread.
        answer = await intake.receive(patient_says("Merci docteur", original_id, "operator"))
        [verdict] = answer.verdicts
        assert verdict.decision is Decision.ACCEPTED and verdict.code == 250
        assert gateway.json("queue", "show", str(answer.message_pk))["related_id"] == first

        # Mon Espace Santé reports delivery: the per-recipient status says so.
        report = dsn.build_dsn(
            delivered.content,
            [dsn.RecipientReport(PATIENT, "delivered", "2.0.0")],
            reporting_mta="mes.test",
            postmaster="MAILER-DAEMON@mes.test",
            sender=SENDER,
            now=datetime.now(UTC),
        )
        await intake.receive(Arrival(report.as_bytes(), "", (Recipient(SENDER),), "imap", peer="mes"))
        shown = gateway.command("queue", "show", str(first)).stdout
        assert f"delivery 1 to {PATIENT}: sent" in shown and "    receipt: delivered (2.0.0)" in shown

        # The professional closes the exchange the way the regional guides say: [FIN] in the subject.
        closing = gateway.send(
            "--from", SENDER, "--to", PATIENT, "--subject", "Re: [FIN]", "--patient", patient_file
        )
        fin = operator.wait_for_messages(2)[1]
        assert fin.message["X-MSS-MES"] == "FIN" and fin.message["Subject"] == "Re: [FIN]"
        today = datetime.now(UTC).strftime("%Y-%m-%d")

        # The patient's next reply: refused on SMTP with the explained 550 …
        refused = await intake.receive(patient_says("Encore une question", original_id, "operator"))
        [verdict] = refused.verdicts
        assert refused.message_pk is None
        assert verdict.reply == (
            "550 5.7.1 Citizen channel closed: the patient can no longer reply to this mailbox "
            f"([FIN] sent {today})"
        )
        # … and kept aside, visible, when it comes by IMAP.
        kept = await intake.receive(patient_says("Encore une question", original_id, "imap"))
        assert kept.message_pk is not None
    finally:
        store.close()
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
    assert (
        "279035121518989" not in listing
        and "279035121518989" in gateway.command("channels", "list", "--reveal").stdout
    )
    refused_list = gateway.command("channels", "refused").stdout
    assert (
        f"queue id {kept.message_pk}" in refused_list
        and "by imap  from 2************89@patient.mssante.fr" in refused_list
    )
    assert (
        f"Citizen channel closed: the patient can no longer reply to this mailbox ([FIN] sent {today})"
        in refused_list
    )
    history = gateway.command("channels", "show", str(closed["id"])).stdout
    assert (
        f"channel-opened (queue id {first})" in history and f"channel-closed (queue id {closing})" in history
    )

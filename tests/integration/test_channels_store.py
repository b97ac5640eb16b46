"""Citizen channels in the store: opened by a professional's message, reused, closed by [FIN] or by hand,
expired by the scheduler with an injected clock, and the gate's decisions on patient mail."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from gateway import settings as settings_module
from gateway.channels.expiry import ChannelExpiry
from gateway.channels.gate import ChannelGate
from gateway.channels.outgoing import admit_outgoing, with_end_of_exchange
from gateway.channels.steps import citizen_intake
from gateway.inbound.arrival import Arrival
from gateway.scheduler import Scheduler
from gateway.store.db import Store
from gateway.store.repository import NewMessage, Recipient
from mappers import ins
from mappers.records import Mailbox, MessageRecord
from tests.support.mail import message
from tests.unit.mappers import samples

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
PRO = "dr.chaput@hopital.test.mssante.fr"
SECRETARIAT = "secretariat@hopital.test.mssante.fr"
MATRICULE = "279035121518989"
PATIENT = f"{MATRICULE}@patient.mssante.fr"
SETTINGS = settings_module.from_mapping({"routes": [{"domain": "*", "transport": "folder", "path": "/x"}]})


def outgoing(
    n: int, subject: str = "Ordonnance", reply_to: str | None = None
) -> tuple[NewMessage, MessageRecord]:
    record = MessageRecord(
        author=Mailbox(PRO),
        to=(Mailbox(PATIENT),),
        subject=subject,
        patient=samples.patient(oid=ins.NIR_OID),
        reply_to=Mailbox(reply_to) if reply_to else None,
    )
    raw = f"From: {PRO}\r\nTo: {PATIENT}\r\nSubject: {subject}\r\nMessage-ID: <o{n}@h>\r\n\r\nx\r\n".encode()
    new = NewMessage(raw, PRO, "outbound", "test", (Recipient(PATIENT),), message_id=f"<o{n}@h>")
    return admit_outgoing(new, record, SETTINGS), record


def send(store: Store, n: int, at: datetime, **kwargs: str) -> int:
    new, _ = outgoing(n, **kwargs)
    return store.repository.add_messages([new], at)[0].pk


def patient_reply(n: int, in_reply_to: str | None = None) -> tuple[NewMessage, MessageRecord]:
    raw = f"From: {PATIENT}\r\nTo: {PRO}\r\nSubject: Re\r\nMessage-ID: <p{n}@mes>\r\n\r\nmerci\r\n".encode()
    record = MessageRecord(author=Mailbox(PATIENT), to=(Mailbox(PRO),), subject="Re", in_reply_to=in_reply_to)
    return NewMessage(raw, PATIENT, "inbound", "imap", message_id=f"<p{n}@mes>"), record


def test_sending_opens_a_channel_and_the_next_message_reuses_it(store: Store) -> None:
    first = send(store, 1, T0)
    send(store, 2, T0 + timedelta(days=3))
    [channel] = store.channels.find()
    assert (channel.mailbox, channel.matricule, channel.state) == (PRO, MATRICULE, "open")
    assert channel.opened_at == T0 and channel.opened_by == "<o1@h>"
    assert channel.last_activity_at == T0 + timedelta(days=3)
    shown = store.channels.show(channel.id)
    assert [(kind, pk) for _, kind, pk in shown.events] == [("channel-opened", first)]


def test_a_reply_to_mailbox_owns_the_channel() -> None:
    new, _ = outgoing(1, reply_to=SECRETARIAT)
    assert new.channel is not None and new.channel.mailboxes == (SECRETARIAT, PRO)


@pytest.mark.parametrize("subject", ["[FIN]", "Re: [FIN]", "[FIN] Ordonnance"])
def test_fin_in_the_subject_closes_the_channels_of_from_and_reply_to_and_adds_the_header(
    store: Store, subject: str
) -> None:
    send(store, 1, T0)
    send(store, 2, T0, reply_to=SECRETARIAT)
    new, _ = outgoing(3, subject=subject, reply_to=SECRETARIAT)
    assert new.raw.startswith(b"X-MSS-MES: FIN\r\n")
    closing = store.repository.add_messages([new], T0 + timedelta(days=1))[0].pk
    channels = store.channels.find(mailbox=PRO) + store.channels.find(mailbox=SECRETARIAT)
    assert {(c.state, c.closed_by, c.reason) for c in channels} == {("closed", "<o3@h>", "[FIN] sent")}
    assert all(c.closed_at == T0 + timedelta(days=1) for c in channels)
    events = [store.channels.show(c.id).events[-1] for c in channels]
    assert {(kind, pk) for _, kind, pk in events} == {("channel-closed", closing)}


def test_the_header_is_added_once_and_only_to_messages_without_it() -> None:
    raw = b"Subject: [FIN]\nX-MSS-MES: FIN\n\nbody\n"
    assert with_end_of_exchange(raw) == raw
    assert with_end_of_exchange(b"Subject: [FIN]\n\nbody\n") == b"X-MSS-MES: FIN\nSubject: [FIN]\n\nbody\n"


async def test_patient_replies_are_accepted_while_open_then_refused_with_the_reason(store: Store) -> None:
    gate = ChannelGate(store.channels, lambda: T0)
    assert await gate.check(PATIENT, PRO) is not None  # never written to: unknown channel
    original = send(store, 1, T0)
    assert await gate.check(PATIENT, PRO) is None
    new, record = patient_reply(1, in_reply_to="<o1@h>")
    admitted = await gate.admit(new, record, [PRO])
    assert admitted.state == "stored" and admitted.related_message_pk == original
    store.repository.add_messages([admitted], T0 + timedelta(days=2))
    assert store.channels.find()[0].last_activity_at == T0 + timedelta(days=2)

    send(store, 2, T0 + timedelta(days=12), subject="[FIN]")
    refusal = await gate.check(PATIENT, PRO)
    assert refusal is not None and refusal.smtp_reply == (
        "550 5.7.1 Citizen channel closed: the patient can no longer reply to this mailbox "
        "([FIN] sent 2026-05-13)"
    )
    later, record = patient_reply(2)
    kept = await gate.admit(later, record, [PRO])
    assert (kept.state, kept.state_reason) == ("refused", refusal.text)
    pk = store.repository.add_messages([kept], T0 + timedelta(days=13))[0].pk
    [refused] = store.channels.refused()
    assert (refused.id, refused.sender, refused.reason, refused.source) == (pk, PATIENT, refusal.text, "imap")


async def test_an_unknown_channel_and_a_hand_closed_one_say_so(store: Store) -> None:
    gate = ChannelGate(store.channels, lambda: T0)
    unknown = await gate.check(PATIENT, PRO)
    assert unknown is not None and unknown.smtp_reply == (
        "550 5.7.1 No citizen channel: this mailbox has not written to this patient, and only a "
        "professional can open an exchange with Mon Espace Santé"
    )
    send(store, 1, T0)
    [channel] = store.channels.find()
    closed = store.channels.close(channel.id, "alice", T0 + timedelta(days=1))
    assert (closed.state, closed.closed_by, closed.reason) == ("closed", "admin:alice", "closed by alice")
    refusal = await gate.check(PATIENT, PRO)
    assert refusal is not None and refusal.text.endswith("(closed by the hospital 2026-05-02)")
    assert await gate.check("dr.x@cabinet.mssante.fr", PRO) is None  # not patient mail
    # Each refusal is in the channel's audit trail, though nothing was stored.
    events = [kind for _, kind, _ in store.channels.show(channel.id).events]
    assert events == ["channel-opened", "channel-closed", "patient-mail-refused"]


async def test_the_scheduler_expires_idle_channels_with_an_injected_clock(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    send(store, 1, T0)  # idle from T0
    send(store, 2, T0 + timedelta(days=80), reply_to=SECRETARIAT)  # active later
    now = T0 + timedelta(days=90, seconds=1)
    scheduler = Scheduler()
    expiry = ChannelExpiry(SETTINGS, store.channels, scheduler, lambda: now)
    await scheduler.start()
    await expiry.start()
    try:
        await asyncio.wait_for(expiry.ran.wait(), 10)  # the first run happens at start
    finally:
        await expiry.stop(0)
        await scheduler.stop(0)
    states = {c.mailbox: (c.state, c.reason) for c in store.channels.find()}
    assert states == {PRO: ("expired", "no activity since 2026-05-01"), SECRETARIAT: ("open", None)}
    [expired] = store.channels.find(mailbox=PRO)
    logged = [r for r in caplog.records if r.name == "gateway.audit" and r.getMessage() == "channel-expired"]
    assert [r.mssgw_fields["channel"] for r in logged] == [expired.id]
    refusal = await ChannelGate(store.channels, lambda: T0).check(PATIENT, PRO)
    assert refusal is not None and refusal.smtp_reply == (
        "550 5.7.1 Citizen channel expired: the patient can no longer reply to this mailbox "
        "(no exchange since 2026-05-01, expired 2026-07-30)"
    )
    assert [kind for _, kind, _ in store.channels.show(store.channels.find(mailbox=PRO)[0].id).events] == [
        "channel-opened",
        "channel-expired",
        "patient-mail-refused",
    ]


SUBMITTING = settings_module.from_mapping(
    {
        "gateway": {"hostname": "mssgw.hopital.test.mssante.fr", "nil_reference": "DEV935997"},
        "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
        "inbound": {"domains": ["hopital.test.mssante.fr"]},
        "submission": {"clients": [{"name": "dpi", "senders": [PRO]}]},
    }
)


async def test_a_submitted_text_to_a_patient_needs_x_mssgw_patient_and_fin_closes_it(
    store: Store,
) -> None:
    intake, _ = citizen_intake(SUBMITTING, store, lambda: T0)
    text = message(sender=PRO, to=PATIENT, subject="Rendez-vous")
    refused = await intake.receive(
        Arrival(text, PRO, (Recipient(PATIENT),), "submission", authenticated_as="dpi")
    )
    assert refused.message_pk is None and refused.verdicts[0].reply == (
        "550 5.7.1 mail to a patient address needs the patient's qualified INS; missing: the patient's "
        "identity (matricule, OID, birth name, first given name, birth date, sex)"
    )
    named = message(
        sender=PRO,
        to=PATIENT,
        subject="[FIN] Rendez-vous",
        X_MSSGW_Patient="matricule=279035121518989; birth-name=PAT-TROIS; given-name=DOMINIQUE; "
        "birth-date=1979-03-28; sex=F",
    )
    result = await intake.receive(
        Arrival(named, PRO, (Recipient(PATIENT),), "submission", authenticated_as="dpi")
    )
    assert result.message_pk is not None, result.verdicts
    stored = store.queue.raw(result.message_pk)
    assert stored.startswith(b"X-MSS-MES: FIN\r\n") and b"X-MSSGW" not in stored
    [channel] = store.channels.find()
    assert (channel.state, channel.reason, channel.mailbox) == ("closed", "[FIN] sent", PRO)

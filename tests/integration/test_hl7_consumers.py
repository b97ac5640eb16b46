"""Documents received on a mailbox an HL7 consumer serves: one MDM per CDA committed with the mail, sent over
MLLP to a real consumer (ours, and the python-hl7 library's own server), and its ACKs made into the one MDN
the sender asked for: AA → processed, AE 902 → the ANS KO subject and disposition, AR and silence retried
per schedule then 906. A T10 never overtakes the T02 of its document; no consumer, no change."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import hl7
import hl7.mllp
import pytest
from sqlalchemy import text

from gateway import metrics
from gateway import settings as settings_module
from gateway.channels.steps import CitizenSteps
from gateway.outbound.mdm_sender import MdmSender
from gateway.scheduler import Scheduler
from gateway.store.db import Store, open_store
from gateway.store.mdms import NewMdm
from gateway.store.repository import NewMessage
from gateway.store.tables import SCHEMA_VERSION
from mappers import xds
from mappers.hl7_consumer_ack import DocumentResult
from mappers.mime import build_message, parse_message
from mappers.records import Mailbox, MessageRecord
from tests.integration.test_receipts import COLLEAGUE, HOSTNAME, PRO, T0
from tests.integration.test_receipts import document_mail as receipts_document_mail
from tests.support.consumer import Consumer
from tests.support.imap_bridge import server_context
from tests.support.pki import Pki
from tests.unit.mappers import samples
from tests.unit.mappers.test_hl7_mdm import PARENT, received, version_two

SECOND_ID = "1.2.250.1.213.1.1.1.45.2^9"


def settings_for(
    port: int, schedule: tuple[float, ...] = (60.0,), **consumer: object
) -> settings_module.Settings:
    return settings_module.from_mapping(
        {
            "gateway": {"hostname": HOSTNAME, "nil_reference": "DEV935997"},
            "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
            "hl7": {
                "application": "MSSGW",
                "facility": "CHU_Y",
                "consumers": [
                    {
                        "name": "dpi",
                        "mailboxes": [PRO],
                        "host": "127.0.0.1",
                        "port": port,
                        "application": "DPI",
                        "facility": "CHU_Y",
                        "ack_timeout": 1.0,
                        "retry_schedule": list(schedule),
                        **consumer,
                    }
                ],
            },
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def document_mail(*, documents: int = 1, dnt: bool = True) -> bytes:
    """A professional's mail to our mailbox with ``documents`` CDAs of the ANS test patient."""
    docs = [samples.cda_document(confidentiality=())]
    if documents > 1:
        docs.append(
            samples.cda_document(confidentiality=(), document_id=SECOND_ID, title="CR d'imagerie - IRM")
        )
    record = MessageRecord(
        author=Mailbox(COLLEAGUE),
        to=(Mailbox(PRO),),
        subject="",
        patient=samples.patient(),
        documents=tuple(docs),
        disposition_notification_to=Mailbox(COLLEAGUE) if dnt else None,
    )
    return build_message(record, nil_reference="DEV935997", hostname="cabinet.test", now=T0).as_bytes()


async def receive(store: Store, settings: settings_module.Settings, raw: bytes) -> int:
    """The mail as the operator listener or the IMAP bridge hands it to intake: finish, then one commit."""
    steps = CitizenSteps(settings, store.channels, lambda: T0)
    record = parse_message(raw)
    new = NewMessage(raw, COLLEAGUE, "inbound", "operator", message_id=record.message_id)
    finished = await steps.finish(new, record, [PRO])
    return store.repository.add_messages([finished], T0)[0].pk


def mdns(store: Store) -> list[EmailMessage]:
    found = []
    for entry in store.queue.entries(("queued",)):
        if entry.kind == "mdn":
            message = email.message_from_bytes(store.queue.raw(entry.id), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            found.append(message)
    return found


def disposition(mdn: EmailMessage) -> str:
    return str(mdn.get_payload()[1].get_payload()[0]["Disposition"])  # type: ignore[index, union-attr]


def sender_for(store: Store, settings: settings_module.Settings, clock: Clock) -> MdmSender:
    return MdmSender(settings, store.mdms, Scheduler(), clock)


async def test_each_document_is_one_mdm_and_aa_makes_one_processed_mdn(store: Store) -> None:
    with Consumer(["AA"]) as dpi:
        settings = settings_for(dpi.port)
        pk = await receive(store, settings, document_mail(documents=2))
        assert mdns(store) == []  # the MDN waits for the consumer
        await sender_for(store, settings, Clock()).run()
        frames = dpi.received()
    assert len(frames) == 2
    first, second = (hl7.parse(frame) for frame in frames)
    assert str(first.segment("MSH")[9]) == "MDM^T02^MDM_T02"
    assert str(first.segment("TXA")[12]) == "7^^1.2.250.1.213.1.1.1.45.2^ISO"
    assert str(second.segment("TXA")[12]) == "9^^1.2.250.1.213.1.1.1.45.2^ISO"
    assert str(first.segment("PID")[3]).startswith(samples.patient().matricule)
    [mdn] = mdns(store)
    assert disposition(mdn) == "automatic-action/MDN-sent-automatically; processed"
    assert str(mdn["Subject"]).startswith("XDM/1.0/DDM+")
    assert str(mdn["To"]) == COLLEAGUE
    human = mdn.get_payload()[0].get_content()  # type: ignore[index, union-attr]
    assert "CR d'imagerie - IRM : intégré" in human
    shown = store.queue.show(pk)
    assert [(m.event, m.state, m.ack_code, m.result_code) for m in shown.mdms] == [
        ("T02", "answered", "AA", None),
        ("T02", "answered", "AA", None),
    ]
    assert {m.mdn_id for m in shown.mdms} == {store.queue.entries(("queued",))[0].id}


async def test_ae_902_gives_the_ans_ko_subject_and_disposition(store: Store) -> None:
    with Consumer(["AE 902"]) as dpi:
        settings = settings_for(dpi.port)
        await receive(store, settings, document_mail())
        await sender_for(store, settings, Clock()).run()
        assert len(dpi.received()) == 1
    [mdn] = mdns(store)
    assert str(mdn["Subject"]).startswith("[KO Intégration système !][902] XDM/1.0/DDM+")
    assert disposition(mdn) == (
        "automatic-action/MDN-sent-automatically; processed/Error: 902^Identifiant patient inconnu"
    )
    human = mdn.get_payload()[0].get_content()  # type: ignore[index, union-attr]
    assert "l'erreur 902^Identifiant patient inconnu" in human
    parts = mdn.get_payload()
    assert [p.get_content_type() for p in parts][3:] == ["application/zip", "application/pdf"]  # type: ignore[union-attr]


async def test_one_failed_document_of_two_makes_the_mdn_an_error_listing_both(store: Store) -> None:
    with Consumer(["AA", "AE 902"]) as dpi:
        settings = settings_for(dpi.port)
        await receive(store, settings, document_mail(documents=2))
        await sender_for(store, settings, Clock()).run()
    [mdn] = mdns(store)
    assert "Error: 902^" in disposition(mdn)
    human = mdn.get_payload()[0].get_content()  # type: ignore[index, union-attr]
    assert "intégré" in human and "erreur 902^Identifiant patient inconnu" in human


async def test_ar_is_sent_again_then_reported_906_once_the_schedule_is_spent(store: Store) -> None:
    clock = Clock()
    with Consumer(["AR 207"]) as dpi:
        settings = settings_for(dpi.port, schedule=(30.0,))
        pk = await receive(store, settings, document_mail())
        sender = sender_for(store, settings, clock)
        await sender.run()
        assert mdns(store) == []
        [mdm] = store.queue.show(pk).mdms
        assert (mdm.state, mdm.attempts, mdm.last_error) == ("pending", 1, "ACK AR 906")
        await sender.run()  # not due yet
        clock.now += timedelta(seconds=31)
        await sender.run()
        assert len(dpi.received()) == 2
        frames = dpi.received()
    assert frames[0] == frames[1]  # the same MDM, the same MSH-10
    [mdn] = mdns(store)
    assert disposition(mdn).endswith("processed/Error: 906^Erreur 'Autre'")
    [mdm] = store.queue.show(pk).mdms
    assert (mdm.state, mdm.ack_code, mdm.result_code) == ("answered", "AR", 906)


async def test_a_silent_consumer_is_retried_then_906_and_counted(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.outbound.mdm_sender")
    clock = Clock()
    before = metrics.HL7_CONSUMER_MESSAGES.labels("dpi", "unanswered")._value.get()
    with Consumer([None]) as dpi:
        settings = settings_for(dpi.port, schedule=(30.0,))
        pk = await receive(store, settings, document_mail())
        sender = sender_for(store, settings, clock)
        await sender.run()
        [mdm] = store.queue.show(pk).mdms
        assert mdm.state == "pending" and (mdm.last_error or "").startswith("no ACK")
        clock.now += timedelta(seconds=31)
        await sender.run()
        assert len(dpi.received()) == 2
    [mdn] = mdns(store)
    assert disposition(mdn).endswith("processed/Error: 906^Erreur 'Autre'")
    assert store.queue.show(pk).mdms[0].state == "unanswered"
    assert metrics.HL7_CONSUMER_MESSAGES.labels("dpi", "unanswered")._value.get() == before + 1
    [alert] = [r for r in caplog.records if r.getMessage() == "mdm-unanswered"]
    assert alert.levelno == logging.ERROR


async def test_no_consumer_listening_keeps_the_mdm_until_it_answers(store: Store) -> None:
    clock = Clock()
    with Consumer() as probe:
        port = probe.port
    settings = settings_for(port, schedule=(5.0, 5.0))
    pk = await receive(store, settings, document_mail())
    sender = sender_for(store, settings, clock)
    await sender.run()
    assert store.queue.show(pk).mdms[0].state == "pending"
    assert store.stats.gauges().mdm_pending == {"dpi": (1, T0)}  # the backlog and oldest-age gauges
    clock.now += timedelta(seconds=6)
    with Consumer(["AA"], port=port):
        await sender.run()
    assert store.queue.show(pk).mdms[0].state == "answered"
    assert store.stats.gauges().mdm_pending == {}
    assert len(mdns(store)) == 1


async def test_no_mdn_asked_the_documents_still_reach_the_consumer(store: Store) -> None:
    with Consumer(["AE 902"]) as dpi:
        settings = settings_for(dpi.port)
        pk = await receive(store, settings, document_mail(dnt=False))
        await sender_for(store, settings, Clock()).run()
        assert len(dpi.received()) == 1
    assert mdns(store) == []
    assert store.queue.show(pk).mdms[0].result_code == 902


async def test_without_a_consumer_the_mdn_goes_at_once_and_no_mdm_is_written(store: Store) -> None:
    settings = settings_module.from_mapping(
        {
            "gateway": {"hostname": HOSTNAME, "nil_reference": "DEV935997"},
            "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
        }
    )
    pk = await receive(store, settings, document_mail())
    [mdn] = mdns(store)
    assert disposition(mdn) == "automatic-action/MDN-sent-automatically; processed"
    assert store.queue.show(pk).mdms == ()


async def test_a_package_whose_cda_and_metadata_disagree_never_reaches_the_consumer(store: Store) -> None:
    """METADATA.XML names another patient than the CDA: no MDM; today's 904 MDN goes at once."""
    with Consumer(["AA"]) as dpi:
        settings = settings_for(dpi.port)
        raw = receipts_document_mail(dnt=COLLEAGUE, cda_patient_matricule="146026322000196")
        pk = await receive(store, settings, raw)
        await sender_for(store, settings, Clock()).run()
        assert dpi.received() == []
    assert store.queue.show(pk).mdms == ()
    [mdn] = mdns(store)
    assert str(mdn["Subject"]).startswith("[KO Intégration système !][904] XDM/1.0/DDM+")
    assert disposition(mdn).startswith("automatic-action/MDN-sent-automatically; processed/Error: 904^")


def queued_mdm(event: str, document_id: str, replaces: str = "") -> NewMessage:
    """A received mail carrying one MDM, as intake commits it (the ordering is the store's)."""
    mdm = NewMdm("dpi", PRO, document_id, event, f"CTL-{event}", document_id, replaces, b"MSH|", None)
    return NewMessage(b"Subject: x\r\n\r\n", COLLEAGUE, "inbound", "operator", mdms=(mdm,))


def test_a_t10_never_overtakes_the_t02_of_its_document(store: Store) -> None:
    original, other = "1.2.3^1", "1.2.3^50"
    store.repository.add_messages([queued_mdm("T02", original)], T0)
    store.repository.add_messages([queued_mdm("T10", "1.2.3^2", replaces=original)], T0)
    store.repository.add_messages([queued_mdm("T02", other)], T0)
    lease = timedelta(seconds=60)
    first = store.mdms.claim_next("dpi", T0, lease)
    assert first is not None and first.event == "T02"
    # The T02 is being sent (leased): the T10 waits behind it, another document does not.
    other_mdm = store.mdms.claim_next("dpi", T0, lease)
    assert other_mdm is not None and other_mdm.event == "T02" and other_mdm.id != first.id
    assert store.mdms.claim_next("dpi", T0, lease) is None
    store.mdms.settle(other_mdm.id, "AA", DocumentResult(None), T0, lambda *_: None)
    # Deferred, past its lease: the T10 still waits.
    store.mdms.retry_later(first.id, T0 + timedelta(hours=1), "no ACK")
    assert store.mdms.claim_next("dpi", T0 + timedelta(minutes=5), lease) is None
    store.mdms.settle(first.id, "AA", DocumentResult(None), T0, lambda *_: None)
    replacement = store.mdms.claim_next("dpi", T0 + timedelta(minutes=5), lease)
    assert replacement is not None and replacement.event == "T10"


@pytest.fixture
async def library_consumer() -> AsyncIterator[int]:
    """The python-hl7 library's own MLLP server as the consumer, acknowledging AA with its own ACK builder."""

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", 0, encoding="utf-8")
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_the_hl7_librarys_own_server_as_consumer(store: Store, library_consumer: int) -> None:
    settings = settings_for(library_consumer)
    pk = await receive(store, settings, document_mail())
    await sender_for(store, settings, Clock()).run()
    [mdm] = store.queue.show(pk).mdms
    assert (mdm.state, mdm.ack_code) == ("answered", "AA")
    assert disposition(mdns(store)[0]).endswith("; processed")


def test_a_store_of_schema_version_5_gets_the_mdm_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    old = open_store(url)
    with old.engine.begin() as connection:
        connection.execute(text("DROP TABLE hl7_mdms"))
        connection.execute(text("UPDATE schema_version SET version = 5"))
    old.close()
    reopened = open_store(url)
    try:
        reopened.repository.add_messages([queued_mdm("T02", "1.2.3^1")], T0)
        assert reopened.mdms.claim_next("dpi", T0, timedelta(seconds=60)) is not None
        with reopened.sessions() as session:
            assert session.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
    finally:
        reopened.close()


async def test_a_t10_mail_after_its_t02_waits_for_the_t02s_ack_over_mllp(store: Store) -> None:
    """Two mails: the original (T02), then its replacement (the package's action slot C → T10, TXA-13 the
    original's id). The consumer does not answer the T02 at first: the T10 waits until the T02 is acked."""
    original = received(samples.cda_document(document_id=PARENT, confidentiality=()))
    replacement = received(version_two(confidentiality=()), slots={1: "C"})
    clock = Clock()
    with Consumer([None, "AA"]) as dpi:
        settings = settings_for(dpi.port, schedule=(30.0,))
        steps = CitizenSteps(settings, store.channels, clock)
        for record in (original, replacement):
            new = NewMessage(document_mail(), COLLEAGUE, "inbound", "operator", message_id=record.message_id)
            store.repository.add_messages([await steps.finish(new, record, [PRO])], T0)
        sender = sender_for(store, settings, clock)
        await sender.run()
        assert [str(hl7.parse(f).segment("MSH")[9]) for f in dpi.received()] == ["MDM^T02^MDM_T02"]
        clock.now += timedelta(seconds=31)
        await sender.run()
        frames = dpi.received()
    events = [str(hl7.parse(frame).segment("MSH")[9]) for frame in frames]
    assert events == ["MDM^T02^MDM_T02", "MDM^T02^MDM_T02", "MDM^T10^MDM_T02"]
    t10 = hl7.parse(frames[2])
    assert str(t10.segment("TXA")[13]) == "6^^1.2.250.1.213.1.1.1.45.2^ISO"
    assert str(t10.segment("ORC")[1]) == "RO"


def modif_conf_code(frame: str) -> str:
    [flag] = [o for o in hl7.parse(frame).segments("OBX") if str(o[3][0][0]) == "MODIF_CONF_CODE"]
    return str(flag[5][0][0])


async def test_a_t10_whose_masks_differ_from_its_t02s_says_modif_conf_code_y(store: Store) -> None:
    """MODIF_CONF_CODE compares a replacement's masks with those the consumer was given for the version it
    replaces (read back from the stored MDM): Y when the sender made the document invisible to the patient,
    N for a second replacement that keeps the masks."""
    original = received(samples.cda_document(document_id=PARENT, confidentiality=()))
    hidden = (xds.INVISIBLE_PATIENT,)
    second, third = "1.2.250.1.213.1.1.1.45.2^9", "1.2.250.1.213.1.1.1.45.2^10"
    changed = received(version_two(document_id=second, confidentiality=hidden), slots={1: "C"})
    kept = received(version_two(document_id=third, replaces=second, confidentiality=hidden), slots={1: "C"})
    with Consumer(["AA", "AA", "AA"]) as dpi:
        settings = settings_for(dpi.port)
        steps = CitizenSteps(settings, store.channels, Clock(), sent_masks=store.mdms.sent_masks)
        for record in (original, changed, kept):
            new = NewMessage(document_mail(), COLLEAGUE, "inbound", "operator", message_id=record.message_id)
            store.repository.add_messages([await steps.finish(new, record, [PRO])], T0)
        await sender_for(store, settings, Clock()).run()
        frames = dpi.received()
    assert [modif_conf_code(f) for f in frames] == ["N", "Y", "N"]


async def test_over_tls_the_consumers_certificate_is_checked(store: Store, pki: Pki) -> None:
    with Consumer(["AA"], context=server_context(pki)) as dpi:
        untrusted = settings_for(dpi.port, tls=True, ca_bundle=str(pki.untrusted.ca))
        pk = await receive(store, untrusted, document_mail())
        await sender_for(store, untrusted, Clock()).run()
        [mdm] = store.queue.show(pk).mdms
        assert mdm.state == "pending" and "CERTIFICATE_VERIFY_FAILED" in (mdm.last_error or "")
        assert dpi.received() == []
        trusted = settings_for(dpi.port, tls=True, ca_bundle=str(pki.ca))
        clock = Clock()
        clock.now += timedelta(minutes=2)
        await sender_for(store, trusted, clock).run()
        assert len(dpi.received()) == 1
    assert store.queue.show(pk).mdms[0].state == "answered"

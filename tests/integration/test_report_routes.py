"""Received receipts for our senders go back the way the sender came, once they set the receipt status; a
report whose way back was removed waits rather than going anywhere else; and a store of the previous schema
version is brought up to this one at start, keeping what it holds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from gateway import settings as settings_module
from gateway.channels.steps import CitizenSteps
from gateway.outbound.routing import UNROUTABLE, Router
from gateway.outbound.transports.base import OutboundMessage, OutboundRecipient, Outcome
from gateway.outbound.transports.local import LocalTransport
from gateway.store.db import Store, open_store
from gateway.store.repository import NewMessage, Recipient
from gateway.store.tables import SCHEMA_VERSION
from mappers import dsn
from mappers.mime import parse_message
from tests.support.mail import message

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
APP = "dpi@hopital.test.mssante.fr"
COLLEAGUE = "dr.martin@cabinet.test.mssante.fr"
SETTINGS = settings_module.from_mapping(
    {
        "gateway": {"hostname": "mssgw.hopital.test.mssante.fr", "nil_reference": "DEV935997"},
        "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
        "submission": {"clients": [{"name": "dpi", "senders": [APP], "return_host": "mta.hopital.local"}]},
    }
)


def original(store: Store, source: str, client: str | None) -> bytes:
    raw = message(sender=APP, to=COLLEAGUE)
    new = NewMessage(
        raw,
        APP,
        "outbound",
        source,
        (Recipient(COLLEAGUE),),
        message_id=parse_message(raw).message_id,
        client=client,
    )
    store.repository.add_messages([new], T0)
    return raw


async def receive_bounce(store: Store, raw: bytes) -> int:
    steps = CitizenSteps(SETTINGS, store.channels, lambda: T0, store.repository.receipt_original)
    report = dsn.build_dsn(
        raw,
        [dsn.RecipientReport(COLLEAGUE, "failed", "5.1.1", diagnostic="550 5.1.1 unknown")],
        reporting_mta="smtp.operator.test",
        postmaster="MAILER-DAEMON@smtp.operator.test",
        sender=APP,
        now=T0,
    ).as_bytes()
    record = parse_message(report)
    new = NewMessage(report, "", "inbound", "imap", message_id=record.message_id)
    finished = await steps.finish(new, record, [])
    return store.repository.add_messages([finished], T0)[0].pk


async def test_a_received_dsn_goes_on_to_the_submission_clients_mta(store: Store) -> None:
    pk = await receive_bounce(store, original(store, "submission", "dpi"))
    [forward] = store.queue.show(pk).deliveries
    assert (forward.recipient, forward.state) == (APP, "queued")
    with store.sessions() as session:
        via, notify = session.execute(
            text("SELECT via, notify FROM deliveries WHERE id = :id"), {"id": forward.id}
        ).one()
    # Routed to the client's return_host, and never reported on itself.
    assert (via, notify) == ("client:dpi", "NEVER")


async def test_a_received_dsn_for_mail_from_mssgw_send_stays_in_the_store(store: Store) -> None:
    raw = original(store, "cli", None)
    pk = await receive_bounce(store, raw)
    shown = store.queue.show(pk)
    assert shown.kind == "dsn" and shown.deliveries == ()
    [sent] = store.queue.entries(("queued",))
    assert sent.deliveries[0].receipt_status == "failed"


def test_a_store_of_schema_version_1_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url)
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE messages DROP COLUMN client"))
        connection.execute(text("ALTER TABLE deliveries DROP COLUMN via"))
        # Nor the tables later versions added (HL7 transmissions, the directory, the ZAM, the MDMs).
        for table in (
            "hl7_mdms", "hl7_zams", "hl7_transmissions",
            "directory_terms", "directory_roles", "directory_entries", "directory_imports",
        ):  # fmt: skip
            connection.execute(text(f"DROP TABLE {table}"))
        connection.execute(text("UPDATE schema_version SET version = 1"))
    store.close()
    store = open_store(url)
    try:
        raw = original(store, "submission", "dpi")
        assert raw
        with store.sessions() as session:
            assert session.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
            assert session.execute(text("SELECT client FROM messages")).scalar() == "dpi"
    finally:
        store.close()


async def test_a_report_whose_client_lost_its_return_host_waits_instead_of_going_elsewhere() -> None:
    # Queued for client:dpi, then the configuration was changed: the report is never sent to the operator.
    settings = settings_module.from_mapping(
        {
            "gateway": {"hostname": "mssgw.hopital.test.mssante.fr"},
            "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
            "submission": {"clients": [{"name": "dpi", "senders": [APP]}]},
        }
    )
    destination = Router(settings).destination(APP, "client:dpi")
    assert destination == UNROUTABLE
    report = OutboundMessage("", (OutboundRecipient(APP, "NEVER"),), b"Subject: x\r\n\r\nx\r\n")
    [result] = await LocalTransport(destination, "mssgw.test", 5).send(report)
    assert result.outcome is Outcome.TEMPORARY and result.reply.startswith("4.3.5 no way back")

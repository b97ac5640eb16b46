"""ZAM owed to HL7 producers, on SQLite and PostgreSQL: written in the commit of the DSN/MDN (or of the
relay's permanent failure) that causes them, only when the producer asked, once per fact however many copies
of a receipt come, and an older store (schema 4) gets the table with the indexes a new store has."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, select, text

from gateway.store.db import Store, open_store
from gateway.store.receipts import ReceiptUpdate, RecipientStatus
from gateway.store.repository import DeliveryOutcome, NewMessage, Recipient
from gateway.store.states import DeliveryState
from gateway.store.tables import SCHEMA_VERSION, Hl7Zam

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
DOCTOR = "dr.martin@hopital.mssante.fr"
OTHER = "dr.b@cabinet.mssante.fr"


def hl7_mail(zam_events: str | None, control_id: str = "MSG-42") -> NewMessage:
    raw = f"Message-ID: <{control_id}@test>\r\nSubject: CR\r\n\r\nbody\r\n".encode()
    return NewMessage(
        raw=raw,
        envelope_from="comptes-rendus@hopital.test.mssante.fr",
        direction="outbound",
        source="hl7",
        recipients=(Recipient(DOCTOR, "SUCCESS,FAILURE"), Recipient(OTHER, "SUCCESS,FAILURE")),
        message_id=f"<{control_id}@test>",
        hl7_control=("dpi", control_id),
        zam_events=zam_events,
    )


def receipt(kind: str, control_id: str, *statuses: RecipientStatus) -> NewMessage:
    raw = f"Message-ID: <{kind}-{control_id}@op>\r\n\r\nreport\r\n".encode()
    update = ReceiptUpdate(kind, f"<{control_id}@test>", None, statuses)
    return NewMessage(raw, "", "inbound", "operator", (), kind=kind, receipt=update)


def zams(store: Store) -> list[tuple[str, str, str, str | None, str]]:
    with store.sessions() as session:
        rows = session.execute(
            select(
                Hl7Zam.event, Hl7Zam.control_id, Hl7Zam.address, Hl7Zam.failure_code, Hl7Zam.state
            ).order_by(Hl7Zam.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_dsn_and_an_mdn_owe_z02_per_recipient_then_z03(store: Store) -> None:
    repo = store.repository
    repo.add_messages([hl7_mail("Z02,Z03")], T0)
    dsn = receipt(
        "dsn",
        "MSG-42",
        RecipientStatus(DOCTOR, "delivered", "2.0.0"),
        RecipientStatus(OTHER, "failed", "smtp; 550 5.1.1 unknown"),
    )
    repo.add_messages([dsn], T0)
    repo.add_messages([receipt("mdn", "MSG-42", RecipientStatus(DOCTOR, "displayed"))], T0)
    assert zams(store) == [
        ("Z02", "MSG-42", DOCTOR, None, "pending"),
        ("Z02", "MSG-42", OTHER, "550", "pending"),
        ("Z03", "MSG-42", DOCTOR, None, "pending"),
    ]


def test_nothing_is_owed_unless_asked_and_a_delay_is_not_final(store: Store) -> None:
    repo = store.repository
    repo.add_messages([hl7_mail(None, "MSG-1"), hl7_mail("Z02", "MSG-2")], T0)
    repo.add_messages([receipt("dsn", "MSG-1", RecipientStatus(DOCTOR, "delivered"))], T0)
    repo.add_messages([receipt("mdn", "MSG-2", RecipientStatus(DOCTOR, "displayed"))], T0)
    repo.add_messages([receipt("dsn", "MSG-2", RecipientStatus(DOCTOR, "delayed"))], T0)
    assert zams(store) == []


def test_a_receipt_received_twice_owes_its_zam_once(store: Store) -> None:
    repo = store.repository
    repo.add_messages([hl7_mail("Z02,Z03")], T0)
    for _ in range(2):  # the operator (or a resending peer) hands the same reports back twice
        repo.add_messages([receipt("dsn", "MSG-42", RecipientStatus(DOCTOR.upper(), "delivered"))], T0)
        repo.add_messages([receipt("mdn", "MSG-42", RecipientStatus(DOCTOR, "displayed"))], T0)
    # "relayed" then "delivered" both say the mail got there: one Z02 (Y).
    repo.add_messages([receipt("dsn", "MSG-42", RecipientStatus(OTHER, "relayed"))], T0)
    repo.add_messages([receipt("dsn", "MSG-42", RecipientStatus(OTHER, "delivered"))], T0)
    # A later refusal says something new for that recipient: its Z02 (N) is owed.
    repo.add_messages(
        [receipt("dsn", "MSG-42", RecipientStatus(OTHER, "failed", "smtp; 550 5.1.1 gone"))], T0
    )
    assert zams(store) == [
        ("Z02", "MSG-42", DOCTOR, None, "pending"),
        ("Z03", "MSG-42", DOCTOR, None, "pending"),
        ("Z02", "MSG-42", OTHER, None, "pending"),
        ("Z02", "MSG-42", OTHER, "550", "pending"),
    ]


def test_two_copies_committed_at_once_owe_one_zam(store: Store) -> None:
    repo = store.repository
    repo.add_messages([hl7_mail("Z02")], T0)
    start = threading.Barrier(4)

    def hand_back() -> None:
        start.wait()
        repo.add_messages([receipt("dsn", "MSG-42", RecipientStatus(DOCTOR, "delivered"))], T0)

    threads = [threading.Thread(target=hand_back) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert zams(store) == [("Z02", "MSG-42", DOCTOR, None, "pending")]


def test_a_permanent_refusal_at_relay_time_owes_a_negative_z02(store: Store) -> None:
    repo = store.repository
    repo.add_messages([hl7_mail("Z02")], T0)
    first, second = repo.claim_due("a", T0, timedelta(minutes=5), 100, 3)
    by_recipient = {first.recipient: first, second.recipient: second}
    refused = DeliveryOutcome(
        by_recipient[DOCTOR].pk, DeliveryState.FAILED, T0, 550, "5.1.1 no such mailbox", "op:25"
    )
    later = DeliveryOutcome(
        by_recipient[OTHER].pk, DeliveryState.DEFERRED, T0, 451, "4.3.0 later", "op:25", T0
    )
    repo.record_outcomes([refused, later], [], T0)
    # Only the final refusal: a deferral says nothing yet. The operator's own DSN for it later adds nothing.
    repo.add_messages([receipt("dsn", "MSG-42", RecipientStatus(DOCTOR, "failed", "smtp; 550 5.1.1 no"))], T0)
    assert zams(store) == [("Z02", "MSG-42", DOCTOR, "550", "pending")]
    with store.sessions() as session:
        assert session.execute(select(Hl7Zam.failure_text)).scalar_one() == "550 5.1.1 no such mailbox"


def indexes(store: Store, *tables: str) -> dict[str, list[tuple[str | None, list[str | None]]]]:
    """The indexes of ``tables`` as the database reports them (name and columns)."""
    found = inspect(store.engine)
    return {
        table: sorted((index["name"], index["column_names"]) for index in found.get_indexes(table))
        for table in tables
    }


def test_a_store_of_schema_version_4_gets_the_zam_table(store: Store) -> None:
    hl7_tables = ("hl7_zams", "hl7_transmissions", "hl7_mdms")
    fresh = indexes(store, *hl7_tables)
    # The duplicate-ZAM check (``_already_owed``) and ``zams_of`` look a message's ZAM up by message_pk.
    assert ("ix_hl7_zams_message_pk", ["message_pk"]) in fresh["hl7_zams"]
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE hl7_mdms"))  # what schema 6 added
        connection.execute(text("DROP TABLE hl7_zams"))
        connection.execute(text("ALTER TABLE hl7_transmissions DROP COLUMN zam_events"))
        connection.execute(text("UPDATE schema_version SET version = 4"))
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    reopened = open_store(url)
    try:
        reopened.repository.add_messages([hl7_mail("Z03")], T0)
        reopened.repository.add_messages([receipt("mdn", "MSG-42", RecipientStatus(DOCTOR, "displayed"))], T0)
        assert zams(reopened) == [("Z03", "MSG-42", DOCTOR, None, "pending")]
        assert indexes(reopened, *hl7_tables) == fresh  # a migrated store is indexed as a new one
        with reopened.sessions() as session:
            assert session.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
    finally:
        reopened.close()


def test_the_backlog_gauge_counts_zam_not_yet_acknowledged(store: Store) -> None:
    repo = store.repository
    repo.add_messages([hl7_mail("Z02,Z03")], T0)
    repo.add_messages([receipt("dsn", "MSG-42", RecipientStatus(DOCTOR, "delivered"))], T0)
    repo.add_messages([receipt("mdn", "MSG-42", RecipientStatus(DOCTOR, "displayed"))], T0)
    assert store.stats.gauges().zams_pending == {"Z02": 1, "Z03": 1}
    (z02,) = [z for z in store.queue.show(1).zams if z.event == "Z02"]
    store.zams.acked(z02.id, T0)
    assert store.stats.gauges().zams_pending == {"Z03": 1}

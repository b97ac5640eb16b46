"""The (producer, MSH-10) record of HL7 messages, on SQLite and PostgreSQL: committed with the mail, so a
producer's retransmission is the same message whatever its bytes, and an older store gets the table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from gateway.store.db import Store, open_store
from gateway.store.repository import NewMessage, Recipient
from gateway.store.tables import SCHEMA_VERSION

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


def hl7_mail(n: int, control_id: str = "MSG-42") -> NewMessage:
    # Built again for each copy: another Message-ID and Date, as the gateway builds it at each arrival.
    raw = f"Message-ID: <h{n}@test>\r\nSubject: CR\r\n\r\nbody\r\n".encode()
    return NewMessage(
        raw=raw,
        envelope_from="comptes-rendus@hopital.test.mssante.fr",
        direction="outbound",
        source="hl7",
        recipients=(Recipient("dr.martin@hopital.mssante.fr"),),
        message_id=f"<h{n}@test>",
        hl7_control=("dpi", control_id),
    )


def test_a_retransmitted_control_id_is_the_message_already_stored(store: Store) -> None:
    repo = store.repository
    first = repo.add_messages([hl7_mail(1)], T0)[0]
    again = repo.add_messages([hl7_mail(2)], T0)[0]
    assert (again.pk, again.duplicate) == (first.pk, True)
    other = dataclasses.replace(hl7_mail(3), hl7_control=("other", "MSG-42"))
    assert repo.add_messages([other], T0)[0].duplicate is False  # another producer's MSH-10
    assert len(repo.claim_due("a", T0, LEASE, 100, 3)) == 2


def test_two_copies_in_one_commit_give_one_message(store: Store) -> None:
    stored = store.repository.add_messages([hl7_mail(1), hl7_mail(2), hl7_mail(3, "MSG-43")], T0)
    assert [s.duplicate for s in stored] == [False, True, False]
    assert stored[0].pk == stored[1].pk != stored[2].pk


def test_a_store_of_schema_version_2_gets_the_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url)
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE hl7_mdms"))  # schema 6's, as a version-2 store lacks it
        connection.execute(text("DROP TABLE hl7_transmissions"))
        connection.execute(text("UPDATE schema_version SET version = 2"))
    store.close()
    store = open_store(url)
    try:
        first = store.repository.add_messages([hl7_mail(1)], T0)[0]
        assert store.repository.add_messages([hl7_mail(2)], T0)[0].pk == first.pk
        with store.sessions() as session:
            assert session.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
    finally:
        store.close()

"""How the store keeps bodies: on PostgreSQL never with pglz (lz4, or uncompressed without it), in a fresh
store and in one migrated from schema 6; on SQLite as before."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from gateway.store.db import Store, open_store
from gateway.store.repository import NewMessage, Recipient
from gateway.store.tables import CONTENT_COLUMNS, SCHEMA_VERSION

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
BODY = ("X" * 78 + "\r\n") * 1300  # 100 KiB that compress 50 times, as smtp-source writes them


def big_message(name: str = "big", body: bytes = BODY.encode()) -> NewMessage:
    return NewMessage(
        raw=f"Message-ID: <{name}@test>\r\nSubject: {name}\r\n\r\n".encode() + body,
        envelope_from="app@hopital.test.mssante.fr",
        direction="outbound",
        source="test",
        recipients=(Recipient("r@dest.test"),),
        message_id=f"<{name}@test>",
    )


def has_lz4(store: Store) -> bool:
    with store.engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
            ).scalar()
        )


def column_storage(store: Store) -> dict[str, tuple[str, str]]:
    """``table.column`` → (``attcompression``, ``attstorage``) of each content column."""
    found = {}
    with store.engine.connect() as connection:
        for column in CONTENT_COLUMNS:
            compression, storage = connection.execute(
                text(
                    "SELECT attcompression, attstorage FROM pg_attribute "
                    "WHERE attrelid = CAST(:table AS regclass) AND attname = :column"
                ),
                {"table": column.table.name, "column": column.name},
            ).one()
            found[f"{column.table.name}.{column.name}"] = (str(compression), str(storage))
    return found


def stored_compression(store: Store, pk: int) -> str | None:
    """How PostgreSQL compressed the message's body (None: not compressed)."""
    with store.engine.connect() as connection:
        value = connection.execute(
            text("SELECT pg_column_compression(raw) FROM messages WHERE id = :pk"), {"pk": pk}
        ).scalar()
        return None if value is None else str(value)


def revert_to_schema_6(store: Store) -> None:
    with store.engine.begin() as connection:
        if store.backend == "postgresql":
            for column in CONTENT_COLUMNS:
                alter = f"ALTER TABLE {column.table.name} ALTER COLUMN {column.name}"
                connection.execute(text(f"{alter} SET STORAGE EXTENDED"))
                if has_lz4(store):
                    connection.execute(text(f"{alter} SET COMPRESSION default"))
        connection.execute(text("UPDATE schema_version SET version = 6"))


def test_a_fresh_store_and_a_migrated_one_keep_bodies_without_pglz(store: Store) -> None:
    pk = store.repository.add_messages([big_message()], T0)[0].pk
    if store.backend == "postgresql":
        # lz4 when the server has it (PostgreSQL 14 and later, built with it), else out of line uncompressed.
        expected = ("l", "x") if has_lz4(store) else ("", "e")
        fresh = column_storage(store)
        assert set(fresh.values()) == {expected}
        assert stored_compression(store, pk) == ("lz4" if expected[0] == "l" else None)
        revert_to_schema_6(store)
        assert set(column_storage(store).values()) == {("", "x")}  # pglz, PostgreSQL's default
    else:
        revert_to_schema_6(store)
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    reopened = open_store(url)
    try:
        with reopened.sessions() as session:
            assert session.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
        if reopened.backend == "postgresql":
            assert column_storage(reopened) == fresh
        assert reopened.queue.raw(pk) == big_message().raw  # read back byte for byte
    finally:
        reopened.close()


def test_every_octet_of_a_batch_of_bodies_is_read_back_as_given(store: Store) -> None:
    """On PostgreSQL a batch's bodies travel as one binary array (``pg_batch.BinaryArray``): NUL, quotes,
    backslashes, braces and commas are what a text array would have had to escape."""
    batch = [big_message(f"octets{n}", bytes(range(256)) * (n + 1) + b'"\\{},NULL') for n in range(3)]
    pks = [stored.pk for stored in store.repository.add_messages(batch, T0)]
    assert [store.queue.raw(pk) for pk in pks] == [new.raw for new in batch]

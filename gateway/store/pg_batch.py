"""PostgreSQL: the hot writes of a batch in one statement, one round trip whatever the batch's size.

Elsewhere a group of outcomes takes four statements (``Repository._record_outcomes``), a batch of mail's
rows one per table, most of them an ``executemany``, and a claim two: on PostgreSQL each is a round trip
and psycopg's pipeline, which cost more CPU than the rows themselves for the few rows a batch holds. Here
the rows travel as arrays, one per column, unnested by one statement with data-modifying CTEs. Its text
depends only on the columns, never on the number of rows, so psycopg prepares it once per connection.
A batch of mail's statement also finds the copies of stored messages itself: being the whole transaction,
it is sent in autocommit, ``BEGIN`` and ``COMMIT`` riding on its one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import (
    BigInteger,
    Connection,
    Dialect,
    Integer,
    LargeBinary,
    String,
    Table,
    TextClause,
    bindparam,
    text,
)
from sqlalchemy import column as typed

from gateway.store.family import Family
from gateway.store.states import WAITING, DeliveryState
from gateway.store.tables import UtcDateTime

# The outcomes are locked in id order, as the heartbeat renews them: two transactions never lock rows
# crosswise.
_RECORD = text(
    """
WITH given AS (
    SELECT * FROM unnest(
        CAST(:pks AS bigint[]), CAST(:states AS varchar[]), CAST(:ats AS timestamp[]),
        CAST(:codes AS integer[]), CAST(:replies AS text[]), CAST(:peers AS varchar[]),
        CAST(:retries AS timestamp[]), CAST(:refusals AS varchar[]), CAST(:details AS text[])
    ) AS given (pk, state, at, code, reply, peer, retry_at, refusal, detail)
),
mine AS (
    SELECT d.id, d.message_pk FROM deliveries d
    WHERE d.id = ANY(CAST(:pks AS bigint[])) AND d.state = :sending
    ORDER BY d.id FOR UPDATE
),
recorded AS (
    UPDATE deliveries d SET
        state = given.state, last_code = given.code, last_reply = given.reply,
        claimed_by = NULL, claimed_until = NULL, updated_at = given.at,
        next_attempt_at = COALESCE(given.retry_at, d.next_attempt_at),
        sent_at = CASE WHEN given.state = :sent THEN given.at ELSE d.sent_at END,
        receipt_status = COALESCE(given.refusal, d.receipt_status),
        receipt_detail = CASE WHEN given.refusal IS NULL THEN d.receipt_detail ELSE given.reply END,
        receipt_at = CASE WHEN given.refusal IS NULL THEN d.receipt_at ELSE given.at END
    FROM mine JOIN given ON given.pk = mine.id
    WHERE d.id = mine.id
    RETURNING d.id, mine.message_pk, given.state, given.at, given.code, given.reply, given.peer, given.detail
),
attempts AS (
    INSERT INTO delivery_attempts (delivery_pk, at, outcome, code, reply, peer)
    SELECT id, at, state, code, reply, peer FROM recorded
)
INSERT INTO audit_events (at, kind, message_pk, delivery_pk, channel_pk, detail)
SELECT at, state, message_pk, id, NULL, detail FROM recorded
RETURNING delivery_pk
"""
).bindparams(sending=DeliveryState.SENDING.value, sent=DeliveryState.SENT.value)


# The due deliveries leased, as ``Repository.claim_due``'s statement does elsewhere, with the envelope of
# each message beside its deliveries and its raw bytes on the first of them while their running total
# (per message, in id order) fits in ``room``.
_CLAIM = (
    text(
        """
WITH due AS (
    SELECT id FROM deliveries
    WHERE state IN (:queued, :deferred) AND next_attempt_at <= :now
    ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE deliveries d SET state = :sending, claimed_by = :owner, claimed_until = :until,
        attempts = d.attempts + 1, updated_at = :now
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.message_pk, d.recipient, d.notify, d.orcpt, d.attempts, d.created_at, d.via
),
carried AS (
    SELECT m.id, m.envelope_from, m.message_id, m.envid, m.ret, m.created_at, m.source, m.client,
        CASE WHEN sum(m.size) OVER (ORDER BY m.id) <= :room THEN m.raw END AS raw
    FROM messages m WHERE m.id IN (SELECT message_pk FROM claimed)
)
SELECT claimed.id, claimed.message_pk, claimed.recipient, claimed.notify, claimed.orcpt, claimed.attempts,
    claimed.created_at, claimed.via, carried.envelope_from, carried.message_id, carried.envid, carried.ret,
    carried.created_at AS message_created_at,
    CASE WHEN row_number() OVER (PARTITION BY claimed.message_pk ORDER BY claimed.id) = 1
        THEN carried.raw END AS raw,
    carried.source, carried.client
FROM claimed JOIN carried ON carried.id = claimed.message_pk
"""
    )
    .bindparams(
        bindparam("now", type_=UtcDateTime()),
        bindparam("until", type_=UtcDateTime()),
        queued=WAITING[0].value,
        deferred=WAITING[1].value,
        sending=DeliveryState.SENDING.value,
    )
    .columns(
        typed("id", BigInteger),
        typed("message_pk", BigInteger),
        typed("recipient", String),
        typed("notify", String),
        typed("orcpt", String),
        typed("attempts", Integer),
        typed("created_at", UtcDateTime),
        typed("via", String),
        typed("envelope_from", String),
        typed("message_id", String),
        typed("envid", String),
        typed("ret", String),
        typed("message_created_at", UtcDateTime),
        typed("raw", LargeBinary),
        typed("source", String),
        typed("client", String),
    )
)


def claim(connection: Connection, params: dict[str, object]) -> list[tuple[Any, ...]]:
    """Lease the due deliveries (``now``, ``limit``, ``owner``, ``until``, ``room``): per row the
    delivery's 8 columns as ``Repository.claim_due`` reads them, then its message's envelope as
    ``Envelope`` takes it, the raw bytes None but on the first row of a message with room for them."""
    return [tuple(row) for row in connection.execute(_CLAIM, params)]


_ENVELOPES = """
SELECT id, envelope_from, message_id, envid, ret, created_at, raw, source, client
FROM messages WHERE id = ANY(%s)
"""


def load_envelopes(connection: Connection, pks: Sequence[int]) -> list[tuple[Any, ...]]:
    """The rows ``Envelope`` takes, read in binary: in text, the server hex-encodes a body (twice its
    size) and psycopg decodes it back, 3.5 ms of our CPU and 4 ms of the wait per MiB against 1.3 ms
    (measured with psycopg 3.3, a local server). Through the driver: SQLAlchemy asks for text results, so
    ``created_at`` is made aware here as ``UtcDateTime`` would."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor(binary=True) as cursor:
        cursor.execute(_ENVELOPES, (list(pks),))
        rows = cursor.fetchall()
    return [(*row[:5], row[5].replace(tzinfo=UTC), *row[6:]) for row in rows]


_ARRAYS = ("pks", "states", "ats", "codes", "replies", "peers", "retries", "refusals", "details")
"""The statement's arrays, in the order of an outcome's fields (``record_outcomes``)."""

_TIMES = ("ats", "retries")


def _naive_utc(at: datetime | None) -> datetime | None:
    """As ``UtcDateTime`` stores it (a text statement binds no column type)."""
    return None if at is None else at.astimezone(UTC).replace(tzinfo=None)


OutcomeRow = tuple[
    int, str, datetime, int | None, str | None, str | None, datetime | None, str | None, str | None
]
"""(delivery id, state, at, code, reply, peer, retry at, refusal, audit detail)."""


def record_outcomes(connection: Connection, rows: Sequence[OutcomeRow]) -> set[int]:
    """Record a group of outcomes; returns the ids recorded (a delivery no longer ``sending`` is left
    alone)."""
    params: dict[str, list[object]] = {}
    for name, column in zip(_ARRAYS, zip(*rows, strict=True), strict=True):
        params[name] = [_naive_utc(at) for at in column] if name in _TIMES else list(column)
    return set(connection.execute(_RECORD, params).scalars())


class BinaryArray(list[object]):
    """A column of bytes bound as a binary ``bytea[]``. psycopg sends a plain list of bytes as a text
    array: each body hex-encoded, searched and escaped by regular expressions (29 to 31 ms of our CPU per
    MiB, 1 in binary), then parsed back by the server (21 to 25 ms of its CPU per MiB, 3 in binary). A lone
    ``bytes`` parameter is already sent in binary."""


psycopg.adapters.register_dumper(BinaryArray, ListBinaryDumper)


Shape = tuple[tuple[Table, tuple[str, ...]], ...]
"""Tables and the columns given for each: the parent first, then its children."""

_inserts: dict[tuple[tuple[tuple[str, tuple[str, ...]], ...], str, tuple[str, ...]], TextClause] = {}
"""The statement for each shape met (a handful: built once each)."""


def _arrays(dialect: Dialect, n: int, table: Table, columns: tuple[str, ...]) -> str:
    return ", ".join(
        f"CAST(:t{n}_{column} AS {table.c[column].type.compile(dialect=dialect)}[])" for column in columns
    )


def _family_statement(dialect: Dialect, shape: Shape, key: str, same: tuple[str, ...]) -> TextClause:
    """Names in it come from the store's own tables, never from data."""
    cache_key = (tuple((table.name, columns) for table, columns in shape), key, same)
    statement = _inserts.get(cache_key)
    if statement is not None:
        return statement
    (parent, columns), *children = shape
    names = ", ".join(columns)
    matched = " AND ".join(f"stored.{column} = given.{column}" for column in same)
    # A row given is a copy when a stored one has the same ``same`` columns (the oldest is its original);
    # only the others are inserted. Ids are drawn from the sequence in ORDER BY order, so sorted they
    # follow the rows inserted (what SQLAlchemy's own "insertmanyvalues" relies on): that numbering, matched
    # with the places of the rows inserted, links each child to its parent. The parent's rows are read once,
    # by the insert (a copy is found from ``same`` alone): bodies are never held in a CTE.
    parts = [
        f"known AS (SELECT DISTINCT ON (given.n) given.n - 1 AS n, stored.id "  # noqa: S608
        f"FROM unnest({_arrays(dialect, 0, parent, same)}) WITH ORDINALITY AS given ({', '.join(same)}, n) "
        f"JOIN {parent.name} stored ON {matched} ORDER BY given.n, stored.id)",
        f"parent AS (INSERT INTO {parent.name} ({names}) SELECT {names} "  # noqa: S608
        f"FROM unnest({_arrays(dialect, 0, parent, columns)}) WITH ORDINALITY AS given ({names}, n) "
        "WHERE given.n - 1 NOT IN (SELECT n FROM known) ORDER BY n RETURNING id)",
        "places AS (SELECT n, row_number() OVER (ORDER BY n) AS k "  # noqa: S608
        f"FROM generate_series(0, cardinality(CAST(:t0_{same[0]} AS "
        f"{parent.c[same[0]].type.compile(dialect=dialect)}[])) - 1) AS n "
        "WHERE n NOT IN (SELECT n FROM known))",
        "numbered AS (SELECT ids.id, places.n FROM "
        "(SELECT id, row_number() OVER (ORDER BY id) AS k FROM parent) AS ids JOIN places USING (k))",
    ]
    for n, (table, child_columns) in enumerate(children, start=1):
        chosen = ", ".join("numbered.id" if column == key else f"given.{column}" for column in child_columns)
        parts.append(
            f"t{n} AS (INSERT INTO {table.name} ({', '.join(child_columns)}) SELECT {chosen} "  # noqa: S608
            f"FROM unnest({_arrays(dialect, n, table, child_columns)}) AS given ({', '.join(child_columns)}) "
            f"JOIN numbered ON numbered.n = given.{key})"
        )
    ctes = ", ".join(parts)
    statement = _inserts[cache_key] = text(
        f"WITH {ctes} SELECT n, id, false FROM numbered UNION ALL SELECT n, id, true FROM known ORDER BY 1"  # noqa: S608
    )
    return statement


def insert_family(connection: Connection, family: Family) -> list[tuple[int, bool]]:
    """Insert ``family`` in one statement (the statement puts the parent's id in the children's ``key``
    column). Returns per parent row given, in order, its id and whether it was a copy (the id then the
    stored row's). One statement is one transaction: on a connection in autocommit it is one round
    trip, commit included."""
    batches = family.tables()
    shape: Shape = tuple((table, columns) for table, columns, _ in batches)
    params: dict[str, list[object]] = {}
    for n, (table, columns, rows) in enumerate(batches):
        for column in columns:
            values = [row[column] for row in rows]
            kind = table.c[column].type
            if isinstance(kind, UtcDateTime):
                values = [_naive_utc(value) if isinstance(value, datetime) else value for value in values]
            elif isinstance(kind, LargeBinary):
                values = BinaryArray(values)
            params[f"t{n}_{column}"] = values
    statement = _family_statement(connection.dialect, shape, family.key, family.same)
    return [(pk, copy) for _, pk, copy in connection.execute(statement, params)]

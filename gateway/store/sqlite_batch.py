"""SQLite: a batch of mail's rows written straight on the driver's connection (issue 16).

Through SQLAlchemy, each ``executemany`` of the batch (messages with ``RETURNING``, deliveries, audit events)
compiled its cached statement's parameters again, built a result and its rows: 0.66 ms of CPU per batch
where the driver's own work is a fraction of it. Here each table's ``INSERT`` is text built once, its values
go through each column's own conversion (its type's bind processor for this dialect, as SQLAlchemy would
apply it: what is stored is the same) and a driver error is wrapped as SQLAlchemy wraps it, so callers see
the same store faults. It runs inside the caller's transaction (``BEGIN IMMEDIATE``, the write turn taken:
``gateway.store.db``), which commits or rolls back as any other.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.exc import DBAPIError

from gateway.store.family import Family

Processors = tuple[Callable[[Any], Any] | None, ...]

_inserts: dict[tuple[str, tuple[str, ...]], tuple[str, Processors]] = {}
"""Per table and columns given: the ``INSERT`` text and each column's bind processor (built once each)."""


@contextlib.contextmanager
def driver_errors(statement: str, params: Sequence[Any] | None = None) -> Iterator[None]:
    """Raise a driver error as SQLAlchemy would have wrapped it (``sqlalchemy.exc.OperationalError`` for
    a full disk or a lock…): what ``gateway.store.faults`` and the callers' retries know."""
    try:
        yield
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, params, error, sqlite3.Error) from error


def _insert(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> tuple[str, Processors]:
    """Names in it come from the store's own tables, never from data."""
    key = (table.name, columns)
    found = _inserts.get(key)
    if found is None:
        marks = ", ".join("?" for _ in columns)
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        processors = tuple(
            table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns
        )
        found = _inserts[key] = (statement, processors)
    return found


def _values(row: Mapping[str, object], columns: tuple[str, ...], processors: Processors) -> list[object]:
    return [
        value if process is None or value is None else process(value)
        for value, process in zip((row[column] for column in columns), processors, strict=True)
    ]


def _stored(
    driver: sqlite3.Connection, parent: Table, same: tuple[str, ...], given: Sequence[tuple[object, ...]]
) -> dict[tuple[object, ...], int]:
    """The oldest stored row's id for each ``same`` values given (a row whose first is None is no copy)."""
    firsts = sorted({values[0] for values in given if values[0] is not None}, key=str)
    if not firsts:
        return {}
    marks = ", ".join("?" for _ in firsts)
    statement = f"SELECT id, {', '.join(same)} FROM {parent.name} WHERE {same[0]} IN ({marks}) ORDER BY id"  # noqa: S608
    with driver_errors(statement, firsts):
        rows = driver.execute(statement, firsts).fetchall()
    known: dict[tuple[object, ...], int] = {}
    for pk, *values in rows:
        known.setdefault(tuple(values), pk)
    return known


def insert_family(connection: Connection, family: Family) -> list[tuple[int, bool]]:
    """Insert ``family`` inside ``connection``'s transaction, a statement per table; returns per parent row
    given, in order, its id and whether it was a copy (the id then the oldest stored row's)."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    dialect = connection.dialect
    (table, columns, rows), *families = family.tables()
    statement, processors = _insert(dialect, table, columns)
    values = [_values(row, columns, processors) for row in rows]
    places = [columns.index(column) for column in family.same]
    given = [tuple(row[place] for place in places) for row in values]
    known = _stored(driver, table, family.same, given)
    outcomes: list[tuple[int, bool]] = []
    cursor = driver.cursor()
    try:
        for value, matched in zip(values, given, strict=True):
            pk = known.get(matched)
            if pk is None:
                with driver_errors(statement, value):
                    cursor.execute(statement, value)
                assert cursor.lastrowid is not None
                outcomes.append((cursor.lastrowid, False))
            else:
                outcomes.append((pk, True))
        for child, child_columns, child_rows in families:
            child_statement, child_processors = _insert(dialect, child, child_columns)
            at = child_columns.index(family.key)
            inserted = []
            for child_row in child_rows:
                pk, copy = outcomes[cast(int, child_row[family.key])]
                if not copy:
                    child_values = _values(child_row, child_columns, child_processors)
                    child_values[at] = pk
                    inserted.append(child_values)
            if inserted:
                with driver_errors(child_statement, inserted):
                    cursor.executemany(child_statement, inserted)
    finally:
        cursor.close()
    return outcomes

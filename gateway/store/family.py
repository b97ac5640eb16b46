"""A batch of mail's rows as both stores' one-batch writers take them (``pg_batch``, ``sqlite_batch``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Table

Rows = tuple[Table, Sequence[Mapping[str, object]]]
"""A table and its rows given (every row has the same keys)."""


class TableRows(NamedTuple):
    """A table's rows given, and their columns."""

    table: Table
    columns: tuple[str, ...]
    rows: Sequence[Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class Family:
    """Parent rows and their children, to be inserted but for a parent row whose ``same`` columns are those
    of a stored row (a copy: neither it nor its children are inserted). A child's ``key`` column gives the
    index of its parent among the rows given until the writer puts the parent's id there."""

    parent: Rows
    children: Sequence[Rows]
    key: str
    same: tuple[str, ...]

    def tables(self) -> list[TableRows]:
        """The parent's rows first, then each child's that has rows (the others are left out)."""
        given = [self.parent, *(child for child in self.children if child[1])]
        return [TableRows(table, tuple(rows[0]) if rows else (), rows) for table, rows in given]

"""The national MSSanté directory in the store: imports as generations, switched in one transaction.

An import writes a new generation beside the one in force, in batches each committed on its own (so the
SQLite write lock is held for one batch at a time and deliveries go on), folds the addresses that stand on
several lines into one entry (every role kept), then either publishes it — one short transaction makes it
``current`` and the previous one ``replaced`` — or discards it. Lookups name the current generation inside
their one statement, so they see the old directory or the new one, never half of either. Rows of
generations no longer current are deleted afterwards, in batches.

PostgreSQL gets its rows by ``COPY`` (the term rows number ten per line); SQLite by ``executemany``, its
words staged in a temporary table and copied into ``directory_terms`` in key order at the end. No schema
change: the temporary tables belong to the load's connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    ScalarSelect,
    Select,
    Table,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, sessionmaker

from gateway.store.tables import DirectoryEntry, DirectoryImport, DirectoryRole, DirectoryTerm
from mappers import directory as parsed
from mappers.directory import normalise

BATCH_LINES = 5000
SQLITE_CACHE_KIB = 32768
STALE_IMPORT = timedelta(hours=6)
"""An import still loading after this long was left by a process that died (a real one takes a minute)."""
SEARCH_LIMIT = 20
FREQUENCY_CAP = 20000
EXPANSION_CAP = 32
# The SQLite load's words, staged in its connection's temporary tables (``_move_staged_terms``).
_STAGED = "temp.directory_terms_staged"
_CREATE_STAGED = (
    "CREATE TEMP TABLE temp.directory_terms_staged (term TEXT NOT NULL, entry_line INTEGER NOT NULL)"
)
_SORT_STAGED = (
    "CREATE TEMP TABLE temp.directory_terms_sorted AS "
    "SELECT term, entry_line FROM temp.directory_terms_staged ORDER BY term, entry_line"
)
_COUNT_SORTED = "SELECT max(rowid) FROM temp.directory_terms_sorted"
_COPY_SORTED = (
    "INSERT INTO directory_terms (generation, term, entry_line) SELECT ?, term, entry_line "
    "FROM temp.directory_terms_sorted WHERE rowid > ? AND rowid <= ? ORDER BY rowid"
)


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One import as ``mssgw directory`` reports it."""

    id: int
    state: str
    source: str
    file_name: str | None
    file_timestamp: datetime | None
    started_at: datetime
    finished_at: datetime | None
    lines: int
    addresses: int
    duplicates: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """What a load wrote: data lines, distinct addresses, lines whose address stood on an earlier line."""

    lines: int
    addresses: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class RoleView:
    profession: str
    speciality: str
    category: str
    service: str
    organisation: str
    structure_id: str


@dataclass(frozen=True, slots=True)
class Listing:
    """A mailbox as searches and ``show`` print it (``roles`` only filled by ``show``)."""

    address: str
    mailbox_type: str
    holder: str
    civility: str
    last_name: str
    first_name: str
    pp_id: str
    organisation: str
    street: str
    postal_code: str
    city: str
    department: str
    country: str
    profession: str
    speciality: str
    roles: tuple[RoleView, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Words that must all begin a word of the entry, plus optional filters (any given must match)."""

    words: tuple[str, ...] = ()
    profession: str = ""
    speciality: str = ""
    city: str = ""
    department: str = ""
    limit: int = SEARCH_LIMIT


class DirectoryStore:
    """Imports, lookups and the recipient check's questions over the directory tables."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.engine = sessions.kw["bind"]

    # Imports.

    def begin_import(
        self, source: str, file_name: str | None, file_timestamp: datetime | None, now: datetime
    ) -> int:
        """A new generation in state ``loading``; rows of discarded and abandoned ones are removed first."""
        self.abandon_stale(now - STALE_IMPORT, now)
        self.purge()
        with self.sessions.begin() as session:
            record = DirectoryImport(
                state="loading",
                source=source,
                file_name=file_name,
                file_timestamp=file_timestamp,
                started_at=now,
            )
            session.add(record)
            session.flush()
            return record.id

    def load(self, generation: int, entries: Iterable[parsed.DirectoryEntry]) -> LoadCounts:
        """Write ``entries`` into ``generation`` batch by batch, then fold the duplicated addresses."""
        lines = 0
        iterator = iter(entries)
        # One connection for the whole load (one page cache, its own temporary table), one transaction
        # per batch.
        with self.engine.connect() as connection:
            staged = connection.dialect.name == "sqlite"
            if staged:
                # The entries' indexes take random inserts: a bigger page cache spares re-reading them (the
                # words are appended in key order at the end, and SQLite sorts them in this cache's budget).
                connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
                _sqlite_script(connection, "DROP TABLE IF EXISTS temp.directory_terms_staged", _CREATE_STAGED)
            while batch := list(islice(iterator, BATCH_LINES)):
                lines += len(batch)
                with connection.begin():
                    self._write(connection, generation, batch, staged)
            if staged:
                self._move_staged_terms(connection, generation)
                connection.exec_driver_sql("PRAGMA cache_size = -2000")
                connection.commit()
        duplicates = self._fold_duplicates(generation)
        return LoadCounts(lines=lines, addresses=lines - duplicates, duplicates=duplicates)

    @staticmethod
    def _move_staged_terms(connection: Connection, generation: int) -> None:
        """SQLite: copy the staged words into ``directory_terms`` in the order of its key, a batch per
        transaction. Inserted in file order, each word lands at a random place of a B-tree larger than the
        page cache, and the full file took over two minutes; appended in key order, a few seconds."""
        _sqlite_script(
            connection,
            "DROP TABLE IF EXISTS temp.directory_terms_sorted",
            _SORT_STAGED,
            "DROP TABLE temp.directory_terms_staged",
        )
        last = connection.exec_driver_sql(_COUNT_SORTED).scalar() or 0
        connection.commit()
        step = BATCH_LINES * 10
        for start in range(0, last, step):
            with connection.begin():
                connection.exec_driver_sql(_COPY_SORTED, (generation, start, start + step))
        _sqlite_script(connection, "DROP TABLE temp.directory_terms_sorted")

    def publish(self, generation: int, counts: LoadCounts, now: datetime) -> None:
        """Make ``generation`` the directory in force, in one transaction; then drop the replaced rows."""
        with self.sessions.begin() as session:
            session.execute(
                update(DirectoryImport).where(DirectoryImport.state == "current").values(state="replaced")
            )
            session.execute(
                update(DirectoryImport)
                .where(DirectoryImport.id == generation)
                .values(
                    state="current",
                    finished_at=now,
                    lines=counts.lines,
                    addresses=counts.addresses,
                    duplicates=counts.duplicates,
                )
            )
        self.purge()

    def discard(
        self, generation: int, state: str, reason: str, counts: LoadCounts | None, now: datetime
    ) -> None:
        """Record why ``generation`` is not used (``refused`` or ``failed``) and delete its rows."""
        values: dict[str, Any] = {"state": state, "reason": reason[:2000], "finished_at": now}
        if counts is not None:
            values.update(lines=counts.lines, addresses=counts.addresses, duplicates=counts.duplicates)
        with self.sessions.begin() as session:
            session.execute(update(DirectoryImport).where(DirectoryImport.id == generation).values(**values))
        self.purge()

    def purge(self) -> None:
        """Delete the rows of every generation neither current nor loading (a loading one may be another
        process's import under way; ``abandon_stale`` gives up those left by a process that died)."""
        with self.sessions() as session:
            kept = set(
                session.execute(
                    select(DirectoryImport.id).where(DirectoryImport.state.in_(("current", "loading")))
                ).scalars()
            )
            present = set(session.execute(select(DirectoryEntry.generation).distinct()).scalars())
            present |= set(session.execute(select(DirectoryTerm.generation).distinct()).scalars())
        for generation in sorted(present - kept):
            self._delete_generation(generation)

    def _delete_generation(self, generation: int) -> None:
        for table in (DirectoryTerm, DirectoryRole, DirectoryEntry):
            with self.engine.begin() as connection:
                connection.execute(delete(table).where(table.generation == generation))

    def abandon_stale(self, before: datetime, now: datetime) -> None:
        """Mark imports still ``loading`` since before ``before`` failed: their process died (their rows go
        at the next purge)."""
        with self.sessions.begin() as session:
            session.execute(
                update(DirectoryImport)
                .where(DirectoryImport.state == "loading", DirectoryImport.started_at < before)
                .values(state="failed", finished_at=now, reason="interrupted before its end")
            )

    def current(self) -> ImportRecord | None:
        """The import in force, if any."""
        with self.sessions() as session:
            row = session.execute(
                select(DirectoryImport).where(DirectoryImport.state == "current")
            ).scalar_one_or_none()
            return None if row is None else _record(row)

    def imports(self, limit: int = 10) -> list[ImportRecord]:
        """The latest imports, newest first."""
        with self.sessions() as session:
            rows = session.execute(
                select(DirectoryImport).order_by(DirectoryImport.id.desc()).limit(limit)
            ).scalars()
            return [_record(row) for row in rows]

    def _write(
        self, connection: Connection, generation: int, batch: Sequence[parsed.DirectoryEntry], staged: bool
    ) -> None:
        entries = [_entry_row(generation, entry) for entry in batch]
        roles = [_role_row(generation, entry) for entry in batch]
        _bulk(connection, DirectoryEntry.__tablename__, _columns(DirectoryEntry), entries)
        _bulk(connection, DirectoryRole.__tablename__, _columns(DirectoryRole), roles)
        if staged:
            words = [(term, entry.line) for entry in batch for term in entry.terms()]
            _bulk(connection, _STAGED, ("term", "entry_line"), words)
        else:
            terms = [(generation, term, entry.line) for entry in batch for term in sorted(entry.terms())]
            _bulk(connection, DirectoryTerm.__tablename__, _columns(DirectoryTerm), terms)

    def _fold_duplicates(self, generation: int) -> int:
        """Fold the entries of lines whose address stood on an earlier line into the first one's."""
        entries = DirectoryEntry
        with self.engine.begin() as connection:
            firsts = (
                select(entries.address, func.min(entries.line).label("first"))
                .where(entries.generation == generation)
                .group_by(entries.address)
                .having(func.count() > 1)
                .subquery()
            )
            pairs = connection.execute(
                select(entries.line, firsts.c.first, entries.profession_words, entries.speciality_words)
                .join(firsts, entries.address == firsts.c.address)
                .where(entries.generation == generation, entries.line != firsts.c.first)
                .order_by(entries.line)
            ).all()
            self._fold(connection, generation, pairs)
        self._analyse()
        return len(pairs)

    @staticmethod
    def _fold(connection: Connection, generation: int, pairs: Sequence[Any]) -> None:
        """Move the roles and words of each duplicate line to its address's first line, in a few set-wide
        statements (the words table is ten times the directory: it is read once, not once per line)."""
        if not pairs:
            return
        first_of = {row.line: row.first for row in pairs}
        lines = sorted(first_of.keys() | set(first_of.values()))
        words: dict[int, set[str]] = {}
        for term, line in connection.execute(
            select(DirectoryTerm.term, DirectoryTerm.entry_line).where(
                DirectoryTerm.generation == generation, DirectoryTerm.entry_line.in_(lines)
            )
        ):
            words.setdefault(first_of.get(line, line), set()).add(term)
        connection.execute(
            delete(DirectoryTerm).where(
                DirectoryTerm.generation == generation, DirectoryTerm.entry_line.in_(lines)
            )
        )
        rows = [
            {"generation": generation, "term": term, "entry_line": line}
            for line, terms in sorted(words.items())
            for term in sorted(terms)
        ]
        if rows:
            connection.execute(insert(DirectoryTerm), rows)
        for row in pairs:
            connection.execute(
                update(DirectoryRole)
                .where(DirectoryRole.generation == generation, DirectoryRole.line == row.line)
                .values(entry_line=row.first)
            )
            first = connection.execute(
                select(DirectoryEntry.profession_words, DirectoryEntry.speciality_words).where(
                    DirectoryEntry.generation == generation, DirectoryEntry.line == row.first
                )
            ).one()
            connection.execute(
                update(DirectoryEntry)
                .where(DirectoryEntry.generation == generation, DirectoryEntry.line == row.first)
                .values(
                    profession_words=_joined(first.profession_words, row.profession_words),
                    speciality_words=_joined(first.speciality_words, row.speciality_words),
                )
            )
            connection.execute(
                delete(DirectoryEntry).where(
                    DirectoryEntry.generation == generation, DirectoryEntry.line == row.line
                )
            )

    def _analyse(self) -> None:
        """Fresh planner statistics after a bulk load, or PostgreSQL plans searches for empty tables. On
        PostgreSQL a ``VACUUM`` too: until it sets the visibility map, every "index-only" read of the words'
        key also reads the table (a search took 150 ms instead of a few)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            command = "VACUUM (ANALYZE)" if connection.dialect.name == "postgresql" else "ANALYZE"
            for table in (DirectoryEntry, DirectoryTerm):
                connection.exec_driver_sql(f"{command} {table.__tablename__}")

    # Lookups.

    def search(self, query: SearchQuery) -> list[Listing]:
        """Entries of the current directory matching ``query``, at most ``limit`` + 1 (so the caller can
        say there are more), sorted by name. The rarest word's index range drives the query (a common
        first name must not be read through when the last name is rare); each other word is a few index
        probes per candidate, on the words it stands for, and the filters narrow it."""
        with self.sessions() as session:
            current = session.execute(
                select(DirectoryImport.id).where(DirectoryImport.state == "current").limit(1)
            ).scalar()
            if current is None:
                return []
            statement = select(DirectoryEntry).where(DirectoryEntry.generation == current)
            if query.words:
                first, *others = sorted(query.words, key=lambda word: _frequency(session, current, word))
                statement = _driven_by(statement, current, first, self.engine.dialect.name)
                for word in others:
                    terms = _expansion(session, current, word)
                    if terms == ():
                        return []
                    statement = statement.where(_bears(current, word, terms))
            if query.profession:
                statement = statement.where(
                    DirectoryEntry.profession_words.contains(normalise(query.profession))
                )
            if query.speciality:
                statement = statement.where(
                    DirectoryEntry.speciality_words.contains(normalise(query.speciality))
                )
            if query.city:
                statement = statement.where(DirectoryEntry.city_words.startswith(normalise(query.city)))
            if query.department:
                statement = statement.where(DirectoryEntry.department == query.department.strip().upper())
            # No ORDER BY: sorting every match of a common name would cost more than the search itself;
            # the first ones in the words' index order are taken, then sorted for display.
            rows = session.execute(statement.limit(query.limit + 1)).scalars().all()
            listed = [_listing(row) for row in rows]
        return sorted(listed, key=lambda e: (e.last_name, e.first_name, e.holder, e.address))

    def show(self, address: str) -> Listing | None:
        """The mailbox at ``address`` with every role, or None."""
        current = _current_generation()
        with self.sessions() as session:
            row = session.execute(
                select(DirectoryEntry).where(
                    DirectoryEntry.generation == current, DirectoryEntry.address == address.strip().lower()
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            roles = session.execute(
                select(DirectoryRole)
                .where(DirectoryRole.generation == row.generation, DirectoryRole.entry_line == row.line)
                .order_by(DirectoryRole.line)
            ).scalars()
            views = tuple(
                RoleView(
                    profession=r.profession_label,
                    speciality=r.skill_label,
                    category=r.category_label,
                    service=r.service,
                    organisation=r.organisation or r.trade_name,
                    structure_id=r.structure_id,
                )
                for r in roles
            )
            return _listing(row, views)

    def knows(self, address: str) -> bool | None:
        """Whether ``address`` is in the current directory; None when no directory is in force."""
        with self.sessions() as session:
            current = session.execute(
                select(DirectoryImport.id).where(DirectoryImport.state == "current").limit(1)
            ).scalar()
            if current is None:
                return None
            found = session.execute(
                select(DirectoryEntry.line)
                .where(
                    DirectoryEntry.generation == current, DirectoryEntry.address == address.strip().lower()
                )
                .limit(1)
            ).first()
            return found is not None

    def neighbours(self, address: str, limit: int = 5000) -> list[str]:
        """Addresses of the same domain whose local part starts like ``address``'s (candidates for
        suggestions: one mistyped letter seldom is one of the first two)."""
        local, _, domain = address.strip().lower().rpartition("@")
        start = local[:2]
        statement = select(DirectoryEntry.address).where(
            DirectoryEntry.generation == _current_generation(), DirectoryEntry.domain == domain
        )
        if start:
            statement = statement.where(
                DirectoryEntry.local_part >= start, DirectoryEntry.local_part < _after_prefix(start)
            )
        with self.sessions() as session:
            return list(session.execute(statement.limit(limit)).scalars())


def _current_generation() -> ScalarSelect[int]:
    return select(DirectoryImport.id).where(DirectoryImport.state == "current").limit(1).scalar_subquery()


def _driven_by(statement: Select[Any], current: int, first: str, dialect: str) -> Select[Any]:
    """``statement`` restricted to the entries bearing a word that starts with ``first``. SQLite walks the
    prefix's index range joined to the entries and stops at the limit (``DISTINCT`` keeps each entry
    once, as it goes); PostgreSQL would sort the whole range for that ``DISTINCT`` before its first row,
    and is faster with a semi-join (measured on the full-size file: 2 vs 20 ms on SQLite, 10 vs 60 ms on
    PostgreSQL)."""
    if dialect != "sqlite":
        return statement.where(_bears(current, first, None))
    return (
        statement.join(
            DirectoryTerm,
            (DirectoryTerm.generation == DirectoryEntry.generation)
            & (DirectoryTerm.entry_line == DirectoryEntry.line),
        )
        .where(
            DirectoryTerm.generation == current,
            DirectoryTerm.term >= first,
            DirectoryTerm.term < _after_prefix(first),
        )
        .distinct()
    )


def _frequency(session: Session, current: int, word: str) -> int:
    """How many words of the index start with ``word``, counted up to ``FREQUENCY_CAP`` (enough to rank)."""
    found = (
        select(DirectoryTerm.entry_line)
        .where(
            DirectoryTerm.generation == current,
            DirectoryTerm.term >= word,
            DirectoryTerm.term < _after_prefix(word),
        )
        .limit(FREQUENCY_CAP)
        .subquery()
    )
    return session.execute(select(func.count()).select_from(found)).scalar_one()


def _expansion(session: Session, current: int, prefix: str) -> tuple[str, ...] | None:
    """The distinct words of the index that start with ``prefix``, found by jumping from one to the next
    (one index seek each, not a read of every entry bearing them); None when there are more than
    ``EXPANSION_CAP`` (a short prefix: then the range itself is used)."""
    found: list[str] = []
    after, end = prefix, _after_prefix(prefix)
    while len(found) <= EXPANSION_CAP:
        lower = DirectoryTerm.term > after if found else DirectoryTerm.term >= after
        word = session.execute(
            select(func.min(DirectoryTerm.term)).where(
                DirectoryTerm.generation == current, lower, DirectoryTerm.term < end
            )
        ).scalar()
        if word is None:
            return tuple(found)
        found.append(word)
        after = word
    return None


def _bears(current: int, prefix: str, terms: tuple[str, ...] | None) -> ColumnElement[bool]:
    """The entry has a word starting with ``prefix``: a probe per word of ``terms`` when they are known,
    else membership in the prefix's whole range (a semi-join: no ``DISTINCT`` over the entries, which
    PostgreSQL would sort in full before the first row)."""
    other = aliased(DirectoryTerm)  # several words: one alias of the words' table each
    if terms is None:
        return DirectoryEntry.line.in_(
            select(other.entry_line).where(
                other.generation == current, other.term >= prefix, other.term < _after_prefix(prefix)
            )
        )
    return (
        exists()
        .where(other.generation == current, other.term.in_(terms), other.entry_line == DirectoryEntry.line)
        .correlate(DirectoryEntry)
    )


def _after_prefix(prefix: str) -> str:
    """The first string after every string starting with ``prefix`` (normalised words are ASCII)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _joined(left: str, right: str) -> str:
    words = [w for w in left.split(" | ") if w]
    words += [w for w in right.split(" | ") if w and w not in words]
    return " | ".join(words)


def _entry_row(generation: int, entry: parsed.DirectoryEntry) -> tuple[Any, ...]:
    role = entry.role
    return (
        generation,
        entry.line,
        entry.address,
        entry.domain,
        entry.local_part,
        entry.mailbox_type,
        entry.civility,
        entry.last_name,
        entry.first_name,
        entry.pp_id_type,
        entry.pp_id,
        entry.holder,
        role.organisation or role.trade_name,
        entry.street,
        entry.routing_line,
        entry.city,
        entry.postal_code,
        entry.department.upper(),
        entry.country,
        entry.dematerialisation,
        role.profession_label,
        role.skill_label,
        normalise(role.profession_label),
        normalise(role.skill_label),
        normalise(entry.city),
    )


def _role_row(generation: int, entry: parsed.DirectoryEntry) -> tuple[Any, ...]:
    role = entry.role
    return (
        generation,
        entry.line,
        entry.line,
        role.category_code,
        role.category_label,
        role.profession_code,
        role.profession_label,
        role.skill_code,
        role.skill_label,
        role.service,
        role.structure_id_type,
        role.structure_id,
        role.organisation,
        role.trade_name,
    )


def _columns(table: type[DirectoryEntry | DirectoryRole | DirectoryTerm]) -> list[str]:
    return [column.name for column in cast(Table, table.__table__).columns]


def _sqlite_script(connection: Connection, *statements: str) -> None:
    """Statements on the load's temporary tables, each in its own autocommit (the engine's ``BEGIN
    IMMEDIATE`` would hold the store's write lock while SQLite sorts words no one else can see)."""
    connection.commit()
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for statement in statements:
            cursor.execute(statement)
    finally:
        cursor.close()


def _bulk(connection: Connection, table: str, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (tuples in the order of ``names``) as fast as the backend allows."""
    if not rows:
        return
    listed = ", ".join(names)
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table} ({listed}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in names)
    connection.exec_driver_sql(f"INSERT INTO {table} ({listed}) VALUES ({marks})", rows)  # noqa: S608 (names from our own tables)


def _record(row: DirectoryImport) -> ImportRecord:
    return ImportRecord(
        id=row.id,
        state=row.state,
        source=row.source,
        file_name=row.file_name,
        file_timestamp=row.file_timestamp,
        started_at=row.started_at,
        finished_at=row.finished_at,
        lines=row.lines,
        addresses=row.addresses,
        duplicates=row.duplicates,
        reason=row.reason,
    )


def _listing(row: DirectoryEntry, roles: tuple[RoleView, ...] = ()) -> Listing:
    return Listing(
        address=row.address,
        mailbox_type=row.mailbox_type,
        holder=row.holder,
        civility=row.civility,
        last_name=row.last_name,
        first_name=row.first_name,
        pp_id=row.pp_id,
        organisation=row.organisation,
        street=row.street,
        postal_code=row.postal_code,
        city=row.city,
        department=row.department,
        country=row.country,
        profession=row.profession,
        speciality=row.speciality,
        roles=roles,
    )

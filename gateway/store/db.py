"""Opening the store: engine, SQLite pragmas, schema creation with a version row.

SQLite (WAL, ``synchronous=FULL`` so a commit survives a power cut, ``BEGIN IMMEDIATE`` so concurrent
writers queue instead of failing, a plain deferred ``BEGIN`` for read-only transactions) is the embedded
default, its file ``0600`` whatever the umask; PostgreSQL is used through psycopg 3.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, create_engine, event, insert, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import SchemaMismatch, StoreError
from gateway.file_modes import PRIVATE_DIR, PRIVATE_FILE, create_file, make_dirs
from gateway.store.channels import ChannelStore
from gateway.store.directory import DirectoryStore
from gateway.store.imap_cursors import ImapCursors
from gateway.store.mdms import MdmQueue
from gateway.store.queue_admin import QueueAdmin
from gateway.store.reads import READ_ONLY
from gateway.store.repository import Repository
from gateway.store.sqlite_batch import driver_errors
from gateway.store.stats import StoreStats
from gateway.store.tables import (
    CONTENT_COLUMNS,
    DIRECTORY_TABLES,
    SCHEMA_VERSION,
    Base,
    Hl7Mdm,
    Hl7Zam,
    SchemaVersion,
)
from gateway.store.zams import ZamQueue


def store_content_without_pglz(connection: Connection) -> None:
    """On PostgreSQL, keep the bodies (``CONTENT_COLUMNS``) out of pglz, its default for any value over 2 KB
    (Postfix compresses nothing either): a 1 MiB smtp-source body cost the backend 9 to 11 ms of CPU to
    insert with pglz, 1.3 to 3.8 ms with lz4 (kept in 3 KiB), 7 ms uncompressed (``EXTERNAL``: writing the
    whole MiB). A MiB of base64 attachment, which compresses under neither, costs 6 to 7 ms under all three.
    So lz4 when the server has it (PostgreSQL 14 and later, built with it), else ``EXTERNAL``. Only values
    written afterwards change: a migrated store's older bodies stay as they are. Nothing on SQLite, which
    compresses nothing."""
    if connection.dialect.name != "postgresql":
        return
    lz4 = connection.execute(
        text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    setting = "SET COMPRESSION lz4" if lz4 else "SET STORAGE EXTERNAL"
    for column in CONTENT_COLUMNS:
        connection.execute(text(f"ALTER TABLE {column.table.name} ALTER COLUMN {column.name} {setting}"))


# Schema changes an existing store is brought through at start, in order: version → the steps to reach the
# next (DDL text, new tables created from their definitions, or a function of the connection for what
# depends on the backend). Only added nullable columns, new tables and column storage so far, which both
# SQLite and PostgreSQL change without rewriting a table. A table created here from its definition must not
# change in a later version (that version's step would find it changed already). ``prepare_schema`` gives
# a fresh store's tables what a function step does, so fresh and migrated stores end the same.
_MIGRATIONS: dict[int, tuple[str | tuple[type[Base], ...] | Callable[[Connection], None], ...]] = {
    1: (
        "ALTER TABLE messages ADD COLUMN client VARCHAR(200)",
        "ALTER TABLE deliveries ADD COLUMN via VARCHAR(200)",
    ),
    2: (
        "CREATE TABLE IF NOT EXISTS hl7_transmissions (producer VARCHAR(200) NOT NULL, "
        "control_id VARCHAR(200) NOT NULL, "
        "message_pk BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE, "
        "received_at TIMESTAMP NOT NULL, PRIMARY KEY (producer, control_id))",
        "CREATE INDEX IF NOT EXISTS ix_hl7_transmissions_message_pk ON hl7_transmissions (message_pk)",
    ),
    3: (DIRECTORY_TABLES,),
    4: ("ALTER TABLE hl7_transmissions ADD COLUMN zam_events VARCHAR(20)", (Hl7Zam,)),
    5: ((Hl7Mdm,),),
    6: (store_content_without_pglz,),
}


def normalise_url(url: str) -> str:
    """Pick psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would otherwise look for psycopg2)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_store_engine(url: str) -> Engine:
    """Create the engine with the settings each backend needs for a durable queue."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database) if parsed.database and parsed.database != ":memory:" else None
        if database is not None:
            create_private_database(database)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT, "factory": _TurnTaking},
            pool_size=8,
            max_overflow=8,
        )
        turn = WriteTurn(database)
        _configure_sqlite(engine, turn)
        event.listen(engine, "engine_disposed", lambda _engine: turn.close())
        return engine
    # No pre-ping per checkout (a round trip each): a connection found dead fails its statement, which the
    # callers retry as any store fault, and SQLAlchemy then drops every connection of the pool.
    return create_engine(url, pool_size=10, max_overflow=10)


def create_private_database(path: Path) -> None:
    """Make the SQLite file ``0600`` (in a ``0700`` directory when it is missing) before SQLite opens it:
    SQLite would follow the umask, and it gives its ``-wal`` and ``-shm`` files the database's mode."""
    make_dirs(path.parent, PRIVATE_DIR)
    with contextlib.suppress(FileExistsError):  # an existing store keeps the mode its owner gave it
        os.close(create_file(path, PRIVATE_FILE, exclusive=True))


BUSY_TIMEOUT = 60.0
"""Seconds a writer waits for its turn (this process's other writers, then SQLite's lock) before failing."""


class WriteTurn:
    """Whose turn it is to write, among this process's threads and then among processes.

    SQLite's busy handler *sleeps* between tries (1, 2, 5 … 25 ms, then 50 and 100): with twenty writers
    queued on the one write lock, a waiter wakes long after the lock was freed (the bench: 1 200 such
    sleeps, 7.9 s of threads asleep, for 1 000 messages in 12.7 s). A ``threading.Lock``, then an ``flock``
    on ``<database>-turn`` shared by every process opening the store (the gateway, its relay process, CLI
    commands), wake the next writer as soon as the last one has committed: SQLite's lock is then free
    when ``BEGIN IMMEDIATE`` asks. A process killed with its turn loses the ``flock`` with its descriptor.
    A process whose writer hangs inside a transaction makes the others' writers wait (SQLite's lock would
    be held as long): what the watchdog and the store's health are there for.
    """

    def __init__(self, database: Path | None) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        if database is not None:
            path = database.with_name(database.name + "-turn")
            try:
                with contextlib.suppress(FileExistsError):
                    os.close(create_file(path, PRIVATE_FILE, exclusive=True))
                self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                pass  # no room or no right to create it: processes then wait in SQLite's busy handler

    def take(self) -> None:
        if not self._threads.acquire(timeout=BUSY_TIMEOUT):
            raise StoreError(f"the store is busy: no write turn within {BUSY_TIMEOUT:.0f} s")
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def give_back(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        """Close the ``flock``'s file once no writer holds it (one hanging keeps it, to the process's end)."""
        if self._fd is None or not self._threads.acquire(timeout=BUSY_TIMEOUT):
            return
        try:
            os.close(self._fd)
            self._fd = None
        finally:
            self._threads.release()


class _TurnTaking(sqlite3.Connection):
    """A connection whose write transactions hold the store's ``WriteTurn`` until they end."""

    turn: WriteTurn
    holds_turn = False

    def take_turn(self) -> None:
        self.turn.take()
        self.holds_turn = True

    def give_turn_back(self) -> None:
        if self.holds_turn:
            self.holds_turn = False
            self.turn.give_back()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_turn_back()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_turn_back()


def _configure_sqlite(engine: Engine, turn: WriteTurn) -> None:

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.turn = turn
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        # No ``mmap_size`` (issue 16): tried, reading 1 MiB of body took 0.25-0.45 ms of CPU against 0.5-0.7
        # through ``pread``, lost in the relay's 23-31 ms per MiB (alternating bench runs, no difference);
        # bodies just committed are read from the WAL, which SQLite never maps; and an I/O error on a mapped
        # page kills the process with SIGBUS where ``pread`` gives a store fault the callers wait out.
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # A deferred transaction that reads then writes can fail with SQLITE_BUSY when another
        # writer got there first; taking the write lock up front makes writers wait their turn. One
        # that only reads (``reads.read_engine``) takes no lock: in WAL, readers and the writer never
        # wait on each other.
        # Sent on the driver's connection: through ``exec_driver_sql`` the statement cost more CPU than the
        # rest of a short transaction (a result set up for nothing); its error is wrapped as SQLAlchemy
        # would (a store fault, ``gateway.store.faults``).
        if connection.get_execution_options().get(READ_ONLY):
            _begin(connection, "BEGIN")
            return
        dbapi_connection: _TurnTaking = connection.connection.dbapi_connection
        dbapi_connection.take_turn()
        try:
            _begin(connection, "BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.give_turn_back()
            raise


def _begin(connection: Any, statement: str) -> None:
    with driver_errors(statement):
        connection.connection.driver_connection.execute(statement)


class Store:
    """An open store: the queue's repository, the sysadmin's view of the queue, citizen channels, the IMAP
    cursors, the national directory, the ZAM owed to HL7 producers, the MDMs owed to HL7 consumers, and how to
    close it."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.engine: Engine = sessions.kw["bind"]
        self.repository = Repository(sessions)
        self.queue = QueueAdmin(sessions)
        self.channels = ChannelStore(sessions)
        self.mdms = MdmQueue(sessions, self.repository)
        self.stats = StoreStats(sessions, self.repository, self.mdms)
        self.imap_cursors = ImapCursors(sessions)
        self.directory = DirectoryStore(sessions)
        self.zams = ZamQueue(sessions)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``, for logs."""
        return self.engine.url.get_backend_name()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def connect_store(url: str) -> Store:
    """The store at ``url``, not yet touched: no connection is made before its first use."""
    return Store(sessionmaker(create_store_engine(url), expire_on_commit=False))


def prepare_schema(store: Store) -> None:
    """Create the schema on first start, check its version afterwards.

    Raises ``SchemaMismatch`` for another version's store, ``StoreError`` when the database cannot answer
    (the daemon starts anyway when that is a full disk, and prepares the schema once there is room).
    """
    try:
        with store.engine.begin() as connection:
            if not inspect(connection).has_table("schema_version"):
                Base.metadata.create_all(connection)
                store_content_without_pglz(connection)
                connection.execute(
                    insert(SchemaVersion).values(version=SCHEMA_VERSION, applied_at=datetime.now(UTC))
                )
            else:
                found = _migrate(connection, connection.execute(select(SchemaVersion.version)).scalar())
                if found != SCHEMA_VERSION:
                    raise SchemaMismatch(
                        f"the store has schema version {found}, this mssgw expects {SCHEMA_VERSION}"
                    )
    except StoreError:
        raise
    except Exception as error:
        raise StoreError(f"cannot open the store at {store.engine.url!r}: {error}") from error


def _migrate(connection: Connection, found: int | None) -> int | None:
    """Bring an older store up to this version in the opening transaction (all steps or none)."""
    version = found
    while version is not None and version in _MIGRATIONS:
        for step in _MIGRATIONS[version]:
            if isinstance(step, str):
                connection.execute(text(step))
            elif callable(step):
                step(connection)
            else:
                Base.metadata.create_all(connection, tables=[cast(Table, table.__table__) for table in step])
        version += 1
    if version != found:
        connection.execute(update(SchemaVersion).values(version=version, applied_at=datetime.now(UTC)))
    return version


def open_store(url: str) -> Store:
    """Open the store, creating the schema on first start and checking its version afterwards."""
    store = connect_store(url)
    try:
        prepare_schema(store)
    except StoreError:
        store.close()
        raise
    return store

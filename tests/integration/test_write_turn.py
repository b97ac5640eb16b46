"""SQLite writers take turns (``gateway.store.db.WriteTurn``): a thread lock, then an ``flock`` every process
opening the store shares, held from ``BEGIN IMMEDIATE`` to the commit or rollback, so that a writer waits
on the kernel, woken at once, rather than in SQLite's sleeping busy handler."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from gateway.store.db import Store, open_store
from gateway.store.faults import STORE_FAULTS
from gateway.store.repository import NewMessage, Recipient


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    path = tmp_path / "store.db"
    opened = open_store(f"sqlite:///{path}")
    try:
        yield opened, Path(f"{path}-turn")
    finally:
        opened.close()


def turn_is_free(turn: Path) -> bool:
    """Whether another process could take the turn now (a descriptor of our own stands for it)."""
    fd = os.open(turn, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_write_transaction_holds_the_turn_until_its_commit(database: tuple[Store, Path]) -> None:
    store, turn = database
    assert turn.stat().st_mode & 0o777 == 0o600
    with store.engine.begin() as writer:
        writer.exec_driver_sql("UPDATE schema_version SET version = version")
        assert not turn_is_free(turn)
    assert turn_is_free(turn)


def test_a_rolled_back_transaction_gives_the_turn_back(database: tuple[Store, Path]) -> None:
    store, turn = database
    with pytest.raises(ZeroDivisionError), store.engine.begin() as writer:
        writer.exec_driver_sql("UPDATE schema_version SET version = version")
        _ = 1 / 0
    assert turn_is_free(turn)
    with store.engine.begin() as writer:  # and this process's next writer gets it
        writer.exec_driver_sql("UPDATE schema_version SET version = version")


def test_a_read_takes_no_turn(database: tuple[Store, Path]) -> None:
    store, turn = database
    with store.engine.begin() as writer:
        writer.exec_driver_sql("UPDATE schema_version SET version = version")
        assert store.repository.queue_depth() == {}
    assert turn_is_free(turn)


def test_a_writer_of_another_store_waits_for_the_turn_then_writes(database: tuple[Store, Path]) -> None:
    """Two stores on one file are two processes' views: the second writer waits, then goes on."""
    store, _ = database
    other = open_store(str(store.engine.url))
    done = threading.Event()

    def write() -> None:
        with other.engine.begin() as writer:
            writer.exec_driver_sql("UPDATE schema_version SET version = version")
        done.set()

    try:
        with store.engine.begin() as writer:
            writer.exec_driver_sql("UPDATE schema_version SET version = version")
            waiting = threading.Thread(target=write)
            waiting.start()
            time.sleep(0.2)
            assert not done.is_set()
        waiting.join(10)
        assert done.is_set()
    finally:
        other.close()


def test_a_process_killed_with_the_turn_leaves_it_free(database: tuple[Store, Path]) -> None:
    """The ``flock`` goes with the descriptor: a writer killed mid-transaction blocks nobody after it."""
    store, turn = database
    command = [sys.executable, "-c", _HOLD, str(store.engine.url)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            assert not turn_is_free(turn)
        finally:
            holder.kill()
    with store.engine.begin() as writer:
        writer.exec_driver_sql("UPDATE schema_version SET version = version")
    assert turn_is_free(turn)


_HOLD = """
import sys, time
from gateway.store.db import open_store
with open_store(sys.argv[1]).engine.begin() as writer:
    writer.exec_driver_sql("UPDATE schema_version SET version = version")
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_batch_failing_in_the_driver_is_a_store_fault_that_keeps_nothing(
    database: tuple[Store, Path],
) -> None:
    """The batch of plain mail is written on the driver's connection (``sqlite_batch``): its error still
    reaches the intake as SQLAlchemy's (a store fault: the client gets a 4xx), the batch is rolled back
    whole and the turn given back."""
    store, turn = database
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER no_room BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'no room'); END"
        )
    batch = [
        NewMessage(
            b"Subject: x\r\n\r\nx\r\n", "a@b.fr", "outbound", "smtp", (Recipient("c@d.fr"),), "<1@b.fr>"
        )
    ]
    with pytest.raises(STORE_FAULTS) as raised:
        store.repository.add_messages(batch, datetime.now(UTC))
    assert isinstance(raised.value, DBAPIError) and "no room" in str(raised.value.orig)
    assert turn_is_free(turn)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM messages").scalar() == 0

"""Interop with a real Dovecot (STARTTLS, IDLE, MOVE, WITHIN): mail appended while ``mssgw run`` works is
stored exactly once and moved on the server, even across a SIGKILL; a backfill takes exactly its window;
a 25 MB message does not make the bridge hold many copies of it."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.inbound.imap_poller import Ingest, IngestOutcome
from gateway.settings import ImapAccountSettings, load
from gateway.store.db import Store, open_store
from gateway.store.tables import Message
from tests.support.dovecot import BINARY, Dovecot
from tests.support.gateway import Gateway, gateway_for
from tests.support.imap_bridge import PASSWORD, USER, Bridge, bridge_settings, eventually, imap_message
from tests.support.mail import MAILBOX, OUR_DOMAIN
from tests.support.pki import Pki

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(BINARY is None, reason="dovecot is not installed (apt-get install dovecot-imapd)"),
]

COUNT = 500
PROCESSED = "Traités"


@pytest.fixture
def dovecot(tmp_path: Path, pki: Pki) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path / "dovecot", pki, {USER: PASSWORD}).start()
    yield server
    server.stop()


def counts(store: Store) -> tuple[int, int]:
    """(stored rows, distinct Message-IDs) of what came in by IMAP."""
    with store.sessions() as session:
        query = select(func.count(), func.count(func.distinct(Message.message_id))).where(
            Message.source == "imap"
        )
        rows, distinct = session.execute(query).one()
    return int(rows), int(distinct)


def wait_until(check: object, what: str, timeout: float = 120.0) -> None:
    """Bounded polling of another process's progress (no event crosses the process boundary)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.1)


def test_500_messages_appended_while_the_bridge_runs_arrive_once_despite_a_sigkill(
    tmp_path: Path, pki: Pki, dovecot: Dovecot, gateways: list[Gateway]
) -> None:
    password = tmp_path / "imap.password"
    password.write_text(PASSWORD + "\n", encoding="utf-8")
    password.chmod(0o600)
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["inbound"] = {"domains": [OUR_DOMAIN], "mailboxes": [{"address": MAILBOX}]}
    gateway.sections["imap"] = {
        "backoff_initial": "100ms",
        "backoff_max": "1s",
        "accounts": [
            {
                "name": "secretariat",
                "host": "127.0.0.1",
                "port": dovecot.port,
                "security": "starttls",
                "address": MAILBOX,
                "username": USER,
                "password_file": str(password),
                "after_import": "move",
                "processed_folder": PROCESSED,
            }
        ],
    }
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    store = open_store(load(gateway.config).store_url)
    try:
        # Mail already there at the first sync is not imported (backfill_days = 0): start after it.
        wait_until(lambda: store.imap_cursors.load("secretariat", "INBOX") is not None, "the first sync")
        with dovecot.mailbox(USER) as mailbox:
            appender = threading.Thread(
                target=lambda: [mailbox.append(imap_message(n)) for n in range(COUNT)], daemon=True
            )
            appender.start()
            wait_until(lambda: counts(store)[0] >= COUNT // 4, "a quarter stored before the kill")
            gateway.kill()
            gateway.start()
            appender.join(120)
            assert not appender.is_alive()
            try:
                wait_until(lambda: counts(store) == (COUNT, COUNT), f"{COUNT} messages stored, once each")
            except AssertionError as error:
                raise AssertionError(
                    f"{error}; stored (rows, distinct) = {counts(store)}\n"
                    f"--- mssgw run:\n{gateway.output()[-4000:]}\n--- dovecot:\n{dovecot.logs()[-3000:]}"
                ) from None
            wait_until(lambda: mailbox.count() == 0, "the inbox emptied")
        status = gateway.json("imap", "status")
        assert [(row["account"], row["folder"], row["last_error"]) for row in status] == [
            ("secretariat", "INBOX", None)
        ]
        assert gateway.stop() == 0
        assert counts(store) == (COUNT, COUNT)
    finally:
        store.close()
    with dovecot.mailbox(USER) as mailbox:
        assert mailbox.count("Trait&AOk-s") == COUNT  # "Traités" in modified UTF-7
        assert mailbox.count() == 0


async def test_backfill_takes_exactly_the_last_days(tmp_path: Path, pki: Pki, dovecot: Dovecot) -> None:
    now = datetime.now(UTC)
    ages = {
        1: timedelta(days=30),
        2: timedelta(days=3, hours=1),
        3: timedelta(days=2, hours=23),
        4: timedelta(hours=1),
    }
    with dovecot.mailbox(USER) as mailbox:
        for number, age in ages.items():
            mailbox.append(imap_message(number), when=now - age)
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        settings = bridge_settings(tmp_path, pki, dovecot.port, backfill_days=3)
        async with Bridge(settings, store):
            await eventually(lambda: len(_ids(store)) == 2, "the window imported")
            await asyncio.to_thread(append, dovecot, imap_message(5))
            await eventually(lambda: len(_ids(store)) == 3, "then new mail")
        assert _ids(store) == [f"<imap-{n}@cabinet.test.mssante.fr>" for n in (3, 4, 5)]
        with dovecot.mailbox(USER) as mailbox:
            flags = mailbox.flags()
        assert ["\\Seen" in f for f in flags] == [False, False, True, True, True]
    finally:
        store.close()


def append(dovecot: Dovecot, raw: bytes) -> None:
    """Deliver as another client would (in a thread: the bridge shares the test's event loop)."""
    with dovecot.mailbox(USER) as mailbox:
        mailbox.append(raw)


def _ids(store: Store) -> list[str]:
    with store.sessions() as session:
        rows = session.execute(select(Message.message_id).where(Message.source == "imap"))
        return sorted(str(r[0]) for r in rows)


async def test_a_25_mb_message_is_not_held_in_many_copies(tmp_path: Path, pki: Pki, dovecot: Dovecot) -> None:
    size = 25 * 1024 * 1024
    with dovecot.mailbox(USER) as mailbox:
        mailbox.create("Big")
        mailbox.append(imap_message(1, size=size), folder="Big")
    measured: dict[str, int] = {}

    def measuring(ingest: Ingest) -> Ingest:
        async def measure(raw: bytes, account: ImapAccountSettings, folder: str) -> IngestOutcome:
            measured["held"], measured["fetch_peak"] = tracemalloc.get_traced_memory()
            return await ingest(raw, account, folder)

        return measure

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        settings = bridge_settings(tmp_path, pki, dovecot.port, folders=["Big"], backfill_days=1)
        tracemalloc.start()
        try:
            async with Bridge(settings, store, wrap=measuring):
                await eventually(lambda: len(_ids(store)) == 1, "the big message stored", timeout=120)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        store.close()
    print(
        f"25 MB message: fetch peak {measured['fetch_peak'] / size:.2f}x, held while committing "
        f"{measured['held'] / size:.2f}x, peak with the intake {peak / size:.2f}x"
    )
    # The bridge's own share: the literal as aioimaplib reads it plus one copy, then one copy only.
    assert measured["fetch_peak"] < 2.5 * size
    assert measured["held"] < 1.3 * size


async def test_implicit_tls_and_polling_against_dovecot(tmp_path: Path, pki: Pki, dovecot: Dovecot) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        settings = bridge_settings(
            tmp_path, pki, dovecot.tls_port, security="tls", idle=False, poll_interval="100ms"
        )
        async with Bridge(settings, store):
            await eventually(lambda: bool(store.imap_cursors.load("hopital", "INBOX")), "the first sync")
            for number in range(1, 4):
                await asyncio.to_thread(append, dovecot, imap_message(number))
            await eventually(lambda: len(_ids(store)) == 3, "three messages by polling")
        with dovecot.mailbox(USER) as mailbox:
            assert ["\\Seen" in f for f in mailbox.flags()] == [True, True, True]
    finally:
        store.close()

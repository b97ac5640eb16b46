"""The IMAP bridge against aioimaplib's in-process server: mail arrives in the store exactly once and is
then flagged or moved on the server, through IDLE or polling, dropped connections and renumbered folders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.inbound.imap_poller import ImapPoller, IngestOutcome
from gateway.metrics import REGISTRY
from gateway.settings import ImapAccountSettings
from gateway.store.db import Store, open_store
from tests.support.fake_imap import BASE_CAPABILITIES, FakeImap
from tests.support.imap_bridge import (
    PASSWORD,
    USER,
    Bridge,
    blocking_after,
    bridge_settings,
    eventually,
    imap_message,
    server_context,
    stored_message_ids,
)
from tests.support.pki import Pki


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield opened
    opened.close()


@pytest.fixture
async def fake(pki: Pki) -> AsyncIterator[FakeImap]:
    server = await FakeImap(tls=server_context(pki), passwords={USER: PASSWORD}).start()
    yield server
    await server.stop()


def ids(*numbers: int) -> list[str]:
    return sorted(f"<imap-{n}@cabinet.test.mssante.fr>" for n in numbers)


def seen(fake: FakeImap) -> list[bool]:
    return [r"\Seen" in m.flags for m in fake.messages(USER)]


async def idling(fake: FakeImap) -> None:
    await eventually(lambda: any(c.idle_tag for c in fake.connections), "the bridge waits in IDLE")


async def test_idle_brings_new_mail_in_once_then_flags_it_seen(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    settings = bridge_settings(tmp_path, pki, fake.port, poll_interval="1h")
    async with Bridge(settings, store):
        await idling(fake)
        for n in range(1, 4):
            fake.deliver(USER, imap_message(n))
        await eventually(lambda: stored_message_ids(store) == ids(1, 2, 3), "three messages stored")
        await eventually(lambda: seen(fake) == [True] * 3, "three messages flagged \\Seen")
        await idling(fake)
        fake.deliver(USER, imap_message(4))
        await eventually(lambda: stored_message_ids(store) == ids(1, 2, 3, 4), "the fourth one too")
    assert fake.logins == [USER]


async def test_without_idle_the_bridge_polls(tmp_path: Path, pki: Pki, store: Store) -> None:
    fake = await FakeImap(
        capabilities=BASE_CAPABILITIES.replace("IDLE ", ""), tls=server_context(pki)
    ).start()
    try:
        settings = bridge_settings(tmp_path, pki, fake.port, poll_interval="50ms")
        async with Bridge(settings, store):
            await eventually(lambda: store.imap_cursors.load("hopital", "INBOX") is not None, "first sync")
            fake.deliver(USER, imap_message(1))
            await eventually(lambda: stored_message_ids(store) == ids(1), "the message stored")
            await eventually(lambda: seen(fake) == [True], "and flagged")
        assert not any(c.idle_tag for c in fake.connections)
    finally:
        await fake.stop()


async def test_first_sync_takes_new_mail_only(tmp_path: Path, pki: Pki, fake: FakeImap, store: Store) -> None:
    fake.deliver(USER, imap_message(1))
    settings = bridge_settings(tmp_path, pki, fake.port)
    async with Bridge(settings, store):
        await idling(fake)
        fake.deliver(USER, imap_message(2))
        await eventually(lambda: stored_message_ids(store) == ids(2), "only the new message")
    assert seen(fake) == [False, True]


@pytest.mark.parametrize("within", [True, False], ids=["YOUNGER", "SINCE"])
async def test_backfill_imports_the_last_days_then_new_mail(
    tmp_path: Path, pki: Pki, store: Store, within: bool
) -> None:
    capabilities = BASE_CAPABILITIES if within else BASE_CAPABILITIES.replace(" WITHIN", "")
    fake = await FakeImap(capabilities=capabilities, tls=server_context(pki)).start()
    try:
        now = datetime.now(UTC)
        ages = [timedelta(days=30), timedelta(days=6), timedelta(days=2), timedelta(hours=1)]
        for number, age in enumerate(ages, start=1):
            fake.deliver(USER, imap_message(number), date=now - age)
        settings = bridge_settings(tmp_path, pki, fake.port, backfill_days=3)
        async with Bridge(settings, store):
            await idling(fake)
            assert stored_message_ids(store) == ids(3, 4)
            fake.deliver(USER, imap_message(5))
            await eventually(lambda: stored_message_ids(store) == ids(3, 4, 5), "new mail after the backfill")
        assert seen(fake) == [False, False, True, True, True]
    finally:
        await fake.stop()


async def test_a_connection_dropped_mid_fetch_is_resumed_without_doubles(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    settings = bridge_settings(tmp_path, pki, fake.port)
    async with Bridge(settings, store):
        await idling(fake)
        fake.drop_during_fetch = 2
        for n in range(1, 6):
            fake.deliver(USER, imap_message(n))
        await eventually(lambda: stored_message_ids(store) == ids(1, 2, 3, 4, 5), "five messages, once each")
        await eventually(lambda: seen(fake) == [True] * 5, "all flagged")
    assert fake.drop_during_fetch == 0
    assert len(fake.logins) >= 3


async def test_a_renumbered_folder_is_read_again_and_nothing_is_stored_twice(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    settings = bridge_settings(tmp_path, pki, fake.port, after_import="leave")
    async with Bridge(settings, store):
        await idling(fake)
        for n in range(1, 4):
            fake.deliver(USER, imap_message(n))
        await eventually(lambda: stored_message_ids(store) == ids(1, 2, 3), "three messages stored")
    # While the bridge is away, two messages arrive and the server is restored from a backup that
    # numbers them first: without a resynchronisation they would hide below the old cursor (UID 3).
    fake.deliver(USER, imap_message(4))
    fake.deliver(USER, imap_message(5))
    fake.renumber(USER, newest_first=True)
    assert [m.uid for m in fake.messages(USER)] == [1, 2, 3, 4, 5]
    async with Bridge(settings, store):
        await eventually(lambda: stored_message_ids(store) == ids(1, 2, 3, 4, 5), "all five, once each")
        await idling(fake)
    assert stored_message_ids(store) == ids(1, 2, 3, 4, 5)
    statuses = {s.folder: s for s in store.imap_cursors.statuses()}
    assert statuses["INBOX"].uidvalidity == fake.uidvalidity


async def test_a_crash_between_commit_and_flag_imports_nothing_twice(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    settings = bridge_settings(tmp_path, pki, fake.port)
    committed = asyncio.Event()
    bridge = Bridge(settings, store, wrap=blocking_after(2, committed))
    await bridge.poller.start()
    await idling(fake)
    for n in range(1, 5):
        fake.deliver(USER, imap_message(n))
    await asyncio.wait_for(committed.wait(), 20)
    await bridge.poller.stop(0)  # killed: the second message is committed, not yet flagged
    fake.drop_connections()
    assert stored_message_ids(store) == ids(1, 2)
    assert seen(fake)[1] is False

    async with Bridge(settings, store):
        await eventually(lambda: stored_message_ids(store) == ids(1, 2, 3, 4), "four messages, once each")
        await eventually(lambda: seen(fake) == [True] * 4, "all flagged")


@pytest.mark.parametrize(
    "capabilities",
    [
        BASE_CAPABILITIES,
        BASE_CAPABILITIES.replace("MOVE ", ""),
        BASE_CAPABILITIES.replace("UIDPLUS MOVE ", ""),
    ],
    ids=["MOVE", "UIDPLUS-COPY", "COPY-EXPUNGE"],
)
async def test_imported_mail_is_moved_to_the_processed_folder(
    tmp_path: Path, pki: Pki, store: Store, capabilities: str
) -> None:
    fake = await FakeImap(capabilities=capabilities, tls=server_context(pki)).start()
    try:
        settings = bridge_settings(tmp_path, pki, fake.port, after_import="move", processed_folder="Traités")
        async with Bridge(settings, store):
            await idling(fake)
            for n in range(1, 4):
                fake.deliver(USER, imap_message(n))
            await eventually(lambda: len(fake.messages(USER, "Trait&AOk-s")) == 3, "three moved")
            await eventually(lambda: fake.messages(USER) == [], "the inbox emptied")
        assert stored_message_ids(store) == ids(1, 2, 3)
        assert (fake.moves > 0) == ("MOVE" in capabilities.split())
    finally:
        await fake.stop()


async def test_an_account_that_fails_leaves_the_others_alone(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    intruder = "intruder@hopital.test.mssante.fr"
    fake.passwords[intruder] = "not the password in the file"
    settings = bridge_settings(tmp_path, pki, fake.port, others=[{"name": "refused", "username": intruder}])
    async with Bridge(settings, store):
        await idling(fake)
        fake.deliver(USER, imap_message(1))
        await eventually(lambda: stored_message_ids(store) == ids(1), "the good account imports")
        await eventually(
            lambda: any(s.account == "refused" and s.last_error for s in store.imap_cursors.statuses()),
            "the refused account's error recorded",
        )
    errors = {s.account: s.last_error for s in store.imap_cursors.statuses()}
    assert "refused the password login" in (errors["refused"] or "")
    assert errors["hopital"] is None
    lag = {name: REGISTRY.get_sample_value("mssgw_imap_lag_seconds", {"account": name}) for name in errors}
    assert lag["hopital"] is not None and lag["hopital"] < 5
    assert lag["refused"] is not None and lag["refused"] >= 0


async def test_a_reload_reconnects_with_the_new_settings(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    async with Bridge(bridge_settings(tmp_path, pki, fake.port, after_import="leave"), store) as bridge:
        await idling(fake)
        fake.deliver(USER, imap_message(1))
        await eventually(lambda: stored_message_ids(store) == ids(1), "the first message stored")
        bridge.poller.prepare_reload(bridge_settings(tmp_path, pki, fake.port, after_import="seen"))()
        await eventually(lambda: len(fake.logins) == 2, "a new connection")
        await idling(fake)
        fake.deliver(USER, imap_message(2))
        await eventually(lambda: seen(fake) == [False, True], "the new setting applies to new mail")
    assert stored_message_ids(store) == ids(1, 2)


def test_the_backoff_doubles_up_to_its_ceiling_with_jitter(tmp_path: Path, pki: Pki) -> None:
    settings = bridge_settings(tmp_path, pki, 143, imap={"backoff_initial": "1s", "backoff_max": "60s"})
    watcher = ImapPoller(settings, _never, _NoCursors(), lambda: datetime.now(UTC))._watchers[0]
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (100, 60.0)):
        delays = {watcher.backoff(failures) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


async def _never(raw: bytes, account: ImapAccountSettings, folder: str) -> IngestOutcome:
    raise AssertionError("not called")


class _NoCursors:
    def load(self, account: str, folder: str) -> tuple[int, int] | None:
        return None

    def save(self, account: str, folder: str, uidvalidity: int, last_uid: int, at: datetime) -> None:
        pass

    def record_error(self, account: str, folder: str, error: str) -> None:
        pass


async def test_mail_announced_after_a_search_result_is_not_left_waiting(
    tmp_path: Path, pki: Pki, fake: FakeImap, store: Store
) -> None:
    settings = bridge_settings(tmp_path, pki, fake.port, poll_interval="1h")
    async with Bridge(settings, store):
        await idling(fake)
        fake.hide_from_search = 1
        fake.deliver(USER, imap_message(1))
        await eventually(lambda: stored_message_ids(store) == ids(1), "the message stored without more mail")

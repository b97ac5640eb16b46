"""The relay claims as often as work can be due, no more: a claim is a write transaction (on SQLite the
one write lock intake's commits need), so it claims again at once only after a full claim. Nothing may be
left unclaimed for that: work committed while it sleeps (the commit's wake), retries and notices an
outcome makes due, and due work a full claim left behind for want of a slot are all claimed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.outbound.relay import Relay
from gateway.outbound.transports.registry import TransportRegistry
from gateway.settings import Settings, from_mapping
from gateway.store.db import Store
from gateway.store.repository import ClaimedDelivery, NewMessage, Recipient, Repository
from tests.support.fake_operator import refused_port
from tests.support.pki import Pki
from tests.support.relay import run_relay_until, states


class CountingRepository(Repository):
    """The store's own repository, counting the claims the relay makes and how many came back empty."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.sessions)
        self.claims: list[int] = []

    def claim_due(
        self, owner: str, now: datetime, lease: timedelta, limit: int, crash_limit: int
    ) -> list[ClaimedDelivery]:
        claimed = super().claim_due(owner, now, lease, limit, crash_limit)
        self.claims.append(len(claimed))
        return claimed


def _settings(tmp_path: Path, relay: dict[str, Any]) -> Settings:
    """Mail for everyone written to a folder, at once and always with success."""
    return from_mapping(
        {
            "gateway": {"hostname": "mssgw.hopital.test", "state_dir": str(tmp_path)},
            "routes": [{"domain": "*", "transport": "folder", "path": str(tmp_path / "out")}],
            "relay": relay,
        }
    )


def _add(store: Store, first: int, count: int, body: bytes = b"body") -> list[int]:
    """Messages ``first`` … to one recipient, committed."""
    messages = [
        NewMessage(
            b"From: app@hopital.test\r\nMessage-ID: <%d@hopital.test>\r\n\r\n%s\r\n" % (n, body),
            "app@hopital.test",
            "outbound",
            "test",
            (Recipient("dr@cabinet.test"),),
            message_id=f"<{n}@hopital.test>",
        )
        for n in range(first, first + count)
    ]
    return [stored.pk for stored in store.repository.add_messages(messages, datetime.now(UTC))]


def _relay(settings: Settings, repository: Repository) -> Relay:
    return Relay(
        settings, repository, TransportRegistry(settings), None, lambda: datetime.now(UTC), trusts=bool
    )


async def _until(settled: Callable[[], bool]) -> None:
    """Wait on the store's state (a short poll), failing after 20 s."""
    deadline = asyncio.get_running_loop().time() + 20
    while not settled():
        assert asyncio.get_running_loop().time() < deadline, "the relay never got there"
        await asyncio.sleep(0.05)


async def test_a_burst_smaller_than_a_claim_is_sent_on_one_claim(store: Store, tmp_path: Path) -> None:
    # The claim was not full: the queue had nothing more due, and sent mail makes nothing due.
    pks = _add(store, 0, 5)
    repository = CountingRepository(store)
    relay = _relay(_settings(tmp_path, {}), repository)
    await run_relay_until(relay, lambda: states(store, *pks) == {"sent"})
    assert repository.claims == [5]


async def test_mail_committed_while_the_relay_sleeps_is_claimed_on_the_commit_s_wake(
    store: Store, tmp_path: Path
) -> None:
    # An empty queue has no due time: only the wake intake gives after its commit brings the relay back.
    repository = CountingRepository(store)
    relay = _relay(_settings(tmp_path, {}), repository)
    task = await relay.start()
    await _until(lambda: repository.claims == [0])
    pks = _add(store, 0, 3)
    relay.wake()
    await _until(lambda: states(store, *pks) == {"sent"})
    more = _add(store, 3, 2)
    relay.wake()
    await _until(lambda: states(store, *more) == {"sent"})
    await relay.stop(5)
    await asyncio.gather(task)
    assert repository.claims == [0, 3, 2]


@pytest.mark.parametrize(
    "limits", [{"concurrency": 2}, {"claim_batch": 2}], ids=["slots-freed", "full-claim"]
)
async def test_due_work_a_full_claim_left_behind_is_claimed_without_a_wake(
    store: Store, tmp_path: Path, limits: dict[str, Any]
) -> None:
    # Seven due at once, two at a time: each full claim is followed by another, once a slot is free.
    pks = _add(store, 0, 7)
    repository = CountingRepository(store)
    relay = _relay(_settings(tmp_path, limits), repository)
    await run_relay_until(relay, lambda: states(store, *pks) == {"sent"})
    assert sum(repository.claims) == 7
    assert all(claimed <= 2 for claimed in repository.claims)


async def test_a_deferral_and_the_notice_of_a_failure_are_claimed_when_due_without_a_wake(
    store: Store, tmp_path: Path, pki: Pki
) -> None:
    # Nothing listens on the smarthost's port: every attempt is a deferral, due again 0.2 s later. A
    # message with a NUL fails on its first attempt, and its DSN to the sender is due at once. The relay
    # was asleep with no due time when each outcome was recorded.
    settings = from_mapping(
        {
            "gateway": {"hostname": "mssgw.hopital.test", "state_dir": str(tmp_path)},
            "smarthost": {"host": "127.0.0.1", "port": refused_port()},
            "tls": {"ca_bundle": str(pki.ca)},
            "relay": {"retry_schedule": [0.2, 3600]},
        }
    )
    [deferred] = _add(store, 0, 1)
    [failed] = _add(store, 1, 1, b"bo\0dy")
    repository = CountingRepository(store)

    def settled() -> bool:
        deliveries = store.queue.show(deferred).deliveries + store.queue.show(failed).deliveries
        notices = [d.notice_id for d in deliveries if d.notice_id is not None]
        return (
            deliveries[0].attempts >= 2
            and len(notices) == 1
            and all(d.attempts >= 1 for d in store.queue.show(notices[0]).deliveries)
        )

    await run_relay_until(_relay(settings, repository), settled)

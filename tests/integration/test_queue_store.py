"""The store as a queue, on SQLite and on PostgreSQL: commits, claims with leases, crash recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select

from gateway.batching import Batcher
from gateway.store.audit import AUDIT_EVENTS
from gateway.store.db import Store, open_store
from gateway.store.repository import (
    ATTACHMENTS,
    ATTEMPTS,
    DELIVERIES,
    PRELOAD_BYTES,
    AttachmentInfo,
    DeliveryOutcome,
    NewMessage,
    Recipient,
)
from gateway.store.states import KEPT_ASIDE, DeliveryState

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


def message(n: int, recipients: int = 1) -> NewMessage:
    raw = f"Message-ID: <m{n}@test>\r\nSubject: n{n}\r\n\r\nbody {n}\r\n".encode()
    return NewMessage(
        raw=raw,
        envelope_from="app@hopital.test.mssante.fr",
        direction="outbound",
        source="test",
        recipients=tuple(Recipient(f"r{i}@dest.test") for i in range(recipients)),
        message_id=f"<m{n}@test>",
    )


def test_a_batch_is_committed_with_one_delivery_per_recipient(store: Store) -> None:
    repo = store.repository
    stored = repo.add_messages([message(1, recipients=3), message(2)], T0)
    assert [s.duplicate for s in stored] == [False, False]
    claimed = repo.claim_due("a", T0, LEASE, 100, 3)
    assert [(c.message_pk, c.recipient) for c in claimed] == [
        (stored[0].pk, "r0@dest.test"),
        (stored[0].pk, "r1@dest.test"),
        (stored[0].pk, "r2@dest.test"),
        (stored[1].pk, "r0@dest.test"),
    ]
    assert all(c.attempts == 1 for c in claimed)


def test_a_batch_links_every_row_to_its_own_message(store: Store) -> None:
    """Queue rows, attachments and audit events name the right message (one statement on PostgreSQL,
    where a row's message is known only by its place in the batch until the insert)."""
    batch = [
        dataclasses.replace(
            message(n, recipients=n),
            attachments=(AttachmentInfo.of(f"f{n}.pdf", "application/pdf", b"%PDF"),),
        )
        for n in range(4)
    ]
    pks = [stored.pk for stored in store.repository.add_messages(batch, T0)]
    with store.engine.connect() as connection:
        queued = connection.execute(
            select(DELIVERIES.c.message_pk, DELIVERIES.c.recipient).order_by(DELIVERIES.c.id)
        ).all()
        attached = connection.execute(select(ATTACHMENTS.c.message_pk, ATTACHMENTS.c.filename)).all()
        accepted = connection.execute(select(AUDIT_EVENTS.c.message_pk, AUDIT_EVENTS.c.kind)).all()
    assert [tuple(row) for row in queued] == [(pks[n], f"r{i}@dest.test") for n in range(4) for i in range(n)]
    assert sorted(tuple(row) for row in attached) == [(pks[n], f"f{n}.pdf") for n in range(4)]
    assert sorted(tuple(row) for row in accepted) == [(pk, "accepted") for pk in pks]


def test_a_claim_brings_small_messages_with_it_and_leaves_the_rest_to_be_loaded(store: Store) -> None:
    """The relay sends what the claim brought without reading it again, up to PRELOAD_BYTES a claim."""
    repo = store.repository
    large = dataclasses.replace(message(2), raw=message(2).raw + b"x" * PRELOAD_BYTES)
    small, big, after = (s.pk for s in repo.add_messages([message(1, recipients=2), large, message(3)], T0))
    claimed = repo.claim_due("a", T0, LEASE, 100, 3)
    assert [c.message_pk for c in claimed] == [small, small, big, after]
    first, second, *rest = claimed
    assert first.envelope is not None and first.envelope is second.envelope
    assert first.envelope == repo.load_envelopes([small])[small]
    assert first.envelope.raw == message(1).raw
    # Past the room (in id order), the relay loads them one at a time.
    assert [c.envelope for c in rest] == [None, None]
    assert repo.load_envelopes([big])[big].raw == large.raw


def test_the_same_message_twice_is_stored_once(store: Store) -> None:
    repo = store.repository
    first = repo.add_messages([message(7)], T0)[0]
    again = repo.add_messages([message(7)], T0)[0]
    assert again == first.__class__(first.pk, duplicate=True)
    assert len(repo.claim_due("a", T0, LEASE, 100, 3)) == 1


def test_copies_within_one_batch_and_around_an_hl7_message_are_duplicates(store: Store) -> None:
    """The batched path for plain mail keeps the duplicate rule and the order of the batch."""
    repo = store.repository
    old = repo.add_messages([message(1)], T0)[0]
    hl7 = dataclasses.replace(message(9), hl7_control=("lab", "42"))
    stored = repo.add_messages([message(2), message(1), message(2), hl7, message(3), message(9)], T0)
    assert [s.duplicate for s in stored] == [False, True, True, False, False, True]
    assert stored[1].pk == old.pk and stored[2].pk == stored[0].pk and stored[5].pk == stored[3].pk
    assert stored[0].pk < stored[3].pk < stored[4].pk
    assert len(repo.claim_due("a", T0, LEASE, 100, 3)) == 4
    assert [kind for _, kind, _ in store.queue.show(stored[4].pk).events] == ["accepted"]


def test_copies_in_a_batch_of_plain_mail_are_duplicates_and_get_no_rows(store: Store) -> None:
    """The plain path (one statement on PostgreSQL, the look-up inside it): a stored copy and a copy
    earlier in the batch get their original's id; their deliveries and events are not written."""
    repo = store.repository
    old = repo.add_messages([message(1, recipients=2)], T0)[0]
    anonymous = dataclasses.replace(message(4), message_id=None)
    batch = [message(2), message(1, recipients=2), anonymous, message(2), message(3, recipients=2), anonymous]
    stored = repo.add_messages(batch, T0)
    assert [s.duplicate for s in stored] == [False, True, False, True, False, False]
    assert stored[1].pk == old.pk and stored[3].pk == stored[0].pk
    assert stored[0].pk < stored[2].pk < stored[4].pk < stored[5].pk
    claimed = repo.claim_due("a", T0, LEASE, 100, 3)
    assert sorted((c.message_pk, c.recipient) for c in claimed) == sorted(
        [(old.pk, "r0@dest.test"), (old.pk, "r1@dest.test"), (stored[0].pk, "r0@dest.test")]
        + [(stored[2].pk, "r0@dest.test"), (stored[4].pk, "r0@dest.test"), (stored[4].pk, "r1@dest.test")]
        + [(stored[5].pk, "r0@dest.test")]
    )
    for s in (stored[0], stored[2], stored[4]):
        assert [kind for _, kind, _ in store.queue.show(s.pk).events] == ["accepted"]
    assert [kind for _, kind, _ in store.queue.show(old.pk).events] == ["accepted"]


def test_a_message_kept_aside_never_gets_a_delivery_row(store: Store) -> None:
    """A refused message is for a person, not for a mailbox: the store will not queue it (issue 10)."""
    repo = store.repository
    for state in KEPT_ASIDE:
        with pytest.raises(ValueError, match="must have no deliveries"):
            repo.add_messages([dataclasses.replace(message(3), state=state)], T0)
    assert repo.claim_due("a", T0, LEASE, 100, 3) == []


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_expires(
    store: Store,
) -> None:
    repo = store.repository
    repo.add_messages([message(1)], T0)
    assert len(repo.claim_due("a", T0, LEASE, 100, 3)) == 1
    assert repo.claim_due("b", T0 + timedelta(minutes=5), LEASE, 100, 3) == []
    reclaimed = repo.claim_due("b", T0 + timedelta(minutes=11), LEASE, 100, 3)
    assert len(reclaimed) == 1 and reclaimed[0].attempts == 2


def test_a_delivery_that_crashed_the_worker_three_times_is_held(store: Store) -> None:
    # Each worker dies holding the lease (no heartbeat renews it); the next one reclaims it.
    repo = store.repository
    pk = repo.add_messages([message(1)], T0)[0].pk
    now = T0
    for worker in ("a", "b", "c"):
        assert len(repo.claim_due(worker, now, LEASE, 100, 3)) == 1
        now += timedelta(minutes=11)
    assert repo.claim_due("d", now, LEASE, 100, 3) == []
    entry = store.queue.show(pk)
    assert [d.state for d in entry.deliveries] == ["held"]
    assert [kind for _, kind, _ in entry.events].count("lease-reclaimed") == 2
    assert store.queue.release(pk, now) == 1
    assert len(repo.claim_due("d", now, LEASE, 100, 3)) == 1


def test_an_owner_never_reclaims_its_own_live_lease(store: Store) -> None:
    # The relay of "a" still holds the delivery in memory (its heartbeat may have missed a beat):
    # claiming it again would send it twice, and counting a crash would be false.
    repo = store.repository
    pk = repo.add_messages([message(1)], T0)[0].pk
    assert len(repo.claim_due("a", T0, LEASE, 100, 3)) == 1
    later = T0 + timedelta(minutes=11)
    assert repo.claim_due("a", later, LEASE, 100, 3) == []
    assert repo.next_wakeup("a") is None
    entry = store.queue.show(pk)
    assert [d.state for d in entry.deliveries] == ["sending"]
    assert [kind for _, kind, _ in entry.events if kind in ("lease-reclaimed", "held")] == []


def test_a_renewed_lease_is_not_taken_by_another_instance(store: Store) -> None:
    repo = store.repository
    repo.add_messages([message(1)], T0)
    (claim,) = repo.claim_due("a", T0, LEASE, 100, 3)
    renewed_at = T0 + timedelta(minutes=8)
    assert repo.renew_leases("a", [claim.pk], renewed_at + LEASE) == 1
    assert repo.renew_leases("b", [claim.pk], renewed_at + LEASE) == 0
    assert repo.claim_due("b", T0 + timedelta(minutes=11), LEASE, 100, 3) == []
    assert repo.next_wakeup("b") == renewed_at + LEASE
    (reclaimed,) = repo.claim_due("b", renewed_at + LEASE + timedelta(seconds=1), LEASE, 100, 3)
    assert reclaimed.attempts == 2


def test_a_restart_takes_back_its_own_leases_at_once(store: Store) -> None:
    repo = store.repository
    repo.add_messages([message(1), message(2)], T0)
    repo.claim_due("node-1", T0, LEASE, 100, 3)
    assert repo.recover_owner("node-1", T0 + timedelta(seconds=1), 3) == 2
    assert len(repo.claim_due("node-1", T0 + timedelta(seconds=1), LEASE, 100, 3)) == 2


def test_a_claim_given_back_before_any_transaction_does_not_count_an_attempt(store: Store) -> None:
    # A claim that commits as a stop begins: nothing was sent, so the next claim is the first attempt.
    repo = store.repository
    repo.add_messages([message(1), message(2)], T0)
    first, second = repo.claim_due("a", T0, LEASE, 100, 3)
    repo.unclaim("a", [first.pk], T0 + timedelta(seconds=1))
    repo.unclaim("b", [second.pk], T0 + timedelta(seconds=1))  # not b's lease: left alone
    (again,) = repo.claim_due("a", T0 + timedelta(seconds=1), LEASE, 100, 3)
    assert (again.pk, again.attempts) == (first.pk, 1)
    assert repo.release_claims("a", T0 + timedelta(seconds=2)) == 2
    events = store.queue.show(first.message_pk).events
    assert [kind for _, kind, _ in events if kind == "lease-reclaimed"] == []


def test_outcomes_and_attempts_are_recorded(store: Store) -> None:
    repo = store.repository
    pk = repo.add_messages([message(1, recipients=2)], T0)[0].pk
    first, second = repo.claim_due("a", T0, LEASE, 100, 3)
    retry_at = T0 + timedelta(minutes=1)
    repo.record_outcomes(
        [
            DeliveryOutcome(first.pk, DeliveryState.SENT, T0, 250, "250 2.0.0 ok", "op:25"),
            DeliveryOutcome(second.pk, DeliveryState.DEFERRED, T0, 451, "451 4.3.0 later", "op:25", retry_at),
        ],
        [],
        T0,
    )
    assert repo.claim_due("a", T0, LEASE, 100, 3) == []
    assert repo.next_wakeup() == retry_at
    assert [c.pk for c in repo.claim_due("a", retry_at, LEASE, 100, 3)] == [second.pk]
    entry = store.queue.show(pk)
    assert [(d.state, [a.code for a in d.history]) for d in entry.deliveries] == [
        ("sent", [250]),
        ("sending", [451]),
    ]


def test_a_group_of_outcomes_records_only_the_deliveries_still_leased(store: Store) -> None:
    repo = store.repository
    pk = repo.add_messages([message(1, recipients=4)], T0)[0].pk
    sent, refused, deferred, taken = repo.claim_due("a", T0, LEASE, 100, 3)
    # ``taken``'s lease expired, another instance claimed and deferred it: a's outcome changes nothing.
    later = T0 + LEASE + timedelta(seconds=1)
    repo.renew_leases("a", [sent.pk, refused.pk, deferred.pk], later + LEASE)
    assert [c.pk for c in repo.claim_due("b", later, LEASE, 100, 3)] == [taken.pk]
    retry_at = later + timedelta(minutes=5)
    repo.record_outcomes(
        [DeliveryOutcome(taken.pk, DeliveryState.DEFERRED, later, 421, "421 busy", "op:25", retry_at)],
        [],
        later,
    )
    repo.record_outcomes(
        [
            DeliveryOutcome(sent.pk, DeliveryState.SENT, later, 250, "250 2.0.0 ok", "op:25"),
            DeliveryOutcome(
                refused.pk,
                DeliveryState.FAILED,
                later,
                550,
                "550 5.7.1 closed",
                "op:25",
                refusal="mailbox-closed",
            ),
            DeliveryOutcome(deferred.pk, DeliveryState.DEFERRED, later, 451, "451 later", "op:25", retry_at),
            DeliveryOutcome(taken.pk, DeliveryState.SENT, later, 250, "250 2.0.0 ok", "op:25"),
        ],
        [],
        later,
    )
    entry = store.queue.show(pk)
    assert [(d.state, [a.code for a in d.history]) for d in entry.deliveries] == [
        ("sent", [250]),
        ("failed", [550]),
        ("deferred", [451]),
        ("deferred", [421]),
    ]
    assert repo.next_wakeup() == retry_at


def test_an_outcome_sets_the_columns_it_speaks_of_and_leaves_the_others(store: Store) -> None:
    """Each store records a group of outcomes its own way (one statement on PostgreSQL): the same columns."""
    repo = store.repository
    pk = repo.add_messages([message(1, recipients=3)], T0)[0].pk
    sent, refused, deferred = repo.claim_due("a", T0, LEASE, 100, 3)
    later, retry_at = T0 + timedelta(seconds=5), T0 + timedelta(minutes=5)
    repo.record_outcomes(
        [
            DeliveryOutcome(sent.pk, DeliveryState.SENT, later, 250, "250 2.0.0 ok", "op:25"),
            DeliveryOutcome(
                refused.pk,
                DeliveryState.FAILED,
                later,
                550,
                "550 5.7.1 closed",
                "op:25",
                refusal="mailbox-closed",
            ),
            DeliveryOutcome(deferred.pk, DeliveryState.DEFERRED, later, None, "no route", None, retry_at),
        ],
        [],
        later,
    )
    d = DELIVERIES.c
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                d.state,
                d.last_code,
                d.last_reply,
                d.claimed_by,
                d.claimed_until,
                d.updated_at,
                d.next_attempt_at,
                d.sent_at,
                d.receipt_status,
                d.receipt_detail,
                d.receipt_at,
            )
            .where(d.message_pk == pk)
            .order_by(d.id)
        ).all()
        attempts = connection.execute(
            select(
                ATTEMPTS.c.outcome, ATTEMPTS.c.code, ATTEMPTS.c.reply, ATTEMPTS.c.peer, ATTEMPTS.c.at
            ).order_by(ATTEMPTS.c.delivery_pk)
        ).all()
        trail = connection.execute(
            select(AUDIT_EVENTS.c.kind, AUDIT_EVENTS.c.delivery_pk, AUDIT_EVENTS.c.detail, AUDIT_EVENTS.c.at)
            .where(AUDIT_EVENTS.c.message_pk == pk)
            .order_by(AUDIT_EVENTS.c.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("sent", 250, "250 2.0.0 ok", None, None, later, T0, later, None, None, None),
        (
            "failed",
            550,
            "550 5.7.1 closed",
            None,
            None,
            later,
            T0,
            None,
            "mailbox-closed",
            "550 5.7.1 closed",
            later,
        ),
        ("deferred", None, "no route", None, None, later, retry_at, None, None, None, None),
    ]
    assert [tuple(row) for row in attempts] == [
        ("sent", 250, "250 2.0.0 ok", "op:25", later),
        ("failed", 550, "550 5.7.1 closed", "op:25", later),
        ("deferred", None, "no route", None, later),
    ]
    assert [tuple(row) for row in trail][1:] == [
        ("sent", sent.pk, '{"code": 250}', later),
        ("failed", refused.pk, '{"code": 550}', later),
        ("deferred", deferred.pk, None, later),
    ]


def test_a_read_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    """On SQLite a look-up takes no write lock: it answers while another transaction holds that lock."""
    opened = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        repo = opened.repository
        pk = repo.add_messages([message(1)], T0)[0].pk
        with opened.engine.begin() as writer:  # BEGIN IMMEDIATE: the write lock until the block ends
            writer.exec_driver_sql("UPDATE deliveries SET attempts = attempts")
            started = time.monotonic()
            assert list(repo.load_envelopes([pk])) == [pk]
            assert repo.next_wakeup() == T0
            assert time.monotonic() - started < 5  # a write lock would wait the 60 s busy timeout
    finally:
        opened.close()


def test_concurrent_submissions_share_commits(store: Store) -> None:
    repo = store.repository
    batches: list[int] = []

    def add(batch: list[NewMessage]) -> list[object]:
        batches.append(len(batch))
        return list(repo.add_messages(batch, T0))

    async def submit_all() -> list[object]:
        batcher: Batcher[NewMessage, object] = Batcher(add, max_batch=50)
        return await asyncio.gather(*(batcher.submit(message(n)) for n in range(120)))

    results = asyncio.run(submit_all())
    assert len(results) == 120
    assert sum(batches) == 120 and len(batches) < 120
    assert len(repo.claim_due("a", T0, LEASE, 500, 3)) == 120


def test_the_relay_reads_open_no_transaction_on_postgresql(store: Store) -> None:
    """On PostgreSQL a read is its statement alone (autocommit): no ``BEGIN`` and ``ROLLBACK`` round trips
    (``gateway.store.reads``). It still sees every commit, and the next due time and lease expiry at once."""
    repo = store.repository
    [stored] = repo.add_messages([message(1)], T0)
    with repo.reads.connect() as connection:
        connection.execute(select(DELIVERIES.c.id)).all()
        driver = connection.connection.driver_connection
        if store.backend == "postgresql":
            assert isinstance(driver, psycopg.Connection)
            assert driver.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
    assert repo.next_wakeup() == T0
    [claimed] = repo.claim_due("a", T0, LEASE, 10, 3)
    assert repo.next_wakeup("b") == T0 + LEASE and repo.next_wakeup("a") is None
    assert set(repo.load_envelopes([claimed.message_pk])) == {stored.pk}
    assert repo.queue_depth() == {"sending": 1}


def test_a_claim_between_looks_for_expired_leases_is_one_statement_on_postgresql(store: Store) -> None:
    """Only a claim that looks for expired leases needs a transaction around its statements; the others
    are the claim's statement alone, in autocommit on PostgreSQL, and still lease each delivery once."""
    repo = store.repository
    repo.add_messages([message(n) for n in range(3)], T0)
    assert len(repo.claim_due("a", T0, LEASE, 1, 3)) == 1  # the first claim looks
    statements: list[tuple[str, bool]] = []

    def seen(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        driver = connection.connection.driver_connection
        statements.append((statement, getattr(driver, "autocommit", False)))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert len(repo.claim_due("a", T0 + timedelta(seconds=1), LEASE, 1, 3)) == 1
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    if store.backend == "postgresql":
        assert [autocommit for _, autocommit in statements] == [True]
    assert len(repo.claim_due("b", T0 + timedelta(seconds=2), LEASE, 5, 3)) == 1
    assert repo.queue_depth() == {"sending": 3}

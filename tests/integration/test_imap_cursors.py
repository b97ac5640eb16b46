"""IMAP cursors in the store (SQLite and PostgreSQL): a first sync is visible as such, an error is kept
without inventing a cursor, and a successful sync clears it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.store.db import Store

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_an_error_before_the_first_sync_is_kept_without_a_cursor(store: Store) -> None:
    cursors = store.imap_cursors
    assert cursors.load("secretariat", "INBOX") is None
    cursors.record_error("secretariat", "INBOX", "ConnectionRefusedError: [Errno 111]")
    assert cursors.load("secretariat", "INBOX") is None
    [status] = cursors.statuses()
    assert (status.uidvalidity, status.last_uid, status.last_sync_at) == (None, None, None)
    assert status.last_error == "ConnectionRefusedError: [Errno 111]"


def test_a_sync_moves_the_cursor_and_clears_the_error(store: Store) -> None:
    cursors = store.imap_cursors
    cursors.record_error("secretariat", "INBOX", "lost")
    cursors.save("secretariat", "INBOX", 1764000000, 41, T0)
    cursors.save("secretariat", "INBOX", 1764000000, 42, T0 + timedelta(minutes=1))
    cursors.save("secretariat", "Urgent", 7, 3, T0)
    assert cursors.load("secretariat", "INBOX") == (1764000000, 42)
    assert [(s.folder, s.last_uid, s.last_sync_at, s.last_error) for s in cursors.statuses()] == [
        ("INBOX", 42, T0 + timedelta(minutes=1), None),
        ("Urgent", 3, T0, None),
    ]
    cursors.record_error("secretariat", "INBOX", "x" * 5000)
    assert cursors.load("secretariat", "INBOX") == (1764000000, 42)
    assert len(cursors.statuses()[0].last_error or "") == 1000

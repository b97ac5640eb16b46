"""The IMAP bridge in a test's own event loop: settings for one account, the real intake over a real SQLite
store, and ways to wait for what a user would check (messages in the store, flags on the server).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway import settings as settings_module
from gateway.inbound.imap_poller import ImapPoller, Ingest, IngestOutcome, ingest_through
from gateway.inbound.intake import Intake
from gateway.inbound.policy import Policy
from gateway.settings import ImapAccountSettings, Settings
from gateway.store.db import Store
from gateway.store.tables import Message
from tests.support.mail import MAILBOX, OUR_DOMAIN, message
from tests.support.pki import Pki

USER = MAILBOX
PASSWORD = "s3cret-imap"


def server_context(pki: Pki, *, ask_client_certificate: bool = False) -> ssl.SSLContext:
    """The TLS context of a test IMAP server: the trusted CA's server certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    if ask_client_certificate:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(pki.ca)
    return context


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def bridge_settings(
    directory: Path,
    pki: Pki,
    port: int,
    *,
    imap: dict[str, Any] | None = None,
    others: Sequence[dict[str, Any]] = (),
    **account: Any,
) -> Settings:
    """Settings with the IMAP account ``hopital`` on 127.0.0.1:port (STARTTLS, password from a file);
    ``account`` changes its keys, ``others`` adds accounts (each a change of the same base)."""
    directory.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "name": "hopital",
        "host": "127.0.0.1",
        "port": port,
        "security": "starttls",
        "address": MAILBOX,
        "username": USER,
        "password_file": str(secret_file(directory / "imap.password", PASSWORD)),
        "poll_interval": "100ms",
    }
    accounts = [{**values, **account}, *({**values, **other} for other in others)]
    return settings_module.from_mapping(
        {
            "gateway": {"state_dir": str(directory / "state"), "mode": "operator"},
            "tls": {"ca_bundle": str(pki.ca)},
            "inbound": {"domains": [OUR_DOMAIN], "mailboxes": [{"address": MAILBOX}]},
            "imap": {
                "accounts": accounts,
                "connect_timeout": "5s",
                "command_timeout": "5s",
                "backoff_initial": "20ms",
                "backoff_max": "200ms",
                **(imap or {}),
            },
        }
    )


def imap_message(number: int, *, size: int = 0) -> bytes:
    """A message as the operator's server holds it: Return-Path first, a unique Message-ID."""
    body = f"Message {number}\n" + ("x" * 76 + "\n") * (size // 77)
    raw = message(
        "dr.martin@cabinet.test.mssante.fr",
        MAILBOX,
        body=body,
        Message_ID=f"<imap-{number}@cabinet.test.mssante.fr>",
    )
    return b"Return-Path: <dr.martin@cabinet.test.mssante.fr>\r\n" + raw


def stored_message_ids(store: Store) -> list[str]:
    """Message-IDs of what the bridge stored (one entry per stored row, so doubles show)."""
    with store.sessions() as session:
        rows = session.execute(select(Message.message_id).where(Message.source == "imap"))
        return sorted(str(row[0]) for row in rows)


def stored_count(store: Store) -> int:
    with store.sessions() as session:
        count = session.execute(select(func.count()).select_from(Message)).scalar()
    return int(count or 0)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Bounded polling for a state the server or store reach with no event to wait on."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.01)


class Bridge:
    """An ``ImapPoller`` over the real intake and cursors of ``store``; ``ingest`` may be wrapped."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        wrap: Callable[[Ingest], Ingest] | None = None,
    ) -> None:
        intake = Intake(Policy(settings.inbound), store.repository.add_messages, _now, max_batch=50)
        ingest = ingest_through(intake)
        self.poller = ImapPoller(settings, wrap(ingest) if wrap else ingest, store.imap_cursors, _now)

    async def __aenter__(self) -> Bridge:
        await self.poller.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poller.stop(5.0)


def blocking_after(count: int, reached: asyncio.Event) -> Callable[[Ingest], Ingest]:
    """Wrap ingest so that after ``count`` commits the bridge hangs, as if killed right after a commit."""

    def wrap(ingest: Ingest) -> Ingest:
        calls = 0

        async def hanging(raw: bytes, account: ImapAccountSettings, folder: str) -> IngestOutcome:
            nonlocal calls
            outcome = await ingest(raw, account, folder)
            calls += 1
            if calls >= count:
                reached.set()
                await asyncio.Event().wait()
            return outcome

        return hanging

    return wrap


def _now() -> datetime:
    return datetime.now(UTC)

"""The IMAP bridge: brings the mail of the operator's mailboxes into the store, never twice, never losing one.

One task per configured account and folder, each with its own connection (IDLE watches the selected folder,
RFC 2177), its own reconnection with backoff and jitter, and its own errors: one failing account leaves the
others alone. Per message: commit through the intake first, then flag \\Seen / move / leave it on the server,
then move the cursor. A crash anywhere makes the bridge fetch again what the intake de-duplicates
(Message-ID + digest); nothing is deleted before its commit. A store outage is weather (``StoreHealth``,
logged once per episode): the watcher keeps its connection and waits for the store with the message in hand,
which stays unacknowledged on the server until committed. No store import: the daemon hands in ``ingest``
and the cursor store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, TypeVar

from gateway import metrics
from gateway.inbound.imap_session import ImapError, ImapSession, Timeouts
from gateway.inbound.imap_wire import Mailbox, chunks, envelope_sender, size_groups
from gateway.inbound.intake import Arrival, Decision, Intake, Recipient
from gateway.logsetup import log_event
from gateway.settings import ImapAccountSettings, ImapSettings, Settings
from gateway.store_health import Abandoned, Reported, StoreHealth
from gateway.tls import client_context

log = logging.getLogger(__name__)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_jitter = secrets.SystemRandom()
_T = TypeVar("_T")


class IngestOutcome(StrEnum):
    """What the intake did with a fetched message."""

    STORED = "stored"
    """Committed now, or already in the store: acknowledge it on the server."""
    REFUSED = "refused"
    """Refused for good: left as it is on the server (never deleted); the cursor moves past it."""


Ingest = Callable[[bytes, ImapAccountSettings, str], Awaitable[IngestOutcome]]
"""Commit one message of (account, folder); raises ``Reported`` when the store cannot take it now (the
watcher waits for the store), another error when the intake cannot for another reason (retried later)."""

Clock = Callable[[], datetime]


class CursorStore(Protocol):
    """Where cursors live (``gateway.store.imap_cursors.ImapCursors``); blocking, called in threads."""

    def load(self, account: str, folder: str) -> tuple[int, int] | None: ...

    def save(self, account: str, folder: str, uidvalidity: int, last_uid: int, at: datetime) -> None: ...

    def record_error(self, account: str, folder: str, error: str) -> None: ...


class FolderWatcher:
    """Keeps one folder of one account imported until ``stop`` is set."""

    def __init__(
        self,
        account: ImapAccountSettings,
        folder: str,
        settings: ImapSettings,
        context: ssl.SSLContext,
        ingest: Ingest,
        cursors: CursorStore,
        clock: Clock,
        stop: asyncio.Event,
        report: Callable[[], None] = lambda: None,
        health: StoreHealth | None = None,
    ) -> None:
        self.account = account
        self.folder = folder
        self.settings = settings
        self.context = context
        self.ingest = ingest
        self.cursors = cursors
        self.clock = clock
        self.stop = stop
        self.timeouts = Timeouts(settings.connect_timeout, settings.command_timeout)
        self.report = report
        self.health = health or StoreHealth()
        self.caught_up_at: datetime | None = None
        """When the folder was last seen fully imported (the lag metric counts from there)."""
        self._synced = False

    async def run(self) -> None:
        """Connect, import, wait for mail; on any failure wait (backoff with jitter) and start again."""
        failures = 0
        while not self.stop.is_set():
            self._synced = False
            try:
                await self._connected()
                continue
            except Abandoned:
                break  # stopping while the store was away: nothing of the message in hand was kept
            except Exception as error:  # noqa: BLE001 - loop boundary: one account never stops the others
                failures = 1 if self._synced else failures + 1
                delay = self.backoff(failures)
                log_event(
                    log,
                    "imap-error",
                    logging.WARNING,
                    account=self.account.name,
                    folder=self.folder,
                    error=_describe(error),
                    retry_in=round(delay, 2),
                )
                self.report()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        self.cursors.record_error, self.account.name, self.folder, _describe(error)
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    def backoff(self, failures: int) -> float:
        """Exponential delay after ``failures`` failures in a row, with jitter so accounts do not align."""
        ceiling = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** min(failures - 1, 30))
        return _jitter.uniform(ceiling / 2, ceiling)

    async def _connected(self) -> None:
        session = await ImapSession.open(self.account, self.context, self.timeouts)
        try:
            log_event(log, "imap-connected", account=self.account.name, folder=self.folder)
            await self._serve(session)
            await session.logout()
        finally:
            await session.close()

    async def _serve(self, session: ImapSession) -> None:
        mailbox = await session.select(self.folder)
        if self.account.after_import == "move":
            await session.create(self.account.processed_folder)
        cursor = await self._store("imap-cursor", self.cursors.load, self.account.name, self.folder)
        if cursor is None:
            last = await self._first_sync(session, mailbox)
        elif cursor[0] != mailbox.uidvalidity:
            # The server renumbered the folder (RFC 3501 §2.3.1.1): read it all again; the intake keeps
            # one copy of what was already imported.
            log_event(
                log,
                "imap-uidvalidity-changed",
                logging.WARNING,
                account=self.account.name,
                folder=self.folder,
                was=cursor[0],
                now=mailbox.uidvalidity,
            )
            last = 0
        else:
            last = cursor[1]
        use_idle = self.account.idle and "IDLE" in session.capabilities
        while not self.stop.is_set():
            announced = session.announced
            new = [uid for uid in await session.search("UID", f"{last + 1}:*") if uid > last]
            if new or session.announced != announced:
                # Mail announced in the reply to a command (the import's, or this very SEARCH when it
                # came after the server computed the result) is not announced again to IDLE: look again
                # before waiting, so that nothing sits unseen until the next message wakes the bridge.
                last = await self._import(session, mailbox.uidvalidity, new, last)
                continue
            await self._save(mailbox.uidvalidity, last)
            self._synced = True
            self.caught_up_at = self.clock()
            self.report()
            if use_idle:
                await session.idle(self.settings.idle_refresh, self.stop)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.account.poll_interval)

    async def _first_sync(self, session: ImapSession, mailbox: Mailbox) -> int:
        """New mail only, or the last ``backfill_days`` days; returns the cursor's first position."""
        if mailbox.uidnext is not None:
            baseline = mailbox.uidnext - 1
        else:
            baseline = max(await session.search("ALL"), default=0)
        backfilled: list[int] = []
        if self.account.backfill_days > 0:
            backfilled = [uid for uid in await self._window(session) if uid <= baseline]
            # The cursor is written only once the whole window is in: a crash starts the backfill again,
            # and the intake keeps one copy of what was already taken.
            await self._import(session, mailbox.uidvalidity, backfilled, None)
        await self._save(mailbox.uidvalidity, baseline)
        log_event(
            log,
            "imap-first-sync",
            account=self.account.name,
            folder=self.folder,
            uidvalidity=mailbox.uidvalidity,
            backfilled=len(backfilled),
        )
        return baseline

    async def _window(self, session: ImapSession) -> list[int]:
        """UIDs of the messages that arrived in the last ``backfill_days`` days (by INTERNALDATE)."""
        seconds = int(self.account.backfill_days * 86400)
        if "WITHIN" in session.capabilities:
            return await session.search("YOUNGER", str(seconds))
        # Without WITHIN (RFC 5032) SEARCH only knows whole days: the window then starts at midnight.
        since = self.clock() - timedelta(seconds=seconds)
        return await session.search("SINCE", f"{since.day}-{_MONTHS[since.month - 1]}-{since.year}")

    async def _import(self, session: ImapSession, uidvalidity: int, uids: list[int], last: int | None) -> int:
        """Fetch, commit and acknowledge ``uids`` in bounded batches; the cursor follows when ``last`` is
        given. Returns the new cursor position."""
        position = last or 0
        for chunk in chunks(uids, self.settings.fetch_batch):
            sizes = {f.uid: f.size for f in await session.fetch(chunk, "(UID RFC822.SIZE)")}
            for group in size_groups(chunk, sizes, self.settings.fetch_batch_bytes):
                done = await self._import_group(session, group)
                if done is None:
                    return position
                if last is not None:
                    position = done
                    await self._save(uidvalidity, position)
                if done != group[-1]:
                    return position
        return position

    async def _import_group(self, session: ImapSession, group: Sequence[int]) -> int | None:
        """Commit one fetched group, then acknowledge what was stored; the last UID dealt with."""
        messages = await session.fetch(group, "(UID BODY.PEEK[])")
        messages.sort(key=lambda item: item.uid, reverse=True)
        stored: list[int] = []
        done: int | None = None
        try:
            while messages and not self.stop.is_set():
                item = messages.pop()  # drop each body as soon as it is committed
                if item.body is not None:
                    outcome = await self._ingest(item.body)
                    if outcome is IngestOutcome.STORED:
                        stored.append(item.uid)
                    else:
                        log_event(
                            log, "imap-refused", account=self.account.name, folder=self.folder, uid=item.uid
                        )
                done = item.uid
            if not messages and not self.stop.is_set():
                done = group[-1]  # UIDs the server did not return were expunged meanwhile
        finally:
            if stored:
                await self._acknowledge(session, stored)
                log_event(
                    log,
                    "imap-imported",
                    account=self.account.name,
                    folder=self.folder,
                    count=len(stored),
                    last_uid=stored[-1],
                )
        return done

    async def _ingest(self, body: bytes) -> IngestOutcome:
        """Commit one message, waiting for the store while it is away (the connection stays open)."""
        return await self.health.retry(
            "imap-import",
            lambda: self.ingest(body, self.account, self.folder),
            abandon=self.stop.is_set,
            interrupt=self.stop,
        )

    async def _store(self, what: str, call: Callable[..., _T], *args: object) -> _T:
        """A blocking cursor call in a thread, waiting for the store while it is away."""
        return await self.health.retry(
            what, lambda: asyncio.to_thread(call, *args), abandon=self.stop.is_set, interrupt=self.stop
        )

    async def _acknowledge(self, session: ImapSession, uids: list[int]) -> None:
        action = self.account.after_import
        if action == "seen":
            await session.mark_seen(uids)
        elif action == "move":
            await session.move(uids, self.account.processed_folder)

    async def _save(self, uidvalidity: int, last_uid: int) -> None:
        await self._store(
            "imap-cursor",
            self.cursors.save,
            self.account.name,
            self.folder,
            uidvalidity,
            last_uid,
            self.clock(),
        )


class ImapPoller:
    """The daemon service running one ``FolderWatcher`` per (account, folder)."""

    def __init__(
        self,
        settings: Settings,
        ingest: Ingest,
        cursors: CursorStore,
        clock: Clock,
        health: StoreHealth | None = None,
    ) -> None:
        self.ingest = ingest
        self.health = health or StoreHealth()
        self.cursors = cursors
        self.clock = clock
        self.started_at = clock()
        self._stop, self._watchers = self._build(settings)
        self._tasks: set[asyncio.Task[None]] = set()

    def _build(self, settings: Settings) -> tuple[asyncio.Event, list[FolderWatcher]]:
        # Contexts are built here so that unusable TLS material is refused before anything switches.
        stop = asyncio.Event()
        watchers: list[FolderWatcher] = []
        for account in settings.imap.accounts:
            context = client_context(account.tls_settings(settings.tls))
            report = functools.partial(self._report_lag, account.name)
            watchers.extend(
                FolderWatcher(
                    account,
                    folder,
                    settings.imap,
                    context,
                    self.ingest,
                    self.cursors,
                    self.clock,
                    stop,
                    report,
                    self.health,
                )
                for folder in account.folders
            )
        return stop, watchers

    def _report_lag(self, account: str) -> None:
        """The account's lag metric: since its most behind folder was last seen fully imported."""
        now = self.clock()
        behind = [w.caught_up_at or self.started_at for w in self._watchers if w.account.name == account]
        if behind:
            metrics.imap_lag(account, max(0.0, (now - min(behind)).total_seconds()))

    async def start(self) -> None:
        for watcher in self._watchers:
            task = asyncio.create_task(watcher.run(), name=f"imap {watcher.account.name}/{watcher.folder}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log_event(log, "imap-started", watchers=len(self._watchers))

    async def stop(self, grace: float) -> None:
        """Let each watcher finish the message in hand, log out, and end; cancel what lingers."""
        self._stop.set()
        tasks = set(self._tasks)
        if not tasks:
            return
        _, lingering = await asyncio.wait(tasks, timeout=grace)
        for task in lingering:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        generation = self._build(settings)

        def switch() -> None:
            task = asyncio.get_running_loop().create_task(self._restart(generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return switch

    async def _restart(self, generation: tuple[asyncio.Event, list[FolderWatcher]]) -> None:
        current = asyncio.current_task()
        self._stop.set()
        await asyncio.gather(*(t for t in set(self._tasks) if t is not current), return_exceptions=True)
        self._stop, self._watchers = generation
        await self.start()


def _describe(error: BaseException) -> str:
    text = str(error).replace("\n", " ")[:300]
    return f"{type(error).__name__}: {text}" if not isinstance(error, ImapError) else text


class IntakeUnavailable(Exception):
    """The intake could not commit a message now, the store being fine; the watcher retries later."""


def ingest_through(intake: Intake) -> Ingest:
    """The bridge's ``Ingest`` over the intake shared with SMTP: envelope recipient = the mailbox's own
    address, envelope sender = the Return-Path the operator's server wrote."""

    async def ingest(raw: bytes, account: ImapAccountSettings, folder: str) -> IngestOutcome:
        arrival = Arrival(
            raw=raw,
            envelope_from=envelope_sender(raw),
            recipients=(Recipient(account.address),),
            source="imap",
            peer=f"{account.name}/{folder}",
        )
        result = await intake.receive(arrival)
        temporary = [v for v in result.verdicts if v.decision is Decision.TEMPORARY]
        if temporary and not intake.health.up:
            raise Reported(f"{temporary[0].code} {temporary[0].text}")  # the intake told its health
        if temporary:
            raise IntakeUnavailable(f"{temporary[0].code} {temporary[0].text}")
        return IngestOutcome.STORED if result.message_pk is not None else IngestOutcome.REFUSED

    return ingest

"""One authenticated IMAP connection of the bridge, over aioimaplib, with the few commands it needs.

It adds what aioimaplib leaves out: a lost connection fails the command in progress at once (aioimaplib
would wait for its timeout, or for ever in IDLE), STARTTLS, SASL EXTERNAL and XOAUTH2 with or without
SASL-IR, and UID commands whose replies are checked. Never a clear-text login: the connection is TLS from the
start or upgraded by STARTTLS before any credential is sent. No store, no intake here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aioimaplib import aioimaplib

from gateway.inbound import imap_wire
from gateway.inbound.imap_starttls import StartTlsError, starttls
from gateway.settings import ImapAccountSettings

T = TypeVar("T")

_EXISTS = re.compile(rb"^\* \d+ EXISTS$")


class ImapError(Exception):
    """The server refused a command, closed the connection, or did not answer in time."""


class ConnectionLost(ImapError):
    """The server (or the network) closed the connection."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait for the connection (TLS included) and for each command's next bytes."""

    connect: float
    command: float


class _SaslCommand(aioimaplib.Command):  # type: ignore[misc]  # aioimaplib ships no types
    """AUTHENTICATE, answering the server's continuation with the client response (RFC 3501 §6.2.2)."""

    def __init__(self, tag: str, mechanism: str, response: bytes, inline: bool, loop: Any) -> None:
        encoded = base64.b64encode(response).decode("ascii") or "="
        args = (mechanism, encoded) if inline else (mechanism,)
        super().__init__("AUTHENTICATE", tag, *args, loop=loop)
        self.pending: bytes | None = None if inline else encoded.encode("ascii")
        self.transport: asyncio.BaseTransport | None = None
        self.continued = False

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        # aioimaplib hands continuation lines ("+ …") to the pending command, then calls flush().
        self.continued = self.continued or line.startswith(b"+")
        super().append_to_resp(line, result)

    def flush(self) -> None:
        # aioimaplib also flushes at the end of every chunk read: answer continuations only. The first
        # carries the response when it was not sent inline; a later one (an XOAUTH2 error report) is
        # answered with an empty line so that the server finishes the exchange.
        if not self.continued:
            return
        self.continued = False
        assert isinstance(self.transport, asyncio.WriteTransport)
        self.transport.write((self.pending or b"") + b"\r\n")
        self.pending = None


class ImapSession:
    """A logged-in connection; every method raises ImapError (or ConnectionLost) on failure."""

    def __init__(self, client: aioimaplib.IMAP4, lost: asyncio.Future[None], timeouts: Timeouts) -> None:
        self.client = client
        self.lost = lost
        self.timeouts = timeouts
        self.announced = 0
        """How many ``* n EXISTS`` the server has sent: new mail may be announced in any response, and
        aioimaplib drops those that come with commands such as SEARCH."""
        untagged = client.protocol._untagged_response

        def observe(line: bytes) -> Any:
            if _EXISTS.match(line):
                self.announced += 1
            return untagged(line)

        client.protocol._untagged_response = observe

    @classmethod
    async def open(
        cls, account: ImapAccountSettings, context: ssl.SSLContext, timeouts: Timeouts
    ) -> ImapSession:
        """Connect, secure and authenticate as the account says."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()

        def on_lost(error: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

        client = aioimaplib.IMAP4(
            host=account.host,
            port=account.port,
            timeout=timeouts.command,
            conn_lost_cb=on_lost,
            ssl_context=context if account.security == "tls" else None,
        )
        session = cls(client, lost, timeouts)
        try:
            await session._guard(asyncio.wait_for(client.wait_hello_from_server(), timeouts.connect))
            if account.security == "starttls":
                await session._guard(starttls(client, context, account.host, timeouts.connect))
            await session._authenticate(account)
        except BaseException:
            await session.close()
            raise
        return session

    async def _authenticate(self, account: ImapAccountSettings) -> None:
        try:
            response = await self._login(account)
        except ImapError as error:
            if error.__cause__ is None:
                raise  # our own words
            # aioimaplib's messages may quote the command, and so the secret: keep only the kind of error.
            raise ImapError(f"the {account.auth} login failed ({type(error.__cause__).__name__})") from None
        if response.result != "OK":
            raise ImapError(f"the server refused the {account.auth} login: {_text(response)}")
        # Capabilities often change once authenticated (RFC 3501 §6.2.3); ask again rather than guess.
        await self._guard(self.client.protocol.capability())

    async def _login(self, account: ImapAccountSettings) -> aioimaplib.Response:
        if account.auth == "password":
            assert account.password_file is not None
            password = _read_secret(account.password_file)
            return await self._guard(self.client.login(aioimaplib.quoted(account.username), password))
        if account.auth == "xoauth2":
            assert account.token_file is not None
            token = _read_secret(account.token_file)
            initial = f"user={account.username}\x01auth=Bearer {token}\x01\x01".encode()
        else:
            initial = account.username.encode()
        return await self._sasl(account.auth.upper(), initial)

    async def _sasl(self, mechanism: str, initial: bytes) -> aioimaplib.Response:
        protocol = self.client.protocol
        if f"AUTH={mechanism}" not in protocol.capabilities:
            raise ImapError(f"the server does not offer AUTH={mechanism}")
        inline = "SASL-IR" in protocol.capabilities
        command = _SaslCommand(protocol.new_tag(), mechanism, initial, inline, protocol.loop)
        command.transport = protocol.transport

        async def run() -> aioimaplib.Response:
            async with protocol.state_condition:
                response: aioimaplib.Response = await protocol.execute(command)
                if response.result == "OK":
                    protocol.state = aioimaplib.AUTH
                protocol.state_condition.notify_all()
                return response

        return await self._guard(asyncio.wait_for(run(), self.timeouts.command))

    @property
    def capabilities(self) -> set[str]:
        caps: set[str] = self.client.protocol.capabilities
        return caps

    async def select(self, folder: str) -> imap_wire.Mailbox:
        """Open a folder read-write; its UIDVALIDITY and UIDNEXT."""
        response = await self._guard(self.client.select(imap_wire.mailbox_name(folder)))
        _check(response, "SELECT", folder)
        try:
            return imap_wire.parse_select(response.lines)
        except ValueError as error:
            raise ImapError(f"SELECT {folder}: {error}") from error

    async def search(self, *criteria: str) -> list[int]:
        """UIDs matching the criteria, sorted."""
        response = await self._guard(self.client.uid_search(*criteria, charset=None))
        _check(response, "UID SEARCH")
        return imap_wire.parse_search(response.lines)

    async def fetch(self, uids: Sequence[int], items: str) -> list[imap_wire.Fetched]:
        """``UID FETCH`` of exactly these UIDs; the response's memory is released before returning."""
        response = await self._guard(self.client.uid("fetch", imap_wire.uid_set(uids), items))
        _check(response, "UID FETCH")
        wanted = set(uids)
        fetched = [f for f in imap_wire.parse_fetch(response.lines) if f.uid in wanted]
        response.lines.clear()
        return fetched

    async def mark_seen(self, uids: Sequence[int]) -> None:
        response = await self._guard(
            self.client.uid("store", imap_wire.uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")
        )
        _check(response, "UID STORE")

    async def move(self, uids: Sequence[int], folder: str) -> None:
        """MOVE (RFC 6851) when offered; else COPY, then \\Deleted and an expunge of these UIDs only."""
        target = imap_wire.mailbox_name(folder)
        which = imap_wire.uid_set(uids)
        if "MOVE" in self.capabilities:
            _check(await self._guard(self.client.uid("move", which, target)), "UID MOVE", folder)
            return
        _check(await self._guard(self.client.uid("copy", which, target)), "UID COPY", folder)
        deleted = await self._guard(self.client.uid("store", which, "+FLAGS.SILENT", r"(\Deleted)"))
        _check(deleted, "UID STORE")
        if "UIDPLUS" in self.capabilities:
            _check(await self._guard(self.client.uid("expunge", which)), "UID EXPUNGE")
        elif set(await self.search("DELETED")) <= set(uids):
            # Without UIDPLUS an EXPUNGE removes every \Deleted message: only when all of them are ours.
            _check(await self._guard(self.client.expunge()), "EXPUNGE")

    async def create(self, folder: str) -> None:
        """Create a folder; a server saying it exists already is fine."""
        await self._guard(self.client.create(imap_wire.mailbox_name(folder)))

    async def idle(self, refresh: float, stop: asyncio.Event) -> None:
        """Wait in IDLE (RFC 2177) until the server announces mail, ``refresh`` passes, or ``stop`` is set."""
        queue = self.client.protocol.idle_queue
        while not queue.empty():
            queue.get_nowait()  # pushes left from an earlier IDLE were handled by the sync that followed
        idle = await self._guard(self.client.idle_start(timeout=refresh))
        try:
            while not stop.is_set():
                push = asyncio.ensure_future(self.client.wait_server_push(timeout=refresh + 1))
                stopping = asyncio.ensure_future(stop.wait())
                try:
                    await self._guard(asyncio.wait({push, stopping}, return_when=asyncio.FIRST_COMPLETED))
                finally:
                    stopping.cancel()
                if not push.done():
                    push.cancel()
                    break
                if push.exception() is not None:
                    break  # refresh time elapsed
                lines = push.result()
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH or any(b"EXISTS" in line for line in lines):
                    break
        finally:
            if not self.lost.done() and self.client.has_pending_idle():
                self.client.idle_done()
        _check(await self._guard(asyncio.wait_for(idle, self.timeouts.command)), "IDLE")

    async def logout(self) -> None:
        """Say goodbye politely; errors are of no interest any more."""
        with contextlib.suppress(ImapError, aioimaplib.AioImapException, TimeoutError):
            await self._guard(asyncio.wait_for(self.client.logout(), self.timeouts.command))

    async def close(self) -> None:
        """Close the connection and wait until it is closed, leaving no task or socket behind."""
        transport = self.client.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        if transport is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), self.timeouts.connect)
        if not self.client._client_task.done():
            self.client._client_task.cancel()
        for task in (*self.client.tasks, *self.client.protocol.tasks):
            task.cancel()
        if self.client._idle_waiter is not None:
            self.client._idle_waiter.cancel()

    async def _guard(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the connection is lost first; library errors become ImapError."""
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        waiting: set[asyncio.Future[object]] = {task, self.lost}  # type: ignore[arg-type]  # futures of two kinds
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise ConnectionLost("the server closed the connection")
        try:
            return task.result()
        except StartTlsError as error:
            raise ImapError(f"STARTTLS: {error}") from error
        except (aioimaplib.AioImapException, TimeoutError) as error:
            raise ImapError(f"{type(error).__name__}: {error}") from error


def _read_secret(path: Any) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def _text(response: aioimaplib.Response) -> str:
    last = response.lines[-1] if response.lines else b""
    return bytes(last).decode("utf-8", "replace")[:300]


def _check(response: aioimaplib.Response, command: str, folder: str | None = None) -> None:
    if response.result != "OK":
        where = f" {folder}" if folder else ""
        raise ImapError(f"{command}{where}: the server answered {response.result} {_text(response)}")

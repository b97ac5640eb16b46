"""aioimaplib's in-process IMAP test server on an ephemeral loopback port, with the gaps filled that the
bridge's tests need, and faults on demand.

Kept from aioimaplib's ``ImapProtocol``: greeting, CAPABILITY, LOGIN, SELECT/EXAMINE, IDLE/DONE, CREATE,
LOGOUT. Filled in here: UIDs that only grow (aioimaplib reuses the highest UID once it is moved away) and a
UIDVALIDITY that the test changes, UID sets (``1:3,7``) in FETCH/STORE/COPY/MOVE/EXPUNGE/SEARCH,
RFC822.SIZE, SEARCH by UID/SINCE/YOUNGER/DELETED, STARTTLS, SASL EXTERNAL and XOAUTH2 (inline with
SASL-IR, else after a continuation; XOAUTH2 errors reported as a continuation, as big providers do), IDLE
notifications to every connection of the user, and faults: a connection dropped in the middle of a FETCH,
a STARTTLS reply followed by injected bytes, new mail announced after a SEARCH result that leaves it out.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aioimaplib.imap_testing_server import AUTH, IDLE, ImapProtocol, Mail, ServerState

BASE_CAPABILITIES = "IDLE UIDPLUS MOVE ENABLE NAMESPACE STARTTLS SASL-IR AUTH=XOAUTH2 AUTH=EXTERNAL WITHIN"


class RawMail(Mail):  # type: ignore[misc]
    """A message kept as the bytes it was delivered with, and the time it arrived (INTERNALDATE)."""

    def __init__(self, raw: bytes, date: datetime) -> None:
        super().__init__(None, date=date)
        self.raw = raw

    def as_bytes(self) -> bytes:
        return self.raw


class _State(ServerState):  # type: ignore[misc]
    """aioimaplib's server state with UIDs that strictly grow per mailbox (RFC 3501 §2.3.1.1)."""

    def __init__(self, fake: FakeImap) -> None:
        super().__init__()
        self.fake = fake
        self.uidnext: dict[tuple[str, str], int] = {}

    def add_mail(self, to: str, mail: Any, mailbox: str = "INBOX") -> int:
        messages = self.mailboxes.setdefault(to, {}).setdefault(mailbox, [])
        mail.id = len(messages) + 1
        mail.uid = self.uidnext.get((to, mailbox), 1)
        self.uidnext[(to, mailbox)] = mail.uid + 1
        mail.flags = list(mail.flags)
        messages.append(mail)
        return int(mail.uid)

    def max_uid(self, user: str, mailbox: str) -> int:
        return self.uidnext.get((user, mailbox), 1) - 1

    def imap_receive(self, user: str, mail: Any, mailbox: str) -> int:
        uid = self.add_mail(user, mail, mailbox)
        for protocol in self.fake.connections:
            if protocol.user_login == user and protocol.user_mailbox == mailbox:
                protocol.notify_new_mail(len(self.mailboxes[user][mailbox]))
        return uid


def parse_set(text: str, highest: int) -> set[int]:
    """``1:3,7,9:*`` → the numbers it names (``*`` is the highest in use)."""
    numbers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition(":")
        low = highest if first == "*" else int(first)
        high = low if not last else (highest if last == "*" else int(last))
        numbers.update(range(min(low, high), max(low, high) + 1))
    return numbers


class FakeImapProtocol(ImapProtocol):  # type: ignore[misc]
    """One connection to the fake server."""

    def __init__(self, fake: FakeImap) -> None:
        super().__init__(fake.state, 0, fake.capabilities, asyncio.get_running_loop())
        self.fake = fake
        self.sasl: tuple[str, str, bool] | None = None

    @property  # type: ignore[misc]
    def uidvalidity(self) -> int:
        return self.fake.uidvalidity

    @uidvalidity.setter
    def uidvalidity(self, value: int) -> None:
        pass  # aioimaplib sets a per-connection value; the fake keeps one the test controls

    def data_received(self, data: bytes) -> None:
        # aioimaplib's command pattern refuses commas (UID sets) and "/" (base64): split on spaces only.
        for line in data.splitlines():
            if self.sasl is not None:  # the client's answer to a "+" continuation (RFC 3501 §6.2.2)
                tag, mechanism, failed = self.sasl
                self.sasl = None
                if failed:
                    self.send_tagged_line(tag, "NO [AUTHENTICATIONFAILED] invalid token")
                else:
                    self.authenticate(tag, mechanism, line.decode() or "=")
                continue
            words = line.decode().split()
            if not words:
                continue
            if self.state == IDLE:
                self.exec_command(None, words)
            else:
                self.exec_command(words[0], words[1:])

    def connection_made(self, transport: Any) -> None:
        self.fake.connections.append(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self in self.fake.connections:
            self.fake.connections.remove(self)
        super().connection_lost(error)

    def _messages(self) -> list[Any]:
        return list(self.server_state.get_mailbox_messages(self.user_login, self.user_mailbox) or [])

    def _highest(self, by_uid: bool) -> int:
        messages = self._messages()
        if not messages:
            return 0
        return max(m.uid for m in messages) if by_uid else len(messages)

    def _select_args(self, args: tuple[str, ...]) -> tuple[bool, list[str]]:
        if args and args[0] == "uid":
            return True, list(args[1:])
        return False, list(args)

    def capability(self, tag: str, *args: str) -> None:
        self.send_untagged_line(f"CAPABILITY IMAP4rev1 {self.capabilities}")
        self.send_tagged_line(tag, "OK Capability completed")

    def starttls(self, tag: str, *args: str) -> None:
        assert self.fake.tls is not None
        self.transport.pause_reading()  # the client's handshake must not reach the IMAP parser
        extra = b"* OK injected\r\n" if self.fake.inject_after_starttls else b""
        self.send(f"{tag} OK Begin TLS negotiation now\r\n".encode() + extra)
        task = asyncio.ensure_future(self._upgrade(self.fake.tls))
        self.fake.background.add(task)
        task.add_done_callback(self.fake.background.discard)

    async def _upgrade(self, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.transport = await loop.start_tls(self.transport, self, context, server_side=True)
        except (ssl.SSLError, ConnectionError, OSError):
            self.transport.abort()

    def login(self, tag: str, user: str, password: str, *args: str) -> None:
        user, password = user.strip('"'), password.strip('"')
        expected = self.fake.passwords.get(user)
        if expected is not None and expected != password:
            self.send_tagged_line(tag, "NO [AUTHENTICATIONFAILED] Authentication failed.")
            return
        self._logged_in(tag, user)

    def authenticate(self, tag: str, mechanism: str, initial: str | None = None) -> None:
        if initial is None:  # no SASL-IR: ask for the response
            self.sasl = (tag, mechanism, False)
            self.send_untagged_line("", continuation=True)
            return
        decoded = base64.b64decode(initial).decode() if initial != "=" else ""
        if mechanism == "EXTERNAL":
            peer = self.transport.get_extra_info("peercert")
            if not peer:
                self.send_tagged_line(tag, "NO [AUTHENTICATIONFAILED] no client certificate")
                return
            names = [value for kind, value in peer.get("subjectAltName", ()) if kind == "email"]
            self._logged_in(tag, decoded or names[0])
        elif mechanism == "XOAUTH2":
            user_part, _, rest = decoded.partition("\x01")
            user = user_part.removeprefix("user=")
            token = rest.split("\x01")[0].removeprefix("auth=Bearer ")
            if self.fake.tokens.get(user) != token:
                # As Gmail and Outlook do: the error as a continuation, the NO after the client's empty line.
                self.sasl = (tag, mechanism, True)
                self.send_untagged_line("eyJzdGF0dXMiOiI0MDEifQ==", continuation=True)
                return
            self._logged_in(tag, user)
        else:
            self.send_tagged_line(tag, f"NO unsupported mechanism {mechanism}")

    def _logged_in(self, tag: str, user: str) -> None:
        self.user_login = user
        self.server_state.login(user, self)
        self.state = AUTH
        self.fake.logins.append(user)
        self.send_tagged_line(tag, "OK Logged in")

    def search(self, tag: str, *args: str) -> None:
        by_uid, criteria = self._select_args(args)
        if criteria[:1] == ["CHARSET"]:
            criteria = criteria[2:]
        found = self._messages()
        now = datetime.now(UTC)
        while criteria:
            key = criteria.pop(0).upper()
            if key == "UID":
                wanted = parse_set(criteria.pop(0), self._highest(True))
                found = [m for m in found if m.uid in wanted]
            elif key == "YOUNGER":
                limit = now - timedelta(seconds=int(criteria.pop(0)))
                found = [m for m in found if m.date >= limit]
            elif key == "SINCE":
                since = datetime.strptime(criteria.pop(0), "%d-%b-%Y").replace(tzinfo=UTC)
                found = [m for m in found if m.date >= since]
            elif key == "DELETED":
                found = [m for m in found if r"\Deleted" in m.flags]
        if self.fake.hide_from_search and found:
            # As Dovecot does when mail lands during a SEARCH: left out of the result, announced after it.
            self.fake.hide_from_search -= 1
            found = found[:-1]
            late = f"{len(self._messages())} EXISTS"
        else:
            late = ""
        numbers = " ".join(str(m.uid if by_uid else m.id) for m in found)
        self.send_untagged_line(f"SEARCH {numbers}".rstrip())
        if late:
            self.send_untagged_line(late)
        self.send_tagged_line(tag, "OK SEARCH completed")

    def fetch(self, tag: str, *args: str) -> None:
        by_uid, rest = self._select_args(args)
        wanted = parse_set(rest[0], self._highest(by_uid))
        items = " ".join(rest[1:])
        for message in self._messages():
            if (message.uid if by_uid else message.id) not in wanted:
                continue
            raw = message.as_bytes()
            parts = [f"UID {message.uid}"]
            if "RFC822.SIZE" in items:
                parts.append(f"RFC822.SIZE {len(raw)}")
            if "FLAGS" in items:
                parts.append(f"FLAGS ({' '.join(message.flags)})")
            data = f"* {message.id} FETCH ({' '.join(parts)}".encode()
            body = "BODY[]" in items or "BODY.PEEK[]" in items
            if body:
                data += b" BODY[] {%d}\r\n" % len(raw) + raw
            data += b")\r\n"
            if body and self.fake.drop_during_fetch:
                self.fake.drop_during_fetch -= 1
                self.transport.write(data[: len(data) // 2])
                self.transport.abort()
                return
            self.send(data)
        self.send_tagged_line(tag, "OK Fetch completed")

    def store(self, tag: str, *args: str) -> None:
        by_uid, rest = self._select_args(args)
        wanted = parse_set(rest[0], self._highest(by_uid))
        flags = " ".join(rest[2:]).strip("()").split()
        for message in self._messages():
            if (message.uid if by_uid else message.id) in wanted:
                message.flags.extend(f for f in flags if f not in message.flags)
        self.send_tagged_line(tag, "OK Store completed")

    def copy(self, tag: str, *args: str) -> None:
        by_uid, rest = self._select_args(args)
        wanted = parse_set(rest[0], self._highest(by_uid))
        for message in self._messages():
            if (message.uid if by_uid else message.id) in wanted:
                self.server_state.add_mail(self.user_login, RawMail(message.raw, message.date), rest[1])
        self.send_tagged_line(tag, "OK Copy completed")

    def move(self, tag: str, *args: str) -> None:
        self.fake.moves += 1
        by_uid, rest = self._select_args(args)
        wanted = parse_set(rest[0], self._highest(by_uid))
        for message in self._messages():
            if (message.uid if by_uid else message.id) in wanted:
                self.server_state.remove(message, self.user_login, self.user_mailbox)
                self.server_state.add_mail(self.user_login, RawMail(message.raw, message.date), rest[1])
        self.send_tagged_line(tag, "OK Move completed")

    def expunge(self, tag: str, *args: str) -> None:
        by_uid, rest = self._select_args(args)
        wanted = parse_set(rest[0], self._highest(True)) if by_uid else None
        for message in self._messages():
            if r"\Deleted" in message.flags and (wanted is None or message.uid in wanted):
                self.server_state.remove(message, self.user_login, self.user_mailbox)
        self.send_tagged_line(tag, "OK Expunge completed")


@dataclass
class FakeImap:
    """The server, its mailboxes and its fault switches; start with ``await FakeImap(...).start()``."""

    capabilities: str = BASE_CAPABILITIES
    tls: ssl.SSLContext | None = None
    implicit_tls: bool = False
    uidvalidity: int = 1000
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    drop_during_fetch: int = 0
    hide_from_search: int = 0
    inject_after_starttls: bool = False
    moves: int = 0
    connections: list[FakeImapProtocol] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0

    def __post_init__(self) -> None:
        self.state = _State(self)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> FakeImap:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: FakeImapProtocol(self), "127.0.0.1", 0, ssl=self.tls if self.implicit_tls else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.drop_connections()
        for task in list(self.background):
            task.cancel()
        await asyncio.sleep(0)  # let the aborted transports run their connection_lost

    def drop_connections(self) -> None:
        for protocol in list(self.connections):
            protocol.transport.abort()

    def deliver(self, user: str, raw: bytes, mailbox: str = "INBOX", date: datetime | None = None) -> int:
        """Put a message in a mailbox as the operator's MTA would; its UID."""
        return self.state.imap_receive(user, RawMail(raw, date or datetime.now(UTC)), mailbox)

    def messages(self, user: str, mailbox: str = "INBOX") -> list[Any]:
        return list(self.state.mailboxes.get(user, {}).get(mailbox, []))

    def renumber(self, user: str, mailbox: str = "INBOX", *, newest_first: bool = False) -> None:
        """What a server restored from backup does: a new UIDVALIDITY, and UIDs given again from 1."""
        self.uidvalidity += 1
        self.state.uidnext[(user, mailbox)] = 1
        messages = self.state.mailboxes[user][mailbox]
        if newest_first:
            messages.reverse()
        self.state.mailboxes[user][mailbox] = []
        for message in messages:
            self.state.add_mail(user, message, mailbox)


def uids(messages: Iterable[Any]) -> list[int]:
    return [m.uid for m in messages]

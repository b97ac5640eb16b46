"""The SMTP protocol of the inbound listeners (submission and operator port 25), on aiosmtpd.

Who the client is (AUTH over TLS, client certificate, allowed network), RFC 3461 DSN parameters, limits, and
turning intake's verdicts into replies (``replies``). Protocol only: no SQL, no MIME; the store is reached
through the ``IntakePort`` it is given, so ``250`` after DATA means intake committed the message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import inspect
import ipaddress
import logging
import re
import ssl
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    _AuthMechAttr,
    syntax,
)

from gateway import memory, metrics
from gateway.inbound import replies
from gateway.inbound.arrival import Arrival, IntakeResult, Recipient, Verdict
from gateway.inbound.auth_throttle import AuthThrottle
from gateway.inbound.dkim_check import DkimVerifier, claims_authserv_id
from gateway.inbound.inflight import Holding, InflightBytes
from gateway.inbound.instructions import is_submission_field
from gateway.inbound.parameters import mail_parameters, rcpt_parameters
from gateway.inbound.spool import SPOOL_THRESHOLD, Spool
from gateway.logsetup import log_event
from gateway.tls import common_name
from mappers import wire
from mappers.header_fields import plain_angle_addr
from mappers.headers import remove_fields

if TYPE_CHECKING:
    from asyncio.streams import _ReaduntilBuffer

log = logging.getLogger(__name__)

ListenerKind = Literal["submission", "operator"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A message whose line ends were never looked at (``bare_line_end`` None) is refused with the bare ones.
_DATA_FAULTS: tuple[tuple[Callable[[DsnEnvelope, bytes], bool], str, str], ...] = (
    (lambda envelope, data: envelope.bare_line_end is not False, replies.BARE_LINE_END, "bare-line-end"),
    (lambda envelope, data: b"\x00" in data, replies.NUL_IN_DATA, "nul"),
)
_SOURCE_ROUTE = re.compile(r"\s*<\s*@")
_END_OF_DATA = b"\r\n.\r\n"
_LINE_DOT = b"\r\n."


class BareLineFeedError(Exception):
    """A command line ended by LF alone (RFC 5321 § 2.3.8: CRLF only); the command is not run."""


class CommandReader(asyncio.StreamReader):
    """aiosmtpd's stream reader, refusing command lines not ended by CRLF.

    aiosmtpd reads a command with ``readuntil()`` and its separator left out, and message data and AUTH
    answers with an explicit one: only the former is checked, so the message data keeps its own reply
    (``replies.BARE_LINE_END``). A server that takes LF alone reads commands differently from one that
    does not, which is how SMTP smuggling hides a second message.
    """

    async def readuntil(self, separator: _ReaduntilBuffer | None = None) -> bytes:
        line = await super().readuntil(b"\n" if separator is None else separator)
        if separator is None and not line.endswith(b"\r\n"):
            raise BareLineFeedError
        return line

    async def read_data(self, sink: Spool, size_limit: int, admit: Callable[[int], bool]) -> bool:
        """The message data up to the lone dot (RFC 5321 § 4.1.1.4) written to ``sink`` as it arrives,
        still dot-stuffed, its last CRLF kept; False once more than ``size_limit`` octets (0: no limit)
        came, ``admit`` refused the octets received so far (the bytes-in-flight cap) or ``sink`` could not
        keep them: then read to the dot and dropped.

        The stream buffer is searched for the dot and emptied into ``sink`` as octets come, where
        aiosmtpd reads a line at a time and joins them (a 20 MB message cost its size three times over)
        and where one search over a buffer grown to the whole message then held it twice (issue 11).
        Octets after the dot stay in the buffer for the next command (pipelining). Leans on
        ``StreamReader``'s ``_buffer``/``_wait_for_data``, as ``readuntil`` itself does.
        """
        buffer: bytearray = self._buffer  # type: ignore[attr-defined]  # StreamReader internals
        while len(buffer) < 3:
            await self._wait_or_fail()
        if buffer.startswith(b".\r\n"):
            del buffer[:3]
            self._maybe_resume_transport()  # type: ignore[attr-defined]
            return True
        moved, keep, dot_lines = 0, True, False
        while True:
            found, dot_lines = _end_of_data(buffer, dot_lines)
            if found >= 0:
                break
            # Every octet but those that may start the dot line goes on (a CRLF already moved on cannot
            # end the data: the dot line's own CRLF.CRLF is searched whole, 4 octets are kept back).
            done = max(0, len(buffer) - len(_END_OF_DATA) + 1)
            keep = keep and not (size_limit and moved + done > size_limit) and admit(moved + len(buffer))
            if keep:
                with memoryview(buffer) as view, view[:done] as chunk:
                    keep = sink.write(chunk)
            moved += done
            del buffer[:done]
            self._maybe_resume_transport()  # type: ignore[attr-defined]
            await self._wait_or_fail()
        end = found + 2
        keep = keep and not (size_limit and moved + end > size_limit) and admit(moved + end)
        if keep:
            with memoryview(buffer) as view, view[:end] as chunk:
                keep = sink.write(chunk)
        del buffer[: found + len(_END_OF_DATA)]
        self._maybe_resume_transport()  # type: ignore[attr-defined]
        sink.dot_lines = dot_lines
        return keep

    async def _wait_or_fail(self) -> None:
        if self._eof:  # type: ignore[attr-defined]
            raise asyncio.IncompleteReadError(bytes(self._buffer), None)  # type: ignore[attr-defined]
        await self._wait_for_data("read_data")  # type: ignore[attr-defined]


def _end_of_data(buffer: bytearray, dot_lines: bool) -> tuple[int, bool]:
    """Where the dot line's CRLF.CRLF starts in ``buffer`` (-1: not there yet), and whether a line before
    it starts with a dot (``dot_lines``: one already did, before ``buffer``).

    While no line has, the search is for CRLF "." (the start of the dot line or of a stuffed one): one
    pass says both, and ``_unstuffed`` skips its own over the whole message (issue 16). A CRLF "." in the
    buffer's last four octets is decided when more come (``read_data`` keeps those four back).
    """
    if dot_lines:
        return buffer.find(_END_OF_DATA), True
    found = buffer.find(_LINE_DOT)
    if found < 0 or len(buffer) < found + len(_END_OF_DATA):
        return -1, False
    if buffer.startswith(_END_OF_DATA, found):
        return found, False
    return buffer.find(_END_OF_DATA, found), True


class IntakePort(Protocol):
    """What the listener needs of intake (``gateway.inbound.intake.Intake``)."""

    async def check_sender(self, arrival: Arrival) -> Verdict | None: ...

    async def check_recipient(self, arrival: Arrival, address: str) -> Verdict: ...

    async def receive(self, arrival: Arrival) -> IntakeResult: ...


@dataclass(frozen=True)
class ListenerConfig:
    """Everything one listener's connections obey; replaced as a whole on reload."""

    kind: ListenerKind
    hostname: str
    tls: ssl.SSLContext
    require_starttls: bool = True
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 100
    max_commands: int = 1000
    timeout: float = 300.0
    connections_per_peer: int = 20
    max_connections: int = 200
    max_inflight_bytes: int = 0
    spool_threshold: int = SPOOL_THRESHOLD
    spool_dir: Path | None = None  # the state directory; None: the system's temporary directory
    credentials: Mapping[str, str] = field(default_factory=dict)
    certificate_clients: frozenset[str] = frozenset()
    networks: tuple[tuple[Network, str], ...] = ()
    dkim: DkimVerifier | None = None
    dkim_refuse: bool = False
    check_password: Callable[[str, str], bool] | None = None


class ConnectionCount:
    """The sessions open on every SMTP listener together, against ``inbound.max_connections``.

    One per daemon, shared by the listeners like ``InflightBytes``: the cap is on what the process holds,
    not on each port. All of it runs on the daemon's event loop: no lock.
    """

    def __init__(self) -> None:
        self.open = 0


class Connections:
    """One listener's open sessions and their count per peer address (for the per-peer limit and the stop),
    counted also in the daemon's ``ConnectionCount`` for the global cap."""

    def __init__(self, count: ConnectionCount | None = None) -> None:
        self.count = count or ConnectionCount()
        self.per_peer: dict[str, int] = {}
        self.sessions: set[GatewaySMTP] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self, session: GatewaySMTP, host: str, limit: int, total: int) -> str | None:
        """None when ``session`` may go on, else why not (``limit`` per peer here, ``total`` on all the
        listeners sharing ``count``)."""
        if total and self.count.open >= total:
            return "max-connections"
        if limit and self.per_peer.get(host, 0) >= limit:
            return "connections-per-peer"
        self.per_peer[host] = self.per_peer.get(host, 0) + 1
        self.sessions.add(session)
        self.count.open += 1
        self.idle.clear()
        return None

    def leave(self, session: GatewaySMTP, host: str) -> None:
        if session not in self.sessions:
            return
        left = self.per_peer.get(host, 1) - 1
        if left:
            self.per_peer[host] = left
        else:
            self.per_peer.pop(host, None)
        self.sessions.discard(session)
        self.count.open -= 1
        if not self.sessions:
            self.idle.set()
        if not self.count.open:
            memory.release()


class DsnEnvelope(Envelope):
    """aiosmtpd's envelope plus what RFC 3461 and our listeners keep per transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.envid: str | None = None
        self.ret: str | None = None
        self.identity: str | None = None
        self.recipients: list[Recipient] = []
        self.size: int | None = None
        # Found once as DATA is read, for the line limit and the refusal; None until then.
        self.bare_line_end: bool | None = None


class QuietSession(Session):
    """aiosmtpd's session without its legacy ``login_data``: aiosmtpd 1.4 still sets it after every AUTH
    and logs a deprecation warning each time, though we use the supported ``auth_data``. Never read."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


MAX_AUTH_FAILURES = 3
"""Failed logins one connection may make; the last is answered ``421`` and the connection closed."""

# A well-formed scrypt hash (N = 2^15) that no password matches, checked for logins that do not exist.
_UNKNOWN_LOGIN = "scrypt$15$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _capture(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    """aiosmtpd calls authenticators synchronously: keep the credentials, check them off the loop later."""
    return AuthResult(success=True, auth_data=data)


@dataclass(frozen=True)
class _Members:
    """What aiosmtpd's ``SMTP.__init__`` finds by name on a server and its handler, as functions of their
    classes (``_members``); each session binds them to itself."""

    commands: tuple[tuple[str, Callable[..., Any]], ...]  # "MAIL", GatewaySMTP.smtp_MAIL counted
    mechanisms: tuple[tuple[str, Callable[..., Any], bool], ...]  # "PLAIN", SMTP.auth_PLAIN, is_builtin
    hooks: tuple[tuple[str, Callable[..., Any]], ...]  # "DATA", _Handler.handle_DATA
    ehlo_hook_ver: Literal["old", "new"] | None


_MEMBERS: dict[tuple[type[GatewaySMTP], type], _Members] = {}


def _counted(command: Callable[[GatewaySMTP, str | None], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``command`` run unless its connection already sent ``inbound.max_commands`` commands; with its
    ``@syntax`` attributes, which HELP reads."""

    @functools.wraps(command)
    async def counted(server: GatewaySMTP, arg: str | None) -> None:
        server._commands += 1
        if server.config.max_commands and server._commands > server.config.max_commands:
            await server.push(replies.TOO_MANY_COMMANDS)
            assert server.transport is not None
            server.transport.close()
            return
        await command(server, arg)

    return counted


def _members(server: type[GatewaySMTP], handler: type) -> _Members:
    """The ``smtp_*`` commands (``_counted``), ``auth_*`` mechanisms and ``handle_*`` hooks as aiosmtpd 1.4
    names them (``SMTP.__init__``), looked up once per pair of classes instead of once per connection."""
    known = _MEMBERS.get((server, handler))
    if known is not None:
        return known
    mechanisms: dict[str, tuple[Callable[..., Any], bool]] = {}
    for owner, builtin in ((server, True), (handler, False)):
        for attribute, function in inspect.getmembers(owner):
            if attribute.startswith("auth_"):
                default = attribute.replace("auth_", "").replace("__", "-")
                mechanisms[getattr(function, "__auth_mechanism_name__", default)] = (function, builtin)
    hooks = {m.replace("handle_", ""): getattr(handler, m) for m in dir(handler) if m.startswith("handle_")}
    ehlo = hooks.get("EHLO")
    # aiosmtpd's hook takes 5 arguments (4 in the deprecated form), counted on the bound method.
    arity = None if ehlo is None else len(inspect.signature(ehlo).parameters) - 1
    if arity not in (None, 4, 5):
        raise RuntimeError("Unsupported EHLO Hook")
    members = _MEMBERS[server, handler] = _Members(
        commands=tuple(
            (m.replace("smtp_", ""), _counted(getattr(server, m)))
            for m in dir(server)
            if m.startswith("smtp_")
        ),
        mechanisms=tuple((name, function, builtin) for name, (function, builtin) in mechanisms.items()),
        hooks=tuple(hooks.items()),
        ehlo_hook_ver=None if arity is None else "old" if arity == 4 else "new",
    )
    return members


class GatewaySMTP(SMTP):
    """One connection of an inbound listener.

    MAIL and RCPT are our own (DSN parameters, policy); the rest is aiosmtpd's. The overrides lean on
    aiosmtpd 1.4 internals (``_getaddr``, ``_smtp_methods``, ``_timeout_cb``…), hence ``<2`` in pyproject.
    """

    def __init__(
        self,
        config: ListenerConfig,
        intake: IntakePort,
        connections: Connections,
        throttle: AuthThrottle,
        inflight: InflightBytes,
    ) -> None:
        """aiosmtpd's ``SMTP.__init__`` for our arguments, without its introspection of the class.

        aiosmtpd looks up every ``smtp_*``, ``auth_*`` and ``handle_*`` attribute by name
        (``inspect.getmembers``, ``dir``) for each connection: about 9 % of the daemon's CPU with one
        message per connection (issue 16). The names depend only on the classes, so ``_members`` finds them
        once and each session binds them; the attributes set are aiosmtpd 1.4's own (a test compares them
        with what ``SMTP.__init__`` sets).
        """
        self.config = config
        self.intake = intake
        self.connections = connections
        self.throttle = throttle
        self.inflight = inflight
        self._counted: str | None = None
        self._commands = 0
        self._auth_failures = 0
        self.__ident__ = "mssgw"
        # A session is made by the listener's running loop; aiosmtpd's make_loop() finds it again under
        # warnings.catch_warnings(), which resets the warnings filters: 1.5 % of the daemon's CPU at 1 KiB.
        self.loop = asyncio.get_running_loop()
        # Our reader from the start: asyncio's StreamReaderProtocol takes its reader only here.
        asyncio.StreamReaderProtocol.__init__(
            self,
            CommandReader(limit=self.line_length_limit, loop=self.loop),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        handler = _Handler(self)
        self.event_handler = handler
        self.data_size_limit = config.max_message_size or None
        self.enable_SMTPUTF8 = False
        self._decode_data = False
        # Per session: aiosmtpd keeps one on the class, grown by every EHLO and cleared by every connection.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.hostname = config.hostname
        self.tls_context = config.tls
        self.require_starttls = config.require_starttls
        self._timeout_duration = config.timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = _capture
        self._auth_callback = None
        self._auth_required = False
        members = _members(type(self), type(handler))
        excluded = () if config.kind == "submission" else ("PLAIN", "LOGIN")
        self._auth_methods = {
            name: _AuthMechAttr(types.MethodType(function, self if builtin else handler), builtin)
            for name, function, builtin in members.mechanisms
            if name not in excluded
        }
        self._handle_hooks = {name: types.MethodType(function, handler) for name, function in members.hooks}
        self._ehlo_hook_ver = members.ehlo_hook_ver
        self._smtp_methods = {name: types.MethodType(function, self) for name, function in members.commands}
        self._enforce_call_limit = False

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the message read by ``CommandReader.read_data``: the same replies, size
        limit (counted before unstuffing) and line limit (a line longer than ``line_length_limit`` with
        its CRLF). A line that is long only across a bare CR or LF is refused for that line end instead
        (``handle_DATA``)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        cap = self.config.max_inflight_bytes
        if not self.inflight.fits(max(self._txn().size or 0, 1), cap):
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped
            await self._refuse_inflight()
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        assert isinstance(self._reader, CommandReader)
        holding = self.inflight.hold()
        spool = Spool(self.config.spool_threshold, self.config.spool_dir, self.inflight.memory)
        try:
            kept = await self._reader.read_data(spool, self.data_size_limit or 0, self._admit(holding, cap))
            if not kept:
                self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped
                await self._refuse_data(spool, holding)
                return
            # A large message waits (on disk or in the memory budget) for its turn: only a few are being
            # taken in from here to the commit, with the copies that makes.
            async with self.inflight.loading if spool.large else contextlib.nullcontext():
                data = await spool.read()
                # Unstuffing neither makes nor removes a bare CR or LF (it drops a dot after a CRLF):
                # one search serves the line limit here and the refusal in ``handle_DATA``.
                self._txn().bare_line_end = bare = wire.has_bare_line_end(data)
                if _long_line(data, self.line_length_limit, bare_line_end=bare):
                    del data
                    self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped
                    await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
                    return
                self.envelope.content = self.envelope.original_content = _unstuffed(
                    data, dot_lines=spool.dot_lines
                )
                del data
                status = await self._call_handler_hook("DATA")
                # The message leaves memory with the envelope, before the next one takes the turn.
                self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped
        finally:
            # Committed, refused, cut off or failed: the octets (and their share of the memory budget) are
            # no longer this transaction's.
            spool.close()
            holding.release()
        await self.push("250 OK" if status is MISSING else status)

    def _admit(self, holding: Holding, cap: int) -> Callable[[int], bool]:
        """Whether the octets received so far fit the bytes-in-flight cap. Octets arriving are activity:
        the session's timeout counts from the last of them (RFC 5321 § 4.5.3.2.6), not from DATA."""

        def admit(size: int) -> bool:
            self._reset_timeout()
            return holding.grow_to(size, cap)

        return admit

    async def _refuse_data(self, spool: Spool, holding: Holding) -> None:
        """The reply to data that was not kept: why, from the first thing that refused it."""
        if spool.error is not None:
            reason = errno.errorcode.get(spool.error.errno or 0, type(spool.error).__name__)
            log_event(log, "data-refused", logging.ERROR, peer=self._peer(), reason="spool", error=reason)
            full = spool.error.errno == errno.ENOSPC
            metrics.message_refused(self.config.kind, "spool")
            await self.push(replies.STORE_FULL if full else replies.LOCAL_ERROR)
        elif holding.refused:
            await self._refuse_inflight()
        else:
            await self.push("552 Error: Too much mail data")

    async def _refuse_inflight(self) -> None:
        """Too many octets in flight across the listeners: ``452 4.3.1``, the session goes on."""
        log_event(log, "data-refused", logging.WARNING, peer=self._peer(), reason="inflight-bytes")
        metrics.message_refused(self.config.kind, "inflight-bytes")
        await self.push(replies.INFLIGHT_FULL)

    def _create_envelope(self) -> DsnEnvelope:
        return DsnEnvelope()

    def _create_session(self) -> QuietSession:
        return QuietSession(self.loop)

    def _txn(self) -> DsnEnvelope:
        """The transaction's envelope (a method: aiosmtpd inspects every attribute when it starts)."""
        assert isinstance(self.envelope, DsnEnvelope)
        return self.envelope

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self._counted is None:
            # The first call (the second one comes after STARTTLS, on the same connection).
            host = str((transport.get_extra_info("peername") or ("?",))[0])
            config = self.config
            refused = self.connections.enter(self, host, config.connections_per_peer, config.max_connections)
            if refused is not None:
                log_event(log, "refused-connection", logging.WARNING, peer=host, reason=refused)
                assert isinstance(transport, asyncio.WriteTransport)
                reply = replies.TOO_MANY_CONNECTIONS if refused != "max-connections" else replies.BUSY
                transport.write(reply.encode("ascii") + b"\r\n")
                transport.close()
                return
            self._counted = host
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted is None:
            return  # refused in connection_made: aiosmtpd never saw it
        self.connections.leave(self, self._counted)
        self._counted = None
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2: say why before closing an idle session (aiosmtpd just closes).
        if isinstance(self.transport, asyncio.WriteTransport) and not self.transport.is_closing():
            self.transport.write(replies.TIMEOUT.encode("ascii") + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped

    async def push(self, status: str | bytes) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
        await super().push(replies.ascii_line(replies.REWRITTEN.get(text, text)))

    async def auth_PLAIN(self, _: object, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: object, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_LOGIN(_, args))

    async def _checked(self, result: AuthResult) -> AuthResult:
        """The password check, in a worker thread (scrypt is slow on purpose)."""
        data = result.auth_data
        if not result.success or not isinstance(data, LoginPassword):
            return result
        login = data.login.decode("utf-8", "replace")
        stored = self.config.credentials.get(login)
        check = self.config.check_password
        # An unknown login costs the same scrypt work as a known one: timing tells nothing about names.
        ok = check is not None and await asyncio.to_thread(
            check, data.password.decode("utf-8", "replace"), stored or _UNKNOWN_LOGIN
        )
        ok = ok and stored is not None
        log_event(log, "auth", logging.INFO if ok else logging.WARNING, peer=self._peer(), login=login, ok=ok)
        host = self._counted or "?"
        if ok:
            self.throttle.succeeded(host)
            return AuthResult(success=True, auth_data=login)
        return await self._failed(host)

    async def _failed(self, host: str) -> AuthResult:
        """A wrong login: wait longer with each failure from ``host``, close after the third here."""
        metrics.auth_failed(self.config.kind)
        self._auth_failures += 1
        failures, delay = self.throttle.failed(host)
        if delay:
            log_event(log, "auth-delayed", logging.WARNING, peer=self._peer(), failures=failures, delay=delay)
            await asyncio.sleep(delay)
        if self._auth_failures < MAX_AUTH_FAILURES:
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        log_event(log, "auth-disconnected", logging.WARNING, peer=self._peer(), failures=self._auth_failures)
        await self.push(replies.AUTH_FAILED_TOO_OFTEN)
        if self.transport is not None:
            self.transport.close()
        return AuthResult(success=False, handled=True)

    def _peer(self) -> str | None:
        peer = self.session.peer if self.session is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None

    def _peer_certificate(self) -> dict[str, Any] | None:
        if self.transport is None or self._tls_protocol is None:
            return None
        certificate = self.transport.get_extra_info("peercert")
        return certificate or None

    def _identity(self) -> str | None:
        """Who the client is: its AUTH login, its certificate's CN, or the client owning its network."""
        assert self.session is not None
        if self.session.authenticated and isinstance(self.session.auth_data, str):
            return self.session.auth_data
        certificate = self._peer_certificate()
        if certificate is not None:
            name = common_name(certificate)
            if self.config.kind == "operator" or name in self.config.certificate_clients:
                return name
        peer = self.session.peer
        if self.config.kind == "submission" and isinstance(peer, tuple):
            address = ipaddress.ip_address(peer[0])
            for network, client in self.config.networks:
                if address.version == network.version and address in network:
                    return client
        return None

    def _arrival(self, raw: bytes = b"") -> Arrival:
        envelope = self._txn()
        return Arrival(
            raw=raw,
            envelope_from=envelope.mail_from or "",
            recipients=tuple(envelope.recipients),
            source=self.config.kind,
            peer=self._peer(),
            envid=envelope.envid,
            ret=envelope.ret,
            authenticated_as=envelope.identity,
        )

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's, with a plain ``<local@domain>`` read directly (``plain_angle_addr``): aiosmtpd's
        defines a ``typing.Protocol`` class and runs the email package's address parser on every MAIL
        and RCPT, about 6 % of the daemon's CPU at 1 KiB (issue 16)."""
        plain = None if self.local_part_limit else plain_angle_addr(arg)
        if plain is not None:
            return plain
        found: tuple[str | None, str | None] = super()._getaddr(arg)
        return found

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        assert self.session is not None
        stripped = self._strip_command_keyword("FROM:", arg or "")
        address, params = self._getaddr(stripped) if stripped else (None, None)
        if address is None or params is None:
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address> [parameters]")
            return
        if self._txn().mail_from is not None:
            await self.push("503 5.5.1 Nested MAIL command: finish or RSET this transaction first")
            return
        parameters, refusal = mail_parameters(params, self.config.max_message_size)
        refusal = refusal or self._security_refusal()
        if refusal is None and not self.inflight.fits(parameters.size or 0, self.config.max_inflight_bytes):
            refusal = replies.INFLIGHT_FULL
        self._txn().envid, self._txn().ret = parameters.envid, parameters.ret
        self._txn().size = parameters.size
        if refusal is None:
            self._txn().identity = self._identity()
            if self.config.kind == "submission" and self._txn().identity is None:
                refusal = replies.AUTH_REQUIRED
        sender = "" if address == "<>" else address
        refusal = refusal or _source_route(stripped, replies.ROUTED_SENDER)
        if refusal is None:
            self._txn().mail_from = sender
            verdict = await self.intake.check_sender(self._arrival())
            if verdict is not None:
                refusal = verdict.reply
        if refusal is not None:
            log_event(log, "mail-refused", peer=self._peer(), reply=refusal[:9])
            metrics.message_refused(self.config.kind, replies.reason(refusal))
            self._set_rset_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped
            await self.push(refusal)
            return
        self._txn().mail_from = sender
        await self.push(replies.SENDER_OK)

    def _security_refusal(self) -> str | None:
        if self.config.require_starttls and self._tls_protocol is None:
            return replies.STARTTLS_REQUIRED
        if self.config.kind == "operator" and self._peer_certificate() is None:
            return replies.CERTIFICATE_REQUIRED
        return None

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        if self._txn().mail_from is None:
            await self.push("503 5.5.1 Need MAIL before RCPT")
            return
        stripped = self._strip_command_keyword("TO:", arg or "")
        address, params = self._getaddr(stripped) if stripped else (None, None)
        if not address or params is None:
            await self.push("501 5.5.4 Syntax: RCPT TO:<address> [parameters]")
            return
        recipient, refusal = rcpt_parameters(address, params)
        refusal = _source_route(stripped, replies.ROUTED_ADDRESS) or refusal
        if refusal is None and len(self._txn().recipients) >= self.config.max_recipients:
            refusal = replies.TOO_MANY_RECIPIENTS.format(self.config.max_recipients)
        if refusal is None:
            verdict = await self.intake.check_recipient(self._arrival(), address)
            refusal = None if verdict.code < 400 else verdict.reply
        if refusal is not None:
            log_event(log, "rcpt-refused", peer=self._peer(), reply=refusal[:9])
            metrics.message_refused(self.config.kind, replies.reason(refusal))
            await self.push(refusal)
            return
        self._txn().recipients.append(recipient)
        self._txn().rcpt_tos.append(address)
        await self.push(replies.RECIPIENT_OK)


def _long_line(data: bytes, limit: int, *, bare_line_end: bool) -> bool:
    """Whether a CRLF-ended line of ``data`` is longer than ``limit`` octets, its CRLF counted.

    Mail in CRLF (all that is accepted) is walked by windows of ``limit`` octets: the last CRLF of each
    (``rfind``) ends a run of short lines, and a window without one holds a long line. About ``limit``
    octets a step rather than a line, thirty times faster on 1 MiB of short lines than a ``find`` per
    line (issue 16). The regex stays for the rest (a bare CR or LF also ends a line there);
    ``bare_line_end`` says which ``data`` is (``wire.has_bare_line_end``).
    """
    if bare_line_end:
        return re.search(rb"(?m)^[^\r\n]{%d}" % (limit - 1), data) is not None
    start, longest = 0, limit - 1
    while len(data) - start >= longest:
        # The line from ``start`` is short when its CRLF starts within ``longest`` octets.
        end = data.rfind(b"\r\n", start, start + longest + 1)
        if end < 0:
            return True
        start = end + 2
    return False


def _unstuffed(data: bytes, *, dot_lines: bool) -> bytes:
    """``data`` without the dot that starts a line (RFC 5321 § 4.5.2); no copy when none does.

    ``dot_lines``: whether a line after the first may start with one (``Spool.dot_lines``); when none
    does, the whole message is not searched again (issue 16). ``bytes.replace`` returns ``data`` itself
    when nothing matches, so no search of its own is needed first either.
    """
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(_LINE_DOT, b"\r\n") if dot_lines else data


def _source_route(path: str | None, template: str) -> str | None:
    """``template`` with the path as given when it is a source route (``<@hop,@hop:a@b>``): aiosmtpd
    drops the "@hop:" part and keeps the rest, so refuse what the client asked, not that."""
    if path is None or not _SOURCE_ROUTE.match(path):
        return None
    return template.format(path.partition(">")[0].lstrip("<"))


class _Handler:
    """aiosmtpd's hooks for one connection: EHLO capabilities, DATA → intake, errors → 451."""

    def __init__(self, server: GatewaySMTP) -> None:
        self.server = server

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        kept = [
            r for r in responses if not r.startswith("250-AUTH") or self.server.config.kind == "submission"
        ]
        return [*kept[:-1], "250-DSN", "250-ENHANCEDSTATUSCODES", kept[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope, DsnEnvelope)
        raw = envelope.original_content or b""
        for fault, faulty, reason in _DATA_FAULTS:
            if fault(envelope, raw):
                log_event(log, "data-refused", logging.WARNING, peer=self.server._peer(), reason=reason)
                metrics.message_refused(self.server.config.kind, reason)
                return faulty
        config = self.server.config
        results = b""
        if config.dkim is not None:
            result = await config.dkim.check(raw)
            refusal = {"fail": replies.DKIM_FAILED, "temperror": replies.DKIM_UNAVAILABLE}.get(result.result)
            if refusal is not None and config.dkim_refuse:
                metrics.message_refused(config.kind, "dkim")
                return refusal.format(f"d={result.domain}")
            results = result.header(config.hostname)
        if config.kind == "operator":
            # Verified as received, then rid of what only we may write: results under our name (a peer's
            # would pass for ours downstream) and submission instructions (for our own software only).
            raw = remove_fields(
                raw, lambda f: is_submission_field(f) or claims_authserv_id(f, config.hostname)
            )
        raw = results + raw
        outcome = await self.server.intake.receive(self.server._arrival(raw))
        accepted = outcome.accepted
        if accepted:
            late = len(outcome.verdicts) - len(accepted)
            if late:
                # SMTP has one reply after DATA: recipients a rule refused only now get a DSN (intake).
                log_event(
                    log, "refused-after-data", logging.WARNING, queue_id=outcome.message_pk, recipients=late
                )
            return accepted[0].reply
        return outcome.verdicts[0].reply if outcome.verdicts else replies.LOCAL_ERROR

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BareLineFeedError):
            log_event(log, "command-refused", logging.WARNING, peer=self.server._peer(), reason="bare-lf")
            return replies.BARE_LF_COMMAND
        # A loop boundary (STYLE.md §5): one command failed, the connection and the daemon go on.
        log_event(log, "smtp-command-failed", logging.ERROR, exc_info=True, peer=self.server._peer())
        return replies.LOCAL_ERROR

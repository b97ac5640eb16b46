"""A real SMTP server that plays the MSSanté operator for integration and end-to-end tests.

It sits where the operator's submission server sits, after outbound/transports/smtp: aiosmtpd's ``SMTP``
protocol on an ephemeral loopback port, served by its own event loop in a background thread so that sync
tests, async tests and ``mssgw run`` subprocesses can all talk to it. It records what it accepted, fails on
demand from a script, and never relays anything anywhere.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, AnyStr, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.support.pki import CertKey

Stage = Literal["MAIL", "RCPT", "DATA"]
ScriptEntry = tuple[Stage, int, str] | tuple[Stage, int, str, str]

DEFAULT_SIZE_LIMIT = 32 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0
HOSTNAME = "smtp.operator.test.mssante.fr"

# RFC 3461 § 4.3/4.4 (RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT) and RFC 4954 § 5 (AUTH on MAIL).
_DSN_MAIL_PARAMS = frozenset({"RET", "ENVID"})
_DSN_RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One reply the operator gives instead of 250; ``address`` narrows it to one sender/recipient."""

    stage: Stage
    code: int
    text: str
    address: str | None = None

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class PeerTls:
    """What the TLS session showed about the client when a command arrived."""

    active: bool
    version: str | None = None
    cert_der: bytes | None = field(default=None, repr=False)
    subject: str | None = None
    cn: str | None = None
    emails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One transaction the operator answered 250 after DATA.

    ``mail_options`` and ``rcpt_options`` keep the client's spelling (aiosmtpd upper-cases its own copy,
    which would spoil ORCPT/ENVID xtext); ``rcpt_options[i]`` belongs to ``rcpt_tos[i]``.
    """

    mail_from: str
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    rcpt_options: tuple[tuple[str, ...], ...]
    content: bytes = field(repr=False)
    tls: PeerTls
    helo: str | None
    auth_login: str | None
    connection: int

    @property
    def tls_active(self) -> bool:
        return self.tls.active

    @property
    def peer_cn(self) -> str | None:
        return self.tls.cn

    @property
    def peer_subject(self) -> str | None:
        return self.tls.subject

    @property
    def mail_params(self) -> dict[str, str | bool]:
        """MAIL parameters by upper-cased keyword, values as sent (``True`` for a bare keyword)."""
        return _params(self.mail_options)

    def rcpt_params(self, recipient: str) -> dict[str, str | bool]:
        """RCPT parameters given with ``recipient`` (first match, case-insensitive)."""
        for address, options in zip(self.rcpt_tos, self.rcpt_options, strict=True):
            if address.lower() == recipient.lower():
                return _params(options)
        raise KeyError(recipient)

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True, slots=True)
class Refusal:
    """A scripted non-250 reply the operator actually gave."""

    stage: Stage
    code: int
    text: str
    mail_from: str | None
    address: str | None
    connection: int


def _params(options: Iterable[str]) -> dict[str, str | bool]:
    result: dict[str, str | bool] = {}
    for option in options:
        keyword, eq, value = option.partition("=")
        result[keyword.upper()] = value if eq else True
    return result


def _peer_tls(transport: asyncio.BaseTransport | None) -> PeerTls:
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return PeerTls(active=False)
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return PeerTls(active=True, version=ssl_object.version())
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = tuple(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        emails = ()
    return PeerTls(
        active=True,
        version=ssl_object.version(),
        cert_der=der,
        subject=cert.subject.rfc4514_string(),
        cn=str(cns[0].value) if cns else None,
        emails=emails,
    )


class _OperatorEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.raw_mail_options: tuple[str, ...] = ()
        self.raw_rcpt_options: list[tuple[str, ...]] = []


class _OperatorSMTP(SMTP):
    """aiosmtpd's protocol, taught the DSN/AUTH parameters and to remember their original spelling."""

    def __init__(self, operator: FakeOperator, serial: int, **kwargs: Any) -> None:
        super().__init__(_Handler(operator), **kwargs)
        self.operator = operator
        self.serial = serial
        self.raw_params: tuple[str, ...] = ()
        self.extra_params: frozenset[str] = frozenset()
        self.close_after_reply = False

    def _create_envelope(self) -> Envelope:
        return _OperatorEnvelope()

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        # aiosmtpd 1.4.6 answers 555 to any MAIL/RCPT parameter it does not know itself; the ones this
        # server advertised are removed from its view so that its check passes and the hooks see them.
        result = super()._getparams(params)
        if result is not None:
            for keyword in self.extra_params:
                result.pop(keyword, None)
        return result

    def _remember(self, arg: str | None, accepted: frozenset[str]) -> None:
        self.raw_params = ()
        self.extra_params = accepted
        if arg is not None and ">" in arg:
            self.raw_params = tuple(arg.rpartition(">")[2].split())

    async def smtp_MAIL(self, arg: str | None) -> None:
        accepted: frozenset[str] = frozenset()
        if self.operator.dsn:
            accepted |= _DSN_MAIL_PARAMS
        if self.operator.auth is not None:
            accepted |= {"AUTH"}
        self._remember(arg, accepted)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self._remember(arg, _DSN_RCPT_PARAMS if self.operator.dsn else frozenset())
        await super().smtp_RCPT(arg)

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        # RFC 5321 § 3.8: a 421 reply announces that the server closes the channel.
        if self.close_after_reply and self.transport is not None:
            self.close_after_reply = False
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.operator._protocol_connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.operator._protocol_lost(self)


class _Handler:
    """aiosmtpd hooks: each defers to the operator's script, then records."""

    def __init__(self, operator: FakeOperator) -> None:
        self.operator = operator

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # A 5-argument EHLO hook replaces aiosmtpd's list, so it must also remember the client's name.
        session.host_name = hostname
        lines = [line[4:] for line in responses]
        if self.operator.auth is None:
            lines = [line for line in lines if not line.startswith("AUTH")]
        extra = []
        if self.operator.pipelining:
            extra.append("PIPELINING")
        if self.operator.dsn:
            extra.append("DSN")
        extra.append("ENHANCEDSTATUSCODES")
        lines[-1:-1] = extra
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(
        self,
        server: _OperatorSMTP,
        session: Session,
        envelope: _OperatorEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.operator.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        refusal = self.operator._scripted(server, "MAIL", None, address)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.raw_mail_options = server.raw_params
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: _OperatorSMTP,
        session: Session,
        envelope: _OperatorEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.operator._scripted(server, "RCPT", envelope.mail_from, address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.raw_rcpt_options.append(server.raw_params)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: _OperatorSMTP, session: Session, envelope: _OperatorEnvelope) -> str:
        return await self.operator._data(server, session, envelope)

    async def handle_exception(self, error: Exception) -> str:
        # A failed STARTTLS handshake (no or untrusted client certificate, untrusted server for the
        # client) is an expected outcome here: record it instead of logging a traceback.
        self.operator._failed(error)
        return "451 4.3.0 Fake operator error: " + type(error).__name__


def _authenticator(
    credentials: tuple[str, str],
) -> Callable[[SMTP, Session, Envelope, str, object], AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        ok = (login, data.password.decode("utf-8", "replace")) == credentials
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    return authenticate


@dataclass
class _State:
    messages: list[ReceivedMessage] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    script: list[ScriptedReply] = field(default_factory=list)
    connections: int = 0
    transactions: int = 0
    held: int = 0
    tls_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class FakeOperator:
    """The operator's SMTP server on 127.0.0.1:``port``; use :meth:`start`/:meth:`stop` or ``with``.

    TLS: ``cert`` is the server chain+key (``None``: no TLS at all, STARTTLS not offered). With
    ``implicit_tls`` the socket speaks TLS from the first byte (SMTPS); otherwise STARTTLS is offered and,
    with ``require_starttls``, demanded before MAIL (RFC 3207 § 4: 530). ``client_ca`` is the bundle the
    client certificate must chain to; ``require_client_cert`` makes it mandatory (``CERT_REQUIRED``, so a
    client without a trusted certificate fails the handshake), otherwise it is only recorded.
    """

    def __init__(
        self,
        *,
        cert: CertKey | None,
        client_ca: Path | None = None,
        require_starttls: bool = True,
        require_client_cert: bool = True,
        implicit_tls: bool = False,
        size_limit: int | None = DEFAULT_SIZE_LIMIT,
        auth: tuple[str, str] | None = None,
        auth_required: bool = False,
        dsn: bool = True,
        pipelining: bool = True,
        hostname: str = HOSTNAME,
    ) -> None:
        if cert is None and (require_starttls or require_client_cert or implicit_tls):
            raise ValueError(
                "a plain-text operator (cert=None) needs require_starttls=False, "
                "require_client_cert=False and implicit_tls=False"
            )
        if require_client_cert and client_ca is None:
            raise ValueError("require_client_cert=True needs client_ca")
        if auth_required and auth is None:
            raise ValueError("auth_required=True needs auth=(login, password)")
        self.cert = cert
        self.client_ca = client_ca
        self.require_starttls = require_starttls and not implicit_tls
        self.require_client_cert = require_client_cert
        self.implicit_tls = implicit_tls
        self.size_limit = size_limit
        self.auth = auth
        self.auth_required = auth_required
        self.dsn = dsn
        self.pipelining = pipelining
        self.hostname = hostname
        self.tls_context = self._make_tls_context()
        self.port = 0
        self._cond = threading.Condition(threading.RLock())
        self._state = _State()
        self._serials = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._live: set[_OperatorSMTP] = set()
        self._gate: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def _make_tls_context(self) -> ssl.SSLContext | None:
        if self.cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert.cert, self.cert.key)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return context

    def start(self) -> FakeOperator:
        """Bind an ephemeral port and serve; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("fake operator already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name="fake-operator", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(DEFAULT_TIMEOUT)
        return self

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    async def _serve(self) -> None:
        assert self._loop is not None
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await self._loop.create_server(
            self._protocol,
            host="127.0.0.1",
            port=0,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _protocol(self) -> _OperatorSMTP:
        # Called once per accepted TCP connection, before any TLS handshake: the honest count.
        with self._cond:
            self._state.connections += 1
            self._cond.notify_all()
        return _OperatorSMTP(
            self,
            next(self._serials),
            data_size_limit=self.size_limit or None,
            hostname=self.hostname,
            ident="fake MSSante operator",
            tls_context=None if self.implicit_tls else self.tls_context,
            require_starttls=self.require_starttls,
            # On an implicit-TLS socket aiosmtpd does not know the session is encrypted, so its own
            # "AUTH only after STARTTLS" rule would hide AUTH; and its auth_required would then warn.
            # The handler enforces auth_required at MAIL instead.
            auth_require_tls=not self.implicit_tls,
            authenticator=_authenticator(self.auth) if self.auth is not None else None,
            loop=self._loop,
        )

    def stop(self) -> None:
        """Close the listener and every open session, then end the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(DEFAULT_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(DEFAULT_TIMEOUT)
            loop.close()
            self._loop = self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None and self._gate is not None
        self._server.close()
        self._gate.set()
        for protocol in list(self._live):
            if isinstance(protocol.transport, asyncio.WriteTransport):
                protocol.transport.abort()
        await self._server.wait_closed()
        # Let the session tasks see their cancellation, so no task is destroyed while pending.
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        if pending:
            await asyncio.wait(pending, timeout=DEFAULT_TIMEOUT)

    def __enter__(self) -> FakeOperator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _protocol_connected(self, protocol: _OperatorSMTP) -> None:
        self._live.add(protocol)

    def _protocol_lost(self, protocol: _OperatorSMTP) -> None:
        self._live.discard(protocol)

    # -- failing on demand -------------------------------------------------------------------------

    def script(self, *replies: ScriptEntry | ScriptedReply) -> None:
        """Queue replies given instead of 250, each used once, in order, at the first matching stage.

        ``("DATA", 451, "4.3.0 try later")`` refuses the next DATA; ``("RCPT", 550, "5.1.1 unknown",
        "x@y")`` refuses that recipient only. A 421 also closes the connection. After the script: 250.
        """
        entries = [r if isinstance(r, ScriptedReply) else ScriptedReply(*r) for r in replies]
        for entry in entries:
            if entry.stage not in ("MAIL", "RCPT", "DATA") or not 400 <= entry.code <= 599:
                raise ValueError(f"not a failing reply: {entry}")
        with self._cond:
            self._state.script.extend(entries)

    def _scripted(
        self, server: _OperatorSMTP, stage: Stage, mail_from: str | None, address: str
    ) -> str | None:
        with self._cond:
            for index, entry in enumerate(self._state.script):
                if entry.stage == stage and (
                    entry.address is None or entry.address.lower() == address.lower()
                ):
                    del self._state.script[index]
                    self._state.refusals.append(
                        Refusal(
                            stage=stage,
                            code=entry.code,
                            text=entry.text,
                            mail_from=address if stage == "MAIL" else mail_from,
                            address=None if stage == "MAIL" else address,
                            connection=server.serial,
                        )
                    )
                    self._cond.notify_all()
                    server.close_after_reply = entry.code == 421
                    return entry.line
        return None

    def _failed(self, error: Exception) -> None:
        with self._cond:
            if isinstance(error, TLSSetupException):
                cause = error.__cause__
                reason = getattr(cause, "reason", None) or type(cause).__name__
                self._state.tls_failures.append(str(reason))
            else:
                self._state.errors.append(f"{type(error).__name__}: {error}")
            self._cond.notify_all()

    # -- holding DATA, to catch deliveries in flight -----------------------------------------------

    def hold(self) -> None:
        """Make every following DATA wait (after the content arrived, before the reply) until release."""
        self._call(lambda gate: gate.clear())

    def release(self) -> None:
        """Answer the held DATA commands and stop holding."""
        self._call(lambda gate: gate.set())

    def _call(self, action: Callable[[asyncio.Event], None]) -> None:
        loop, gate = self._loop, self._gate
        if loop is None or gate is None:
            raise RuntimeError("fake operator not started")

        async def run() -> None:
            action(gate)

        asyncio.run_coroutine_threadsafe(run(), loop).result(DEFAULT_TIMEOUT)

    async def _data(self, server: _OperatorSMTP, session: Session, envelope: _OperatorEnvelope) -> str:
        with self._cond:
            self._state.transactions += 1
            self._cond.notify_all()
        assert self._gate is not None
        if not self._gate.is_set():
            with self._cond:
                self._state.held += 1
                self._cond.notify_all()
            try:
                await self._gate.wait()
            finally:
                with self._cond:
                    self._state.held -= 1
                    self._cond.notify_all()
        mail_from = envelope.mail_from or ""
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        refusal = self._scripted(server, "DATA", mail_from, first)
        if refusal is not None:
            return refusal
        content = envelope.original_content or b""
        auth = session.auth_data if session.authenticated else None
        received = ReceivedMessage(
            mail_from=mail_from,
            mail_options=envelope.raw_mail_options,
            rcpt_tos=tuple(envelope.rcpt_tos),
            rcpt_options=tuple(envelope.raw_rcpt_options),
            content=content,
            tls=_peer_tls(server.transport),
            helo=session.host_name,
            auth_login=auth if isinstance(auth, str) else None,
            connection=server.serial,
        )
        with self._cond:
            self._state.messages.append(received)
            number = len(self._state.messages)
            self._cond.notify_all()
        return f"250 2.0.0 Ok: queued as OP{number:06d}"

    # -- what the tests read -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._state.messages)

    @property
    def refusals(self) -> list[Refusal]:
        with self._cond:
            return list(self._state.refusals)

    @property
    def connections(self) -> int:
        """TCP connections accepted (a handshake that failed still counts)."""
        with self._cond:
            return self._state.connections

    @property
    def transactions(self) -> int:
        """DATA commands that reached the point of a reply, accepted or refused."""
        with self._cond:
            return self._state.transactions

    @property
    def tls_failures(self) -> list[str]:
        """OpenSSL reasons of failed STARTTLS handshakes, e.g. ``PEER_DID_NOT_RETURN_A_CERTIFICATE``.

        Implicit-TLS handshakes fail inside asyncio before a session exists, so only ``connections``
        shows them.
        """
        with self._cond:
            return list(self._state.tls_failures)

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions in a session (each answered 451); a passing test expects none."""
        with self._cond:
            return list(self._state.errors)

    @property
    def held(self) -> int:
        with self._cond:
            return self._state.held

    @property
    def script_left(self) -> list[ScriptedReply]:
        with self._cond:
            return list(self._state.script)

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, what: str = ""
    ) -> None:
        """Block until ``predicate()`` holds; it is re-checked on every change of the operator's state."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"fake operator: timed out after {timeout}s waiting for {what or predicate}; "
                    f"{self._summary()}"
                )

    def wait_for_messages(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[ReceivedMessage]:
        """Return the accepted messages once there are at least ``count`` of them."""
        self.wait_until(lambda: len(self._state.messages) >= count, timeout, f"{count} message(s)")
        return self.messages

    def wait_for_held(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_until(lambda: self._state.held >= count, timeout, f"{count} held DATA")

    async def wait_for_messages_async(
        self, count: int, timeout: float = DEFAULT_TIMEOUT
    ) -> list[ReceivedMessage]:
        """For async tests: the same wait, off the test's event loop."""
        return await asyncio.to_thread(self.wait_for_messages, count, timeout)

    def _summary(self) -> str:
        state = self._state
        return (
            f"messages={len(state.messages)} refusals={len(state.refusals)} "
            f"connections={state.connections} transactions={state.transactions} "
            f"held={state.held} script_left={len(state.script)} "
            f"tls_failures={state.tls_failures} errors={state.errors}"
        )

    def __repr__(self) -> str:
        with self._cond:
            return f"<FakeOperator 127.0.0.1:{self.port} {self._summary()}>"


FakeOperatorFactory = Callable[..., FakeOperator]
"""What the ``fake_operator`` fixture gives: keyword options of :class:`FakeOperator` -> started operator."""


def refused_port() -> int:
    """A loopback port with nothing listening, for "operator unreachable" tests.

    The port was free a moment ago; another process could take it, which on a test machine is rare
    enough, and a test that sees a connection there would still fail loudly rather than pass.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port

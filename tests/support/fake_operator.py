"""A real SMTP server that plays the MSSanté operator for integration and end-to-end tests.

It sits where the operator's submission server sits, after outbound/transports/smtp: aiosmtpd's ``SMTP``
protocol on an ephemeral loopback port, served by its own event loop in a background thread so that sync
tests, async tests and ``mssgw run`` subprocesses can all talk to it. It records what it accepted, fails on
demand from a script, and never relays anything anywhere.
"""

from __future__ import annotations

import asyncio
import email.parser
import itertools
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import Session, TLSSetupException

from tests.support.operator_protocol import OperatorEnvelope, OperatorSMTP, authenticator
from tests.support.operator_records import (
    PeerTls,
    ReceivedMessage,
    Refusal,
    ScriptedReply,
    ScriptEntry,
    Stage,
    peer_tls,
)
from tests.support.pki import CertKey

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "DEFAULT_TIMEOUT",
    "FakeOperator",
    "FakeOperatorFactory",
    "PeerTls",
    "ReceivedMessage",
    "Refusal",
    "ScriptEntry",
    "ScriptedReply",
    "refused_port",
]

DEFAULT_SIZE_LIMIT = 32 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0
HOSTNAME = "smtp.operator.test.mssante.fr"


@dataclass
class _State:
    messages: list[ReceivedMessage] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    script: list[ScriptedReply] = field(default_factory=list)
    connections: int = 0
    transactions: int = 0
    held: int = 0
    answer_delay: float | None = 0.0
    stalled: int = 0
    attempts: list[str] = field(default_factory=list)
    carrying: Counter[str] = field(default_factory=Counter)
    overlaps: list[str] = field(default_factory=list)
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
        self._live: set[OperatorSMTP] = set()
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

    def _protocol(self) -> OperatorSMTP:
        # Called once per accepted TCP connection, before any TLS handshake: the honest count.
        with self._cond:
            self._state.connections += 1
            self._cond.notify_all()
        return OperatorSMTP(
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
            authenticator=authenticator(self.auth) if self.auth is not None else None,
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

    # The five methods below are called by the session (operator_protocol.py) on the operator's loop.

    def session_opened(self, protocol: OperatorSMTP) -> None:
        self._live.add(protocol)

    def session_closed(self, protocol: OperatorSMTP) -> None:
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

    def scripted_reply(
        self, server: OperatorSMTP, stage: Stage, mail_from: str | None, address: str
    ) -> str | None:
        """The reply replacing 250 at ``stage`` if the script has one for it (and forget it)."""
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

    def session_failed(self, error: Exception) -> None:
        """Record a session's exception: a failed STARTTLS handshake, or a bug in this fake."""
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

    # -- a slow or stalling next hop ----------------------------------------------------------------

    def answer_after(self, seconds: float | None) -> None:
        """Answer every following DATA ``seconds`` after its content arrived (a slow next hop; 0: at once).

        ``None`` stalls instead: DATA is never answered, the session waits until the client gives up and
        closes, and the message is not recorded (the operator never said 250). Sessions already waiting
        keep the pace they started with.
        """
        with self._cond:
            self._state.answer_delay = seconds

    async def _pace(self) -> None:
        with self._cond:
            delay = self._state.answer_delay
            if delay is None:
                self._state.stalled += 1
                self._cond.notify_all()
        if delay is None:
            try:
                await asyncio.get_running_loop().create_future()  # until the session ends
            finally:
                with self._cond:
                    self._state.stalled -= 1
                    self._cond.notify_all()
        elif delay:
            await asyncio.sleep(delay)

    async def receive_data(self, server: OperatorSMTP, session: Session, envelope: OperatorEnvelope) -> str:
        """Answer DATA, noting which Message-ID it carries and whether another open DATA carries it too."""
        carried = _message_id(envelope.original_content or b"")
        with self._cond:
            self._state.transactions += 1
            self._state.attempts.append(carried)
            if carried and self._state.carrying[carried]:
                self._state.overlaps.append(carried)
            self._state.carrying[carried] += 1
            self._cond.notify_all()
        try:
            return await self._answer_data(server, session, envelope)
        finally:
            with self._cond:
                self._state.carrying[carried] -= 1
                self._cond.notify_all()

    async def _answer_data(self, server: OperatorSMTP, session: Session, envelope: OperatorEnvelope) -> str:
        """Wait while held, then at the pace set; then the script's reply, or 250 and a record."""
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
        await self._pace()
        mail_from = envelope.mail_from or ""
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        refusal = self.scripted_reply(server, "DATA", mail_from, first)
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
            tls=peer_tls(server.transport),
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
    def stalled(self) -> int:
        """DATA commands waiting now for an answer that never comes (see :meth:`answer_after`)."""
        with self._cond:
            return self._state.stalled

    @property
    def attempts(self) -> list[str]:
        """The Message-ID of every DATA that arrived, in order, answered or not ("" when it had none)."""
        with self._cond:
            return list(self._state.attempts)

    @property
    def overlaps(self) -> list[str]:
        """Message-IDs a DATA carried while another DATA carrying it was still open: the same delivery sent
        twice at once, which a client with leases that mean what they say never does."""
        with self._cond:
            return list(self._state.overlaps)

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
            f"held={state.held} stalled={state.stalled} overlaps={state.overlaps} "
            f"script_left={len(state.script)} "
            f"tls_failures={state.tls_failures} errors={state.errors}"
        )

    def __repr__(self) -> str:
        with self._cond:
            return f"<FakeOperator 127.0.0.1:{self.port} {self._summary()}>"


FakeOperatorFactory = Callable[..., FakeOperator]
"""What the ``fake_operator`` fixture gives: keyword options of :class:`FakeOperator` -> started operator."""


def _message_id(content: bytes) -> str:
    # Only the header block is parsed: bench runs send 20 MB messages through here.
    head = content.partition(b"\r\n\r\n")[0]
    return str(email.parser.BytesHeaderParser().parsebytes(head).get("Message-ID", "")).strip()


def refused_port() -> int:
    """A loopback port with nothing listening, for "operator unreachable" tests.

    The port was free a moment ago; another process could take it, which on a test machine is rare
    enough, and a test that sees a connection there would still fail loudly rather than pass.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port

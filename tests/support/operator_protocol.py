"""The fake operator's SMTP session: aiosmtpd's protocol taught DSN/AUTH parameters, and its hooks.

One instance per TCP connection, running on the operator's own event loop; every decision (scripted
refusal, recording, holding DATA) is delegated to the ``FakeOperator`` it was made for
(tests/support/fake_operator.py). It never relays: an accepted message only becomes a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

if TYPE_CHECKING:
    from tests.support.fake_operator import FakeOperator

# RFC 3461 § 4.3/4.4 (RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT) and RFC 4954 § 5 (AUTH on MAIL).
DSN_MAIL_PARAMS = frozenset({"RET", "ENVID"})
DSN_RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})


class OperatorEnvelope(Envelope):
    """aiosmtpd's envelope plus the parameters exactly as the client spelt them."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_mail_options: tuple[str, ...] = ()
        self.raw_rcpt_options: list[tuple[str, ...]] = []


class OperatorSMTP(SMTP):
    """aiosmtpd's protocol, taught the DSN/AUTH parameters and to remember their original spelling."""

    def __init__(self, operator: FakeOperator, serial: int, **kwargs: Any) -> None:
        super().__init__(Handler(operator), **kwargs)
        self.operator = operator
        self.serial = serial
        self.raw_params: tuple[str, ...] = ()
        self.extra_params: frozenset[str] = frozenset()
        self.close_after_reply = False

    def _create_envelope(self) -> Envelope:
        return OperatorEnvelope()

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
            accepted |= DSN_MAIL_PARAMS
        if self.operator.auth is not None:
            accepted |= {"AUTH"}
        self._remember(arg, accepted)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self._remember(arg, DSN_RCPT_PARAMS if self.operator.dsn else frozenset())
        await super().smtp_RCPT(arg)

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        # RFC 5321 § 3.8: a 421 reply announces that the server closes the channel.
        if self.close_after_reply and self.transport is not None:
            self.close_after_reply = False
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.operator.session_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.operator.session_closed(self)


class Handler:
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
        server: OperatorSMTP,
        session: Session,
        envelope: OperatorEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.operator.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        refusal = self.operator.scripted_reply(server, "MAIL", None, address)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.raw_mail_options = server.raw_params
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: OperatorSMTP,
        session: Session,
        envelope: OperatorEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.operator.scripted_reply(server, "RCPT", envelope.mail_from, address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.raw_rcpt_options.append(server.raw_params)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: OperatorSMTP, session: Session, envelope: OperatorEnvelope) -> str:
        return await self.operator.receive_data(server, session, envelope)

    async def handle_exception(self, error: Exception) -> str:
        # A failed STARTTLS handshake (no or untrusted client certificate, untrusted server for the
        # client) is an expected outcome here: record it instead of logging a traceback.
        self.operator.session_failed(error)
        return "451 4.3.0 Fake operator error: " + type(error).__name__


def authenticator(
    credentials: tuple[str, str],
) -> Callable[[SMTP, Session, Envelope, str, object], AuthResult]:
    """An aiosmtpd authenticator accepting exactly one login/password (PLAIN or LOGIN)."""

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        ok = (login, data.password.decode("utf-8", "replace")) == credentials
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    return authenticate

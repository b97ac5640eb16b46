"""The SMTP transport: delivers to one destination over TLS, keeping a few connections open for reuse.

Each result comes from the reply that decided it (per RCPT, then the final reply). Connection failures, TLS
failures and timeouts give temporary results; nothing is ever sent without TLS. A message larger than the
peer's announced SIZE is refused here, before any byte is sent, so the sender gets a clear DSN.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from gateway.logsetup import log_event
from gateway.outbound.mx import MxLookupError, MxResolver
from gateway.outbound.routing import Destination
from gateway.outbound.transports.base import (
    OutboundMessage,
    Outcome,
    RecipientResult,
    all_recipients,
    unsendable,
)
from gateway.outbound.transports.smtp_client import Reply, SmtpConnection, SmtpError, TransactionReplies

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    """What every SMTP transport shares, taken from the settings."""

    local_hostname: str
    tls_context: ssl.SSLContext
    connect_timeout: float
    command_timeout: float
    connection_idle: float
    messages_per_connection: int
    connections_per_destination: int
    credentials: tuple[str, str] | None = None


class SmtpTransport:
    """Sends to one destination, reusing idle connections."""

    def __init__(self, destination: Destination, options: SmtpOptions, resolve_mx: MxResolver) -> None:
        self.destination = destination
        self.options = options
        self.resolve_mx = resolve_mx
        self._slots = asyncio.Semaphore(options.connections_per_destination)
        self._idle: list[SmtpConnection] = []
        self._idle_timers: dict[SmtpConnection, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, message: OutboundMessage) -> list[RecipientResult]:
        async with self._slots:
            return await self._send(message)

    async def _send(self, message: OutboundMessage) -> list[RecipientResult]:
        refused = unsendable(message)
        if refused is not None:
            return refused
        for _ in range(2):
            reused = bool(self._idle)
            try:
                connection = self._take_idle() or await self._connect()
            except MxLookupError as error:
                outcome = Outcome.PERMANENT if error.permanent else Outcome.TEMPORARY
                return all_recipients(message, outcome, str(error))
            except (OSError, SmtpError, TimeoutError) as error:
                reason = f"cannot deliver through {self.destination}: {_describe(error)}"
                log_event(
                    log,
                    "connect-failed",
                    logging.WARNING,
                    destination=str(self.destination),
                    error=_describe(error),
                )
                return all_recipients(message, Outcome.TEMPORARY, reason)
            limit = connection.max_size
            if limit is not None and len(message.content) > limit:
                self._release(connection)
                reply = (
                    f"5.3.4 message of {len(message.content)} bytes exceeds the size limit "
                    f"of {limit} bytes announced by {connection.peer}"
                )
                return all_recipients(message, Outcome.PERMANENT, reply, 552, connection.peer)
            try:
                replies = await connection.transaction(
                    message.envelope_from,
                    _mail_params(connection, message),
                    [(r.address, _rcpt_params(connection, r.notify, r.orcpt)) for r in message.recipients],
                    message.content,
                    crlf=message.crlf,
                )
            except (SmtpError, OSError) as error:
                await connection.discard()
                if reused and not connection.content_sent:
                    # An idle connection the peer had already closed: try once more on a fresh one.
                    continue
                reason = f"connection to {connection.peer} lost during the transaction: {_describe(error)}"
                return all_recipients(message, Outcome.TEMPORARY, reason, None, connection.peer)
            self._release(connection)
            return _results(message, replies, connection.peer, "DSN" in connection.extensions)
        raise AssertionError("unreachable: the second attempt always returns")

    async def _connect(self) -> SmtpConnection:
        destination = self.destination
        hosts = [destination.host]
        if destination.kind == "mx":
            hosts = await self.resolve_mx(destination.host)
        last_error: BaseException | None = None
        for host in hosts:
            try:
                connection = await SmtpConnection.open(
                    host,
                    destination.port,
                    implicit_tls=destination.security == "tls",
                    tls_context=self.options.tls_context,
                    local_hostname=self.options.local_hostname,
                    connect_timeout=self.options.connect_timeout,
                    command_timeout=self.options.command_timeout,
                )
            except (OSError, SmtpError, TimeoutError) as error:
                last_error = error
                continue
            if destination.authenticate and self.options.credentials is not None:
                try:
                    await connection.authenticate(*self.options.credentials)
                except Exception:
                    await connection.discard()
                    raise
            return connection
        assert last_error is not None
        raise last_error

    def _take_idle(self) -> SmtpConnection | None:
        while self._idle:
            connection = self._idle.pop()
            timer = self._idle_timers.pop(connection, None)
            if timer is not None:
                timer.cancel()
            if not connection.broken and not connection.writer.is_closing():
                return connection
        return None

    def _release(self, connection: SmtpConnection) -> None:
        if connection.broken or connection.transactions >= self.options.messages_per_connection:
            self._quit(connection)
            return
        self._idle.append(connection)
        loop = asyncio.get_running_loop()
        self._idle_timers[connection] = loop.call_later(
            self.options.connection_idle, self._expire, connection
        )

    def _expire(self, connection: SmtpConnection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)
            self._idle_timers.pop(connection, None)
            self._quit(connection)

    def _quit(self, connection: SmtpConnection) -> None:
        task = asyncio.get_running_loop().create_task(connection.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        while self._idle:
            connection = self._idle.pop()
            timer = self._idle_timers.pop(connection, None)
            if timer is not None:
                timer.cancel()
            self._quit(connection)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _mail_params(connection: SmtpConnection, message: OutboundMessage) -> list[str]:
    params = []
    if "SIZE" in connection.extensions:
        params.append(f"SIZE={len(message.content)}")
    if "8BITMIME" in connection.extensions and not message.content.isascii():
        params.append("BODY=8BITMIME")
    if "DSN" in connection.extensions:
        if message.ret:
            params.append(f"RET={message.ret}")
        if message.envid:
            params.append(f"ENVID={message.envid}")
    return params


def _rcpt_params(connection: SmtpConnection, notify: str | None, orcpt: str | None) -> list[str]:
    if "DSN" not in connection.extensions:
        return []
    params = []
    if notify:
        params.append(f"NOTIFY={notify}")
    if orcpt:
        params.append(f"ORCPT={orcpt}")
    return params


def _results(
    message: OutboundMessage, replies: TransactionReplies, peer: str, onward: bool
) -> list[RecipientResult]:
    if not replies.mail.is_positive:
        return [_from_reply(r.address, replies.mail, peer, onward) for r in message.recipients]
    results = []
    for recipient, rcpt_reply in zip(message.recipients, replies.rcpts, strict=True):
        decisive = rcpt_reply if not rcpt_reply.is_positive or replies.data is None else replies.data
        results.append(_from_reply(recipient.address, decisive, peer, onward))
    return results


def _from_reply(recipient: str, reply: Reply, peer: str, onward: bool) -> RecipientResult:
    if reply.code == 250 or reply.code == 251:
        outcome = Outcome.DELIVERED
    elif reply.is_permanent:
        outcome = Outcome.PERMANENT
    else:
        outcome = Outcome.TEMPORARY
    return RecipientResult(recipient, outcome, str(reply), reply.code, peer, onward)


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or error})"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__

"""A small ESMTP client over asyncio streams: EHLO, STARTTLS, AUTH, and pipelined transactions.

Written here rather than taken from aiosmtplib because the relay needs RFC 2920 PIPELINING (MAIL, every
RCPT and DATA in one write; aiosmtplib reads one reply per command) and per-recipient replies. It refuses to
go on in clear text: STARTTLS is mandatory unless the connection is implicit TLS. No queue or SQL here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from mappers import wire

_REPLY_LINE_LIMIT = 4096

_WRITE_PIECE = 256 * 1024
"""Bytes handed to the transport at a time. The TLS transport encrypts each write into a buffer of its size
and copies that on to the socket's: a 1 MiB message in one write costs a fifth more CPU (fresh megabyte
buffers, 2.6 -> 2.1 ms a MiB, both ends of a local TLS connection) than in 256 KiB views (issue 16)."""


class SmtpError(Exception):
    """The session cannot go on (network, TLS, protocol); the connection must be dropped."""


class SmtpReplyError(SmtpError):
    """The server refused a session-level command (EHLO, STARTTLS, AUTH)."""

    def __init__(self, command: str, reply: Reply) -> None:
        self.reply = reply
        super().__init__(f"{command} refused: {reply}")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply; ``text`` joins the lines of a multi-line reply with spaces."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True, slots=True)
class TransactionReplies:
    """What the server answered to MAIL, to each RCPT, and to DATA or the message.

    ``data`` is the final reply to the message, or the refusal of the DATA command; None when no recipient
    was accepted so nothing was sent.
    """

    mail: Reply
    rcpts: tuple[Reply, ...]
    data: Reply | None


def prepare_content(content: bytes, *, crlf: bool = False) -> tuple[bytes, ...]:
    """CRLF line ends, dot-stuffing (RFC 5321 §4.5.2) and the terminating ``.`` line, in pieces to write
    one after the other: joined, a large message would be copied once more (issue 16).

    Once every line end is a CRLF (``crlf``: the caller knows it is so, no search), a line starts at the
    first octet or right after a CRLF: one ``replace`` stuffs them all, five times faster on 1 MiB than a
    multi-line regex. With nothing to replace, ``replace`` returns ``normalised`` itself, not a copy: no
    search beforehand, which would be a second pass over the message (0.7 ms a MiB, issue 16).
    """
    normalised = content if crlf else wire.crlf(content)
    lead = (b".",) if normalised.startswith(b".") else ()
    end = b".\r\n" if normalised.endswith(b"\r\n") else b"\r\n.\r\n"
    stuffed = normalised.replace(b"\r\n.", b"\r\n..")
    return (*lead, stuffed, end)


class SmtpConnection:
    """One open ESMTP session with a next hop."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        command_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.command_timeout = command_timeout
        self.extensions: dict[str, str] = {}
        self.transactions = 0
        self.broken = False
        self.content_sent = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        implicit_tls: bool,
        tls_context: ssl.SSLContext,
        local_hostname: str,
        connect_timeout: float,
        command_timeout: float,
    ) -> SmtpConnection:
        """Connect, greet and secure the session; raise ``SmtpError`` or ``OSError`` on any failure."""
        peer = f"{host}:{port}"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=tls_context if implicit_tls else None,
                server_hostname=host if implicit_tls else None,
                limit=_REPLY_LINE_LIMIT * 4,
            ),
            connect_timeout,
        )
        connection = cls(reader, writer, peer, command_timeout)
        try:
            greeting = await connection.read_reply()
            if greeting.code != 220:
                raise SmtpReplyError("greeting", greeting)
            await connection.ehlo(local_hostname)
            if not implicit_tls:
                if "STARTTLS" not in connection.extensions:
                    raise SmtpError(f"{peer} does not offer STARTTLS; refusing to send in clear text")
                reply = await connection.command(b"STARTTLS")
                if reply.code != 220:
                    raise SmtpReplyError("STARTTLS", reply)
                await asyncio.wait_for(writer.start_tls(tls_context, server_hostname=host), connect_timeout)
                await connection.ehlo(local_hostname)
        except Exception:
            await connection.discard()
            raise
        return connection

    @property
    def max_size(self) -> int | None:
        """The peer's SIZE limit (RFC 1870), when it announces one."""
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    async def ehlo(self, local_hostname: str) -> None:
        reply_lines = await self._command_lines(b"EHLO " + local_hostname.encode("ascii"))
        code, lines = reply_lines
        if code != 250:
            raise SmtpReplyError("EHLO", Reply(code, " ".join(lines)))
        self.extensions = {}
        for line in lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params

    async def authenticate(self, username: str, password: str) -> None:
        """AUTH PLAIN (or LOGIN when PLAIN is not offered); only ever called on a TLS session."""
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
            reply = await self.command(b"AUTH PLAIN " + token.encode("ascii"))
        elif "LOGIN" in mechanisms:
            reply = await self.command(b"AUTH LOGIN")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(username.encode()))
            if reply.code == 334:
                reply = await self.command(base64.b64encode(password.encode()))
        else:
            raise SmtpError(f"{self.peer} offers no AUTH mechanism we use (PLAIN, LOGIN)")
        if reply.code != 235:
            raise SmtpReplyError("AUTH", reply)

    async def transaction(
        self,
        mail_from: str,
        mail_params: Sequence[str],
        recipients: Sequence[tuple[str, Sequence[str]]],
        content: bytes,
        *,
        crlf: bool = False,
    ) -> TransactionReplies:
        """Run one mail transaction, pipelined when the peer allows it (RFC 2920); ``crlf``: every line end
        of ``content`` is known to be a CRLF."""
        self.transactions += 1
        self.content_sent = False
        mail = _command_bytes("MAIL FROM:", mail_from, mail_params)
        rcpts = [_command_bytes("RCPT TO:", address, params) for address, params in recipients]
        if "PIPELINING" in self.extensions:
            self._write(b"".join(line + b"\r\n" for line in (mail, *rcpts, b"DATA")))
            mail_reply = await self.read_reply()
            rcpt_replies = tuple([await self.read_reply() for _ in rcpts])
            data_reply = await self.read_reply()
        else:
            mail_reply = await self.command(mail)
            if not mail_reply.is_positive:
                return TransactionReplies(mail_reply, (), None)
            rcpt_replies = tuple([await self.command(line) for line in rcpts])
            if not any(r.is_positive for r in rcpt_replies):
                await self.command(b"RSET")
                return TransactionReplies(mail_reply, rcpt_replies, None)
            data_reply = await self.command(b"DATA")
        accepted = mail_reply.is_positive and any(r.is_positive for r in rcpt_replies)
        if data_reply.code != 354:
            if mail_reply.is_positive:
                await self.command(b"RSET")
            return TransactionReplies(mail_reply, rcpt_replies, data_reply if accepted else None)
        if not accepted:
            # RFC 2920 §3.1: a server may answer 354 although every RCPT failed; end the empty message.
            self._write(b".\r\n")
            await self.read_reply()
            return TransactionReplies(mail_reply, rcpt_replies, None)
        self.content_sent = True
        for piece in prepare_content(content, crlf=crlf):
            self._write(piece)
        final = await self.read_reply()
        return TransactionReplies(mail_reply, rcpt_replies, final)

    async def quit(self) -> None:
        """Say goodbye politely; errors do not matter any more."""
        with contextlib.suppress(SmtpError, OSError, TimeoutError):
            if not self.broken:
                await self.command(b"QUIT")
        await self.discard()

    async def discard(self) -> None:
        """Close without a goodbye, and wait until the socket (and a TLS close_notify) is really gone."""
        self.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), self.command_timeout)

    def close(self) -> None:
        self.broken = True
        if not self.writer.is_closing():
            self.writer.close()

    async def command(self, line: bytes) -> Reply:
        code, lines = await self._command_lines(line)
        return Reply(code, " ".join(lines))

    async def _command_lines(self, line: bytes) -> tuple[int, list[str]]:
        self._write(line + b"\r\n")
        return await self._read_lines()

    def _write(self, data: bytes) -> None:
        if self.broken or self.writer.is_closing():
            raise SmtpError(f"connection to {self.peer} is closed")
        if len(data) <= _WRITE_PIECE:
            self.writer.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), _WRITE_PIECE):
            self.writer.write(view[start : start + _WRITE_PIECE])

    async def read_reply(self) -> Reply:
        code, lines = await self._read_lines()
        return Reply(code, " ".join(lines))

    async def _read_lines(self) -> tuple[int, list[str]]:
        try:
            # A timeout scope, not ``wait_for``: that wraps every reply read in a task of its own.
            async with asyncio.timeout(self.command_timeout):
                return await self._read_reply_lines()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            self.close()
            raise SmtpError(f"no valid reply from {self.peer}: {error or type(error).__name__}") from error

    async def _read_reply_lines(self) -> tuple[int, list[str]]:
        await self.writer.drain()
        lines: list[str] = []
        while True:
            raw = await self.reader.readuntil(b"\n")
            if len(raw) > _REPLY_LINE_LIMIT or len(raw) < 4 or not raw[:3].isdigit():
                raise ValueError(f"malformed reply line {raw[:80]!r}")
            lines.append(raw[4:].decode("utf-8", "replace").strip())
            if raw[3:4] != b"-":
                return int(raw[:3]), lines


def unwritable(mail_from: Sequence[str], rcpts: Sequence[Sequence[str]], content: bytes) -> str | None:
    """The permanent reply (enhanced code first) for a transaction SMTP can never carry, if it cannot.

    ``mail_from`` are the values of MAIL FROM (address, parameters), ``rcpts`` those of each RCPT TO. A
    control character in a command would end it or smuggle another (RFC 5321 § 4.1.2), and NUL may not
    appear in message data (RFC 5322 § 2.3): the same message would fail the same way every retry.
    """
    for status, values in (("5.1.7", mail_from), *(("5.1.3", r) for r in rcpts)):
        for value in values:
            if _has_control(value):
                return f"{status} control character in the envelope value {value!r}: SMTP cannot carry it"
    if b"\x00" in content:
        return "5.6.0 NUL character in the message data (RFC 5322 section 2.3): SMTP cannot carry it"
    return None


_CONTROL = re.compile("[\x00-\x1f\x7f]")
"""C0 controls and DEL; one search rather than a Python pass over every character (three per command)."""


def _has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def _command_bytes(verb: str, address: str, params: Sequence[str]) -> bytes:
    for part in (address, *params):
        if _has_control(part):
            raise SmtpError(f"control character in envelope value {part!r}")
    text = f"{verb}<{address}>" + "".join(f" {p}" for p in params)
    return text.encode("utf-8")

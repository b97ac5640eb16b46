"""STARTTLS for aioimaplib (RFC 3501 §6.2.1, RFC 2595), which only offers implicit TLS.

MSSanté operators offer IMAP on port 143 with STARTTLS. This sends the command itself, checks that the
server said nothing after its tagged OK (bytes there would be read as if protected: the STARTTLS command
injection of CVE-2011-0411), upgrades the same transport with the loop's ``start_tls`` and asks CAPABILITY
again, since what the server said before TLS cannot be trusted. It never falls back to clear text.
"""

from __future__ import annotations

import asyncio
import ssl

from aioimaplib import aioimaplib


class StartTlsError(Exception):
    """The server does not offer STARTTLS, refused it, or misbehaved around it."""


class _TaggedReply(asyncio.Protocol):
    """Stands in for the client protocol while the STARTTLS reply is read, so no byte is misread."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.buffer = b""
        self.late = False
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            self.late = True
            return
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line.startswith(self.tag + b" "):
                if self.buffer:
                    self.reply.set_exception(StartTlsError("the server sent data after its STARTTLS reply"))
                else:
                    self.reply.set_result(line[len(self.tag) + 1 :])
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(StartTlsError("the server closed the connection during STARTTLS"))


async def starttls(
    client: aioimaplib.IMAP4, context: ssl.SSLContext, server_hostname: str, limit: float
) -> None:
    """Upgrade a connected, not yet authenticated client to TLS, then refresh its capabilities; each step
    (reply, handshake, CAPABILITY) may take up to ``limit`` seconds."""
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise StartTlsError("the server does not offer STARTTLS; refusing to log in over clear text")
    if protocol.state != aioimaplib.NONAUTH:
        raise StartTlsError(f"STARTTLS is only possible before login (state {protocol.state})")
    transport = protocol.transport
    tag = protocol.new_tag().encode("ascii")
    reader = _TaggedReply(tag)
    transport.set_protocol(reader)
    transport.write(tag + b" STARTTLS\r\n")
    try:
        reply = await asyncio.wait_for(asyncio.shield(reader.reply), limit)
    except TimeoutError as error:
        raise StartTlsError("no reply to STARTTLS") from error
    if not reply.startswith(b"OK"):
        raise StartTlsError(f"the server refused STARTTLS: {reply.decode('ascii', 'replace')[:200]}")
    if reader.late:
        raise StartTlsError("the server sent data after its STARTTLS reply")
    # start_tls pauses reading before its first await: nothing can slip in between this check and it.
    loop = asyncio.get_running_loop()
    secure = await loop.start_tls(
        transport, protocol, context, server_hostname=server_hostname, ssl_handshake_timeout=limit
    )
    if secure is None:
        raise StartTlsError("the TLS handshake did not give a transport")
    protocol.transport = secure
    protocol.capabilities = set()
    await asyncio.wait_for(protocol.capability(), limit)

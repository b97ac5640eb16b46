"""The MLLP listener (``[hl7]``): producers' ORU/MDM frames in, technical ACKs out, in the daemon's loop.

MLLP frames a message as ``<VT> message <FS><CR>`` (HL7 v2 appendix C); the ``hl7`` library's framing
bytes are used, the reading is ours so that an oversized frame is read to its end and answered instead of
leaving the stream out of step. The same care as the SMTP listeners: optional TLS (``gateway.tls``; with
``client_ca`` a certificate chaining to it is required), allowed source networks, a connection limit, an idle
timeout (waiting for a frame, or for the rest of one), a size limit. A frame over the limit is answered
``AR``; bytes that are not a frame, or a connection cut inside one, close the connection with the reason
logged. What each frame means is ``hl7_intake.Hl7Door``'s business: one ACK per frame, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from gateway import memory
from gateway.inbound.hl7_intake import Hl7Door, Origin
from gateway.logsetup import log_event
from gateway.settings import Settings
from gateway.settings_checks import split_host_port
from gateway.tls import common_name, server_context

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_END = END_BLOCK + CARRIAGE_RETURN
#: The start of an oversized frame kept to answer it (its MSH segment).
_HEAD = 4096


class FramingError(Exception):
    """Bytes that are not an MLLP frame: the stream cannot be trusted any further."""


class FrameTooLarge(Exception):
    """A whole frame over the limit, read and dropped; ``head`` is its start, ``size`` its length."""

    def __init__(self, head: bytes, size: int) -> None:
        super().__init__(size)
        self.head = head
        self.size = size


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The next frame's content; None at a clean end of the stream (between frames).

    Raises FramingError (no start block), FrameTooLarge, asyncio.IncompleteReadError (cut inside a frame).
    ``reader``'s own limit must exceed ``limit``: the overflow is what tells an oversized frame.
    """
    try:
        block = await reader.readuntil(_END)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise
    except asyncio.LimitOverrunError as overrun:
        head = await reader.readexactly(overrun.consumed)
        size = len(head)
        while True:
            try:
                size += len(await reader.readuntil(_END)) - len(_END)
                break
            except asyncio.LimitOverrunError as more:
                size += len(await reader.readexactly(more.consumed))
        raise FrameTooLarge(head[1:_HEAD], size - 1) from None
    if block[:1] != START_BLOCK:
        raise FramingError("no-start-block")
    content = block[1 : -len(_END)]
    if START_BLOCK in content:
        raise FramingError("start-block-inside-frame")
    if len(content) > limit:
        raise FrameTooLarge(content[:_HEAD], len(content))
    return content


@dataclass(frozen=True)
class MllpConfig:
    """What every connection obeys; replaced as a whole on reload."""

    tls: ssl.SSLContext | None
    require_certificate: bool
    networks: tuple[Network, ...]
    max_message_size: int
    timeout: float
    max_connections: int


def mllp_config(settings: Settings) -> MllpConfig:
    """The listener's configuration (raises OSError/ssl errors on unusable TLS material)."""
    hl7 = settings.hl7
    tls = None
    if hl7.certificate is not None and hl7.key is not None:
        tls = server_context(settings.tls, hl7.certificate, hl7.key, hl7.client_ca)
    return MllpConfig(
        tls=tls,
        require_certificate=hl7.client_ca is not None,
        networks=tuple(ipaddress.ip_network(n, strict=False) for n in hl7.networks),
        max_message_size=hl7.max_message_size,
        timeout=hl7.timeout,
        max_connections=hl7.max_connections,
    )


class MllpListener:
    """The ``[hl7]`` listener on all its addresses: a daemon service."""

    def __init__(self, settings: Settings, door: Hl7Door) -> None:
        self.door = door
        self.config = mllp_config(settings)
        self.addresses = [split_host_port(text) for text in settings.hl7.listen]
        self.servers: list[asyncio.Server] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def ports(self) -> list[int]:
        """The bound ports, in the order of the configured addresses (port 0 resolved)."""
        return [int(server.sockets[0].getsockname()[1]) for server in self.servers]

    async def start(self) -> None:
        for host, port in self.addresses:
            server = await asyncio.start_server(
                self._connection,
                host,
                port,
                ssl=self.config.tls,
                # One octet over the frame limit, so that the overflow shows (see ``read_frame``).
                limit=self.config.max_message_size + len(START_BLOCK) + 1,
            )
            self.servers.append(server)
            bound = server.sockets[0].getsockname()
            log_event(log, "listening", listener="hl7", address=f"{bound[0]}:{bound[1]}")

    async def stop(self, grace: float) -> None:
        for server in self.servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), grace)
        for writer in list(self.writers):
            # Whatever these connections were sending got no ACK: their producers will send it again.
            writer.close()
        for server in self.servers:
            await server.wait_closed()
        log_event(log, "listener-stopped", listener="hl7")

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        config = mllp_config(settings)
        door = self.door.prepare_reload(settings)

        def apply() -> None:
            self.config = config
            door()

        return apply

    def _refusal(self, writer: asyncio.StreamWriter, config: MllpConfig) -> str | None:
        """Why this connection may not go on, if it may not."""
        if len(self.writers) >= config.max_connections:
            return "max-connections"
        if config.networks:
            address = _address(writer)
            if address is None or not any(address in network for network in config.networks):
                return "network"
        if config.require_certificate and not writer.get_extra_info("peercert"):
            return "no-client-certificate"
        return None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = self.config
        name = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{name[0]}:{name[1]}"
        refused = self._refusal(writer, config)
        if refused is not None:
            log_event(log, "refused-connection", logging.WARNING, listener="hl7", peer=peer, reason=refused)
            writer.close()
            return
        self.writers.add(writer)
        self.idle.clear()
        try:
            await self._serve(reader, writer, config, _origin(writer, peer))
        finally:
            self.writers.discard(writer)
            writer.close()
            if not self.writers:
                self.idle.set()
                memory.release()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, config: MllpConfig, origin: Origin
    ) -> None:
        """Frames in, one ACK each, until the producer leaves or breaks the framing."""
        peer = origin.peer
        while True:
            try:
                frame = await asyncio.wait_for(read_frame(reader, config.max_message_size), config.timeout)
            except FrameTooLarge as large:
                ack = self.door.too_large(large.head, large.size, peer)
            except TimeoutError:
                log_event(log, "mllp-closed", listener="hl7", peer=peer, reason="idle-timeout")
                return
            except FramingError as error:
                log_event(log, "mllp-closed", logging.WARNING, listener="hl7", peer=peer, reason=str(error))
                return
            except asyncio.IncompleteReadError as cut:
                log_event(
                    log,
                    "mllp-closed",
                    logging.WARNING,
                    listener="hl7",
                    peer=peer,
                    reason="cut-inside-frame",
                    octets=len(cut.partial),
                )
                return
            except (ConnectionError, ssl.SSLError) as error:
                log_event(log, "mllp-closed", listener="hl7", peer=peer, reason=type(error).__name__)
                return
            else:
                if frame is None:
                    return
                ack = await self.door.answer(frame, origin)
            writer.write(START_BLOCK + ack.encode("utf-8") + _END)
            try:
                await writer.drain()
            except ConnectionError:
                log_event(log, "mllp-closed", listener="hl7", peer=peer, reason="ack-not-delivered")
                return


def _address(writer: asyncio.StreamWriter) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's IP address (an IPv6 zone dropped), None when the socket does not say."""
    host = str((writer.get_extra_info("peername") or ("?",))[0])
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _origin(writer: asyncio.StreamWriter, peer: str) -> Origin:
    """What the door checks a producer bound to its connection against: address and certificate CN."""
    certificate = writer.get_extra_info("peercert")
    return Origin(peer, _address(writer), common_name(certificate) if certificate else None)

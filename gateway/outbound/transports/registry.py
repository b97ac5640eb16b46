"""Destination → transport instance, built lazily from the settings and shared so connections are reused."""

from __future__ import annotations

import asyncio

from gateway.outbound.mx import MxResolver, resolve_mx
from gateway.outbound.routing import Destination
from gateway.outbound.transports.base import Transport
from gateway.outbound.transports.folder import FolderTransport
from gateway.outbound.transports.local import LocalTransport
from gateway.outbound.transports.smtp import SmtpOptions, SmtpTransport
from gateway.settings import Settings
from gateway.tls import client_context


class TransportRegistry:
    """Holds one transport per destination for the life of one configuration."""

    def __init__(self, settings: Settings, mx_resolver: MxResolver = resolve_mx) -> None:
        relay = settings.relay
        smarthost = settings.smarthost
        credentials = None
        if smarthost.username and smarthost.password_file is not None:
            password = smarthost.password_file.read_text(encoding="utf-8").strip()
            credentials = (smarthost.username, password)
        self.options = SmtpOptions(
            local_hostname=settings.gateway.hostname,
            tls_context=client_context(settings.tls),
            connect_timeout=relay.connect_timeout,
            command_timeout=relay.command_timeout,
            connection_idle=relay.connection_idle,
            messages_per_connection=relay.messages_per_connection,
            connections_per_destination=relay.connections_per_destination,
            credentials=credentials,
        )
        self.mx_resolver = mx_resolver
        self._transports: dict[Destination, Transport] = {}

    def get(self, destination: Destination) -> Transport:
        """The transport for ``destination``, created on first use."""
        transport = self._transports.get(destination)
        if transport is None:
            if destination.kind == "folder":
                assert destination.path is not None
                transport = FolderTransport(destination.path)
            elif destination.kind == "local":
                transport = LocalTransport(
                    destination, self.options.local_hostname, self.options.command_timeout
                )
            else:
                transport = SmtpTransport(destination, self.options, self.mx_resolver)
            self._transports[destination] = transport
        return transport

    async def close(self) -> None:
        """Close every idle connection."""
        await asyncio.gather(*(t.close() for t in self._transports.values()))
        self._transports.clear()

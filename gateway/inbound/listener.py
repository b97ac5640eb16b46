"""The inbound SMTP listeners as daemon services: bound with ``loop.create_server`` in the daemon's loop.

Builds each listener's ``ListenerConfig`` from the settings (TLS context, credentials, client networks, DKIM)
and swaps it on reload, so the next connection gets the new certificate while open ones finish on the old.
On stop the sockets close first; sessions still open after the grace time are cut (nothing they sent was
acknowledged, so their clients send again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from gateway.errors import ConfigError
from gateway.inbound import replies
from gateway.inbound.auth_throttle import AuthThrottle
from gateway.inbound.credentials import load_credentials, verify_password
from gateway.inbound.dkim_check import DkimVerifier, DnsFunc
from gateway.inbound.inflight import InflightBytes
from gateway.inbound.smtp_server import (
    ConnectionCount,
    Connections,
    GatewaySMTP,
    IntakePort,
    ListenerConfig,
    ListenerKind,
)
from gateway.inbound.trust import load_trust_list
from gateway.logsetup import log_event
from gateway.settings import Settings
from gateway.settings_checks import split_host_port
from gateway.tls import server_context

log = logging.getLogger(__name__)


def listener_config(kind: ListenerKind, settings: Settings, dnsfunc: DnsFunc | None = None) -> ListenerConfig:
    """The configuration of the ``kind`` listener (raises ConfigError/OSError/ssl errors on bad material)."""
    inbound = settings.inbound
    section = settings.submission if kind == "submission" else settings.operator_listener
    if section.certificate is None or section.key is None:
        raise ConfigError(
            settings.source, [f"{_section(kind)}.certificate: a listener needs certificate and key"]
        )
    base = ListenerConfig(
        kind=kind,
        hostname=settings.gateway.hostname,
        tls=server_context(settings.tls, section.certificate, section.key, _client_ca(kind, settings)),
        max_message_size=inbound.max_message_size,
        max_recipients=inbound.max_recipients,
        max_commands=inbound.max_commands,
        timeout=inbound.timeout,
        connections_per_peer=inbound.connections_per_peer,
        max_connections=inbound.max_connections,
        max_inflight_bytes=inbound.max_inflight_bytes,
        spool_dir=settings.gateway.state_dir,
    )
    if kind == "operator":
        return dataclasses.replace(
            base, dkim=DkimVerifier(dnsfunc), dkim_refuse=inbound.dkim_policy == "refuse"
        )
    submission = settings.submission
    return dataclasses.replace(
        base,
        require_starttls=submission.require_starttls,
        credentials=load_credentials(submission.credentials_file) if submission.credentials_file else {},
        certificate_clients=frozenset(c.name for c in submission.clients if submission.client_ca),
        networks=tuple(
            (ipaddress.ip_network(network, strict=False), client.name)
            for client in submission.clients
            for network in client.networks
        ),
        check_password=verify_password,
    )


def _client_ca(kind: ListenerKind, settings: Settings) -> Path | None:
    """Operators must show a certificate from the MSSanté CAs; internal clients may, from their own CA."""
    return settings.tls.ca_bundle if kind == "operator" else settings.submission.client_ca


def _section(kind: ListenerKind) -> str:
    return "submission" if kind == "submission" else "operator_listener"


def _listens(kind: ListenerKind, settings: Settings) -> bool:
    return bool((settings.submission if kind == "submission" else settings.operator_listener).listen)


class SmtpListener:
    """One listener kind on all its configured addresses."""

    def __init__(
        self,
        kind: ListenerKind,
        settings: Settings,
        intake: IntakePort,
        dnsfunc: DnsFunc | None = None,
        inflight: InflightBytes | None = None,
        connection_count: ConnectionCount | None = None,
    ) -> None:
        self.kind = kind
        self.intake = intake
        self.dnsfunc = dnsfunc
        self.config = listener_config(kind, settings, dnsfunc)
        section = settings.submission if kind == "submission" else settings.operator_listener
        self.addresses = [split_host_port(text) for text in section.listen]
        # Shared by the daemon's listeners: the caps are on the sessions and octets across all of them.
        self.connections = Connections(connection_count)
        self.auth_throttle = AuthThrottle()
        self.inflight = inflight or InflightBytes()
        self.servers: list[asyncio.Server] = []

    @property
    def ports(self) -> list[int]:
        """The bound ports, in the order of the configured addresses (port 0 resolved)."""
        return [int(server.sockets[0].getsockname()[1]) for server in self.servers]

    def _session(self) -> GatewaySMTP:
        return GatewaySMTP(self.config, self.intake, self.connections, self.auth_throttle, self.inflight)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.addresses:
            server = await loop.create_server(self._session, host, port)
            self.servers.append(server)
            bound = server.sockets[0].getsockname()
            log_event(log, "listening", listener=self.kind, address=f"{bound[0]}:{bound[1]}")

    async def stop(self, grace: float) -> None:
        for server in self.servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connections.idle.wait(), grace)
        for session in list(self.connections.sessions):
            # Whatever these sessions were sending was not acknowledged: their clients will send it again.
            if isinstance(session.transport, asyncio.WriteTransport) and not session.transport.is_closing():
                session.transport.write(replies.SHUTTING_DOWN.encode("ascii") + b"\r\n")
                session.transport.close()
        for server in self.servers:
            await server.wait_closed()
        log_event(log, "listener-stopped", listener=self.kind)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        config = listener_config(self.kind, settings, self.dnsfunc)

        def apply() -> None:
            self.config = config

        return apply


def smtp_listeners(
    settings: Settings, intake: IntakePort, dnsfunc: DnsFunc | None = None
) -> list[SmtpListener]:
    """The configured SMTP listeners, sharing one count of sessions (``inbound.max_connections``) and one
    of octets in flight (``inbound.max_inflight_bytes``): both bound the process, whatever the port."""
    inflight, count = InflightBytes(), ConnectionCount()
    kinds: tuple[ListenerKind, ...] = ("submission", "operator")
    return [
        SmtpListener(kind, settings, intake, dnsfunc, inflight=inflight, connection_count=count)
        for kind in kinds
        if _listens(kind, settings)
    ]


def listener_problems(settings: Settings) -> list[str]:
    """What keeps a configured listener from starting (its TLS files, the credentials file), per key."""
    problems: list[str] = []
    kinds: tuple[ListenerKind, ...] = ("submission", "operator")
    for kind in kinds:
        if not _listens(kind, settings):
            continue
        try:
            listener_config(kind, settings)
        except ConfigError as error:
            problems.extend(error.problems)
        except (ssl.SSLError, OSError) as error:
            problems.append(
                f"{_section(kind)}.certificate: cannot use the certificate, key or client CA ({error})"
            )
    if settings.inbound.trust_list_file is not None:
        try:
            load_trust_list(settings.inbound)
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"inbound.trust_list_file: cannot read it ({error})")
    return problems

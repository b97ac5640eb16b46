"""Which next hop a recipient's mail goes to: our own mailboxes' local delivery, static routes, then the
smarthost (client mode) or the recipient domain's MX (operator mode). A delivery report that carries its
way back (``via``, see ``gateway.report_routes``) goes only there, never to the operator.
Pure: no DNS here, an MX destination is resolved by the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.report_routes import CLIENT_PREFIX, MAILBOX, ReportRoutes
from gateway.settings import RouteSettings, Security, Settings


@dataclass(frozen=True, slots=True)
class Destination:
    """A next hop; equal destinations share one transport and its connections."""

    kind: Literal["smtp", "mx", "folder", "local"]
    host: str = ""
    port: int = 25
    security: Security = "starttls"
    path: Path | None = None
    authenticate: bool = False
    lmtp: bool = False

    def __str__(self) -> str:
        if self.kind == "folder":
            return f"folder:{self.path}"
        if self.kind == "local":
            return f"local:{self.host or '-'}:{self.port}:{self.path or '-'}"
        return f"{self.kind}:{self.host}:{self.port}"


UNROUTABLE = Destination("local")
"""A report whose way back was removed from the configuration since it was queued: the local transport
defers it (and it expires like any delivery), rather than sending it anywhere else."""


class Router:
    """Maps recipients to destinations, following the configuration's routes in a fixed order."""

    def __init__(self, settings: Settings) -> None:
        self.exact: dict[str, RouteSettings] = {}
        self.suffixes: list[tuple[str, RouteSettings]] = []
        self.wildcard: RouteSettings | None = None
        for route in settings.routes:
            domain = route.domain.lower().rstrip(".")
            if domain == "*":
                self.wildcard = route
            elif domain.startswith("."):
                self.suffixes.append((domain, route))
            else:
                self.exact[domain] = route
        self.suffixes.sort(key=lambda item: len(item[0]), reverse=True)
        self.mode = settings.gateway.mode
        # Our own mailboxes that deliver further (drop folder, internal MTA) come before any route.
        self.mailboxes = {
            box.address.lower(): Destination(
                "local",
                box.forward_host,
                box.forward_port,
                path=box.drop_folder,
                lmtp=box.forward_protocol == "lmtp",
            )
            for box in settings.inbound.mailboxes
            if box.delivered
        }
        self.reports = ReportRoutes(settings.inbound, settings.submission.clients)
        host = settings.smarthost
        self.smarthost = (
            Destination("smtp", host.host, host.port, host.security, authenticate=bool(host.username))
            if host.host
            else None
        )

    def destination(self, recipient: str, via: str | None = None) -> Destination:
        """The next hop for ``recipient`` (an address whose domain part follows the last ``@``), or the way
        back ``via`` names for a delivery report."""
        if via is not None:
            return self._way_back(recipient, via)
        mailbox = self.mailboxes.get(recipient.lower())
        if mailbox is not None:
            return mailbox
        domain = recipient.rpartition("@")[2].lower().rstrip(".")
        route = self.exact.get(domain)
        if route is None:
            route = next((r for suffix, r in self.suffixes if domain.endswith(suffix)), self.wildcard)
        if route is not None:
            return _from_route(route)
        if self.mode == "client" and self.smarthost is not None:
            return self.smarthost
        return Destination("mx", domain, 25, "starttls")

    def _way_back(self, recipient: str, via: str) -> Destination:
        if via == MAILBOX:
            return self.mailboxes.get(recipient.lower(), UNROUTABLE)
        client = self.reports.client(via.removeprefix(CLIENT_PREFIX))
        if not via.startswith(CLIENT_PREFIX) or client is None:
            return UNROUTABLE
        return Destination(
            "local", client.return_host, client.return_port, lmtp=client.return_protocol == "lmtp"
        )


def _from_route(route: RouteSettings) -> Destination:
    if route.transport == "folder":
        return Destination("folder", path=route.path)
    return Destination("smtp", route.host, route.port, route.security)

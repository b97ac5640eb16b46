"""Our inbound listeners in the test's own loop, on ephemeral loopback ports, over a SQLite store in tmp_path.

``smtp(...)`` runs a blocking ``smtplib`` session in a worker thread so the listener keeps serving while the
client talks. Certificates come from the test PKI; nothing here sleeps to wait for anything.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from gateway import settings as settings_module
from gateway.channels.steps import citizen_intake
from gateway.inbound.dkim_check import DnsFunc
from gateway.inbound.intake import Intake, build_policy
from gateway.inbound.listener import SmtpListener
from gateway.inbound.smtp_server import ListenerKind
from gateway.settings import Settings
from gateway.store.db import Store, open_store
from gateway.store.tables import Delivery, Message
from gateway.trust import TrustList
from tests.support.mail import APP, MAILBOX, OUR_DOMAIN, PEER_DOMAIN
from tests.support.pki import Pki

T = TypeVar("T")
HOSTNAME = "mssgw.hopital.test.mssante.fr"


def listener_settings(tmp_path: Path, pki: Pki, kind: ListenerKind, **sections: dict[str, Any]) -> Settings:
    """Settings with one listener on 127.0.0.1:0; ``sections`` are merged over the defaults."""
    raw: dict[str, Any] = {
        "gateway": {"hostname": HOSTNAME, "state_dir": str(tmp_path / "state"), "mode": "operator"},
        "tls": {"ca_bundle": str(pki.ca)},
        "inbound": {
            "domains": [OUR_DOMAIN],
            "mailboxes": [{"address": MAILBOX}],
            "trusted_domains": [PEER_DOMAIN],
        },
        "submission": {"clients": [{"name": "dpi", "senders": [APP]}]},
    }
    listener = "submission" if kind == "submission" else "operator_listener"
    raw.setdefault(listener, {}).update(
        {"listen": ["127.0.0.1:0"], "certificate": str(pki.server.cert), "key": str(pki.server.key)}
    )
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return settings_module.from_mapping(raw, source=str(tmp_path / "mssgw.toml"))


def open_submission_settings(
    tmp_path: Path, pki: Pki, sections: dict[str, dict[str, Any]] | None = None, **inbound: Any
) -> Settings:
    """A submission listener letting 127.0.0.1 in as client "lab", no TLS or AUTH (an allowed network);
    ``sections`` are merged over the defaults as in ``listener_settings``."""
    return listener_settings(
        tmp_path,
        pki,
        "submission",
        submission={
            "require_starttls": False,
            "clients": [{"name": "lab", "senders": [APP], "networks": ["127.0.0.1/32"]}],
        },
        inbound=inbound,
        **(sections or {}),
    )


@dataclass
class Running:
    """A started listener with its store."""

    listener: SmtpListener
    intake: Intake
    store: Store

    @property
    def port(self) -> int:
        return self.listener.ports[0]

    def messages(self) -> list[tuple[int, str, bytes]]:
        with self.store.sessions() as session:
            rows = session.execute(
                select(Message.id, Message.direction, Message.raw).order_by(Message.id)
            ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def deliveries(self) -> list[tuple[str, str | None, str | None]]:
        with self.store.sessions() as session:
            rows = session.execute(select(Delivery.recipient, Delivery.notify, Delivery.orcpt)).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


@asynccontextmanager
async def running(
    settings: Settings,
    kind: ListenerKind,
    dnsfunc: DnsFunc | None = None,
    *,
    citizen: bool = False,
    official: TrustList | None = None,
) -> AsyncIterator[Running]:
    """Start intake (with the patient and citizen-channel steps when ``citizen``; ``official`` as the
    daemon's MSSanté trust list) and the ``kind`` listener; stop and close everything afterwards."""
    store = open_store(settings.store_url)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    if citizen:
        intake, _ = citizen_intake(settings, store, clock, official=official)
    else:
        policy = build_policy(settings, official=official)
        intake = Intake(
            policy, store.repository.add_messages, clock, documents=settings.documents.header_defaults()
        )
    listener = SmtpListener(kind, settings, intake, dnsfunc)
    await listener.start()
    try:
        yield Running(listener, intake, store)
    finally:
        await listener.stop(1.0)
        store.close()


def client_tls(pki: Pki, certificate: bool = False, untrusted: bool = False) -> ssl.SSLContext:
    """What a peer uses: our test CA to check the server, optionally its client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if certificate:
        pair = pki.untrusted.client if untrusted else pki.client
        context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


async def smtp(port: int, session: Callable[[smtplib.SMTP], T]) -> T:
    """Run ``session(client)`` on a connected ``smtplib.SMTP`` in a thread; the client is closed after."""

    def run() -> T:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as client:
            return session(client)

    return await asyncio.to_thread(run)


def reply(error: smtplib.SMTPResponseException) -> str:
    """``550 5.1.1 …`` from an smtplib exception."""
    return f"{error.smtp_code} {error.smtp_error.decode()}"

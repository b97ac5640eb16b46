"""Operator mode: the relay sends straight to recipient domains, never to one off the MSSanté trust list."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.outbound.mx import MxLookupError
from gateway.outbound.relay import Relay
from gateway.outbound.transports.registry import TransportRegistry
from gateway.settings import from_mapping
from gateway.store.db import Store
from gateway.store.repository import NewMessage, Recipient
from tests.support.relay import run_relay_until, states

TRUSTED = "clinique.mssante.test"


async def test_mail_for_a_domain_off_the_trust_list_is_refused_before_any_look_up(
    store: Store, tmp_path: Path
) -> None:
    settings = from_mapping(
        {
            "gateway": {"mode": "operator", "hostname": "mssgw.hopital.test", "state_dir": str(tmp_path)},
            "relay": {"retry_schedule": ["1h"]},
        }
    )
    looked_up: list[str] = []

    async def resolver(domain: str) -> list[str]:
        looked_up.append(domain)
        raise MxLookupError("no DNS in this test", permanent=False)

    raw = b"From: app@hopital.test\r\nMessage-ID: <t@hopital.test>\r\nSubject: t\r\n\r\nbody\r\n"
    message = NewMessage(
        raw=raw,
        envelope_from="app@hopital.test",
        direction="outbound",
        source="test",
        recipients=(Recipient("a@untrusted.example"), Recipient(f"b@{TRUSTED}")),
        message_id="<t@hopital.test>",
    )
    pk = store.repository.add_messages([message], datetime.now(UTC))[0].pk
    relay = Relay(
        settings,
        store.repository,
        TransportRegistry(settings, mx_resolver=resolver),
        None,
        lambda: datetime.now(UTC),
        trusts=lambda domain: domain == TRUSTED,
    )
    await run_relay_until(relay, lambda: not states(store, pk) & {"queued", "sending"})

    untrusted, trusted = store.queue.show(pk).deliveries
    assert untrusted.state == "notified"
    assert untrusted.last_reply == (
        "5.7.1 untrusted.example is not on the MSSanté trust list: the message was not sent"
    )
    assert trusted.state == "deferred" and trusted.last_reply is not None
    assert "no DNS in this test" in trusted.last_reply
    assert looked_up == [TRUSTED]

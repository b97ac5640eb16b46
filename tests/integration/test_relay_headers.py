"""What the relay adds to every message it sends: ``X-MSS-NIL``, whoever built the message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.outbound.relay import Relay
from gateway.outbound.transports.registry import TransportRegistry
from gateway.settings import from_mapping
from gateway.store.db import Store
from gateway.store.repository import NewMessage, Recipient
from tests.support.relay import run_relay_until, states


async def test_a_message_stored_without_x_mss_nil_leaves_with_the_gateway_s(
    store: Store, tmp_path: Path
) -> None:
    # A DSN or MDN the gateway writes, or software submitting its message as it is, writes no X-MSS-NIL.
    out = tmp_path / "out"
    settings = from_mapping(
        {
            "gateway": {
                "hostname": "mssgw.hopital.test",
                "state_dir": str(tmp_path),
                "nil_reference": "DEV935997",
            },
            "routes": [{"domain": "*", "transport": "folder", "path": str(out)}],
        }
    )
    bare = b"From: app@hopital.test\r\nMessage-ID: <a@hopital.test>\r\nSubject: t\r\n\r\nbody\r\n"
    own = b"X-MSS-NIL: LPS-42\r\nFrom: app@hopital.test\r\nMessage-ID: <b@hopital.test>\r\n\r\nbody\r\n"
    messages = [
        NewMessage(
            raw, "app@hopital.test", "outbound", "test", (Recipient("dr@cabinet.test"),), message_id=mid
        )
        for raw, mid in ((bare, "<a@hopital.test>"), (own, "<b@hopital.test>"))
    ]
    pks = [m.pk for m in store.repository.add_messages(messages, datetime.now(UTC))]
    relay = Relay(
        settings, store.repository, TransportRegistry(settings), None, lambda: datetime.now(UTC), trusts=bool
    )
    await run_relay_until(relay, lambda: states(store, *pks) == {"sent"})

    written = sorted(path.read_bytes() for path in out.glob("*.eml"))
    assert sorted(written) == sorted([b"X-MSS-NIL: DEV935997\r\n" + bare, own])

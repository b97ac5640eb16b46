"""What the relay adds to every message it sends: ``X-MSS-NIL``, whoever built the message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest

from gateway.inbound.smtp_server import ListenerKind
from gateway.outbound import relay as relay_module
from gateway.outbound.relay import CRLF_SOURCES, Relay
from gateway.outbound.transports.registry import TransportRegistry
from gateway.settings import from_mapping
from gateway.store.db import Store
from gateway.store.repository import NewMessage, Recipient
from tests.support.relay import run_relay_until, states


async def _relayed(store: Store, tmp_path: Path, raws: list[bytes], source: str = "test") -> list[bytes]:
    """What the relay writes for each stored message, through the folder transport, sorted."""
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
    messages = [
        NewMessage(
            raw,
            "app@hopital.test",
            "outbound",
            source,
            (Recipient("dr@cabinet.test"),),
            message_id=f"<{n}@h>",
        )
        for n, raw in enumerate(raws)
    ]
    pks = [m.pk for m in store.repository.add_messages(messages, datetime.now(UTC))]
    relay = Relay(
        settings, store.repository, TransportRegistry(settings), None, lambda: datetime.now(UTC), trusts=bool
    )
    await run_relay_until(relay, lambda: states(store, *pks) == {"sent"})
    return sorted(path.read_bytes() for path in out.glob("*.eml"))


async def test_a_message_stored_without_x_mss_nil_leaves_with_the_gateway_s(
    store: Store, tmp_path: Path
) -> None:
    # A DSN or MDN the gateway writes, or software submitting its message as it is, writes no X-MSS-NIL.
    bare = b"From: app@hopital.test\r\nMessage-ID: <a@hopital.test>\r\nSubject: t\r\n\r\nbody\r\n"
    own = b"X-MSS-NIL: LPS-42\r\nFrom: app@hopital.test\r\nMessage-ID: <b@hopital.test>\r\n\r\nbody\r\n"
    written = await _relayed(store, tmp_path, [bare, own])
    assert written == sorted([b"X-MSS-NIL: DEV935997\r\n" + bare, own])


@pytest.mark.parametrize("source", ["imap", "test"])
async def test_a_message_stored_with_bare_line_ends_leaves_in_crlf(
    store: Store, tmp_path: Path, source: str
) -> None:
    # What an operator's IMAP server gave the bridge is stored as given; the relay sends it in CRLF.
    stored = b"From: app@hopital.test\nMessage-ID: <c@hopital.test>\rSubject: t\n\n.body\r\nend\n"
    written = await _relayed(store, tmp_path, [stored], source)
    expected = b"From: app@hopital.test\r\nMessage-ID: <c@hopital.test>\r\nSubject: t\r\n\r\n.body\r\nend\r\n"
    assert written == [b"X-MSS-NIL: DEV935997\r\n" + expected]


@pytest.mark.parametrize("source", sorted(CRLF_SOURCES))
async def test_what_a_listener_stored_leaves_as_stored_without_a_search(
    store: Store, tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listeners refused bare line ends before intake stored the message: no search is owed.
    def searched(data: bytes) -> bytes:
        raise AssertionError("the stored copy of an SMTP listener's message was searched for bare line ends")

    monkeypatch.setattr(relay_module.wire, "crlf", searched)
    stored = b"From: app@hopital.test\r\nMessage-ID: <d@hopital.test>\r\n\r\n.body\r\n"
    assert await _relayed(store, tmp_path, [stored], source) == [b"X-MSS-NIL: DEV935997\r\n" + stored]


def test_the_sources_sent_unsearched_are_the_smtp_listeners() -> None:
    # A new source is searched until someone shows its stored copies are CRLF (the listeners refuse DATA
    # with a bare CR or LF).
    assert set(get_args(ListenerKind)) == CRLF_SOURCES

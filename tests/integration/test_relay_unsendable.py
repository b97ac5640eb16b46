"""A message SMTP can never carry fails at once with a DSN, instead of being retried for five days."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.outbound.relay import Relay
from gateway.outbound.transports.registry import TransportRegistry
from gateway.settings import from_mapping
from gateway.store.db import Store
from gateway.store.repository import NewMessage, Recipient
from gateway.store.tables import Message
from tests.support.fake_operator import refused_port
from tests.support.pki import Pki
from tests.support.relay import run_relay_until, states

RAW = b"From: app@hopital.test\r\nMessage-ID: <u@hopital.test>\r\nSubject: t\r\n\r\nbody\r\n"
NUL = RAW.replace(b"body", b"bo\0dy")
NUL_REPLY = "5.6.0 NUL character in the message data"


@pytest.mark.parametrize(
    ("sender", "raw", "reply", "dsn"),
    [
        ("app@hopital.test", NUL, NUL_REPLY, True),
        # No report can be addressed to such a sender, nor to a null one (never a DSN about a DSN).
        ("app\r@hopital.test", RAW, "5.1.7 control character in the envelope value 'app\\r@", False),
        ("", NUL, NUL_REPLY, False),
    ],
    ids=["NUL-in-data", "CR-in-sender", "NUL-from-null-sender"],
)
async def test_an_unsendable_message_fails_on_its_first_attempt_with_a_dsn(
    store: Store, tmp_path: Path, pki: Pki, sender: str, raw: bytes, reply: str, dsn: bool
) -> None:
    # Nothing listens on the smarthost's port: a connection attempt would make it a deferral instead.
    settings = from_mapping(
        {
            "gateway": {"hostname": "mssgw.hopital.test", "state_dir": str(tmp_path)},
            "smarthost": {"host": "127.0.0.1", "port": refused_port()},
            "tls": {"ca_bundle": str(pki.ca)},
            "relay": {"retry_schedule": ["1h"]},
        }
    )
    message = NewMessage(
        raw, sender, "outbound", "test", (Recipient("dr@cabinet.test"),), message_id="<u@hopital.test>"
    )
    pk = store.repository.add_messages([message], datetime.now(UTC))[0].pk
    relay = Relay(
        settings, store.repository, TransportRegistry(settings), None, lambda: datetime.now(UTC), trusts=bool
    )
    await run_relay_until(relay, lambda: not states(store, pk) & {"queued", "sending"})

    [delivery] = store.queue.show(pk).deliveries
    assert delivery.attempts == 1
    assert delivery.last_reply is not None and delivery.last_reply.startswith(reply)
    if dsn:
        assert delivery.state == "notified" and delivery.notice_id is not None
        notice = store.queue.show(delivery.notice_id)
        assert notice.envelope_from == "" and notice.related_id == pk
    else:
        assert delivery.state == "failed" and delivery.notice_id is None


async def test_the_report_quotes_the_stored_message_not_the_fields_the_relay_put_in_front(
    store: Store, tmp_path: Path, pki: Pki
) -> None:
    # The relay keeps only the copy it sends (X-MSS-NIL first) and quotes the stored one back from it.
    settings = from_mapping(
        {
            "gateway": {
                "hostname": "mssgw.hopital.test",
                "state_dir": str(tmp_path),
                "nil_reference": "DEV1",
            },
            "smarthost": {"host": "127.0.0.1", "port": refused_port()},
            "tls": {"ca_bundle": str(pki.ca)},
        }
    )
    message = NewMessage(
        NUL,
        "app@hopital.test",
        "outbound",
        "test",
        (Recipient("dr@cabinet.test"),),
        message_id="<u@hopital.test>",
    )
    pk = store.repository.add_messages([message], datetime.now(UTC))[0].pk
    relay = Relay(
        settings, store.repository, TransportRegistry(settings), None, lambda: datetime.now(UTC), trusts=bool
    )
    await run_relay_until(relay, lambda: not states(store, pk) & {"queued", "sending"})

    [delivery] = store.queue.show(pk).deliveries
    assert delivery.notice_id is not None
    with store.sessions() as session:
        notice = session.execute(select(Message.raw).where(Message.id == delivery.notice_id)).scalar_one()
    quoted = "From: app@hopital.test\nMessage-ID: <u@hopital.test>\nSubject: t\n"
    assert quoted in notice.decode("utf-8").replace("\r\n", "\n")
    assert b"X-MSS-NIL" not in notice

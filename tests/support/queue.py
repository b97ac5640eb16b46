"""Filling a test gateway's queue as an internal application does: through the store API, then a wake-up."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway import wake
from gateway.settings import load
from gateway.store.db import open_store
from gateway.store.repository import NewMessage, Recipient
from tests.support.gateway import SENDER, Gateway


def queue_messages(gateway: Gateway, count: int, tag: str = "crash", size: int = 0) -> set[str]:
    """Commit ``count`` messages (bodies of about ``size`` bytes) in one batch; their Message-IDs."""
    store = open_store(load(gateway.config).store_url)
    ids = {f"<{tag}-{n}@hopital.test.mssante.fr>" for n in range(count)}
    body = "body\r\n" + ("x" * 76 + "\r\n") * (size // 78)
    batch = [
        NewMessage(
            raw=f"From: {SENDER}\r\nTo: dr@cabinet.test\r\nMessage-ID: {mid}\r\n\r\n{body}".encode(),
            envelope_from=SENDER,
            direction="outbound",
            source="api",
            recipients=(Recipient("dr@cabinet.test"),),
            message_id=mid,
        )
        for mid in sorted(ids)
    ]
    store.repository.add_messages(batch, datetime.now(UTC))
    store.close()
    wake.ping(gateway.state_dir)
    return ids

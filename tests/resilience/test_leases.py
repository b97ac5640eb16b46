"""Leases that mean what they say: a delivery that waits longer than its lease — for a slow next hop, or
for a transaction slot — is not claimed again by its own live instance, so nothing is sent twice without
a kill; and the relay claims no more deliveries than it has free transaction slots."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import Gateway, gateway_for
from tests.support.pki import Pki
from tests.support.queue import queue_messages

COUNT = 24
CONCURRENCY = 4
LEASE = 2.0


def sending(gateway: Gateway) -> int:
    """Deliveries leased right now, as ``mssgw queue list --state sending`` shows them."""
    entries = gateway.json("queue", "list", "--state", "sending")
    return sum(1 for entry in entries for d in entry["deliveries"] if d["state"] == "sending")


def test_a_transaction_outliving_its_lease_is_neither_claimed_again_nor_sent_twice(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    relay = {"lease": f"{LEASE}s", "concurrency": CONCURRENCY, "connections_per_destination": CONCURRENCY}
    gateway = gateway_for(tmp_path / "gw", pki, operator, relay=relay)
    gateways.append(gateway)
    gateway.start()
    operator.hold()
    expected = queue_messages(gateway, COUNT, tag="lease", size=200_000)
    operator.wait_for_held(CONCURRENCY)
    # Three leases long: without renewal every claimed delivery would be claimed again meanwhile.
    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:
        assert sending(gateway) <= CONCURRENCY
        time.sleep(0.3)
    assert operator.held == CONCURRENCY
    operator.release()

    def delivered() -> list[str]:
        return [str(m.message["Message-ID"]) for m in operator.messages]

    operator.wait_until(lambda: set(delivered()) == expected, timeout=60, what=f"{COUNT} messages")
    assert gateway.stop() == 0
    assert sorted(delivered()) == sorted(expected)
    assert gateway.json("queue", "list") == []
    first = gateway.json("queue", "list", "--all")[0]["id"]
    events = [kind for _, kind, _ in (tuple(e) for e in gateway.json("queue", "show", str(first))["events"])]
    assert "lease-reclaimed" not in events and "held" not in events

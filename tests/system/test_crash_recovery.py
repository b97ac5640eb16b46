"""``kill -9`` in the middle of deliveries loses nothing: every queued message arrives after a restart, and
only the transactions that were in flight at the moment of the kill may arrive twice."""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import Gateway, gateway_for
from tests.support.pki import Pki
from tests.support.queue import queue_messages

COUNT = 200


def test_sigkill_while_delivering_loses_nothing(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator, relay={"connections_per_destination": 4})
    gateways.append(gateway)
    gateway.start()
    operator.hold()
    expected = queue_messages(gateway, COUNT)
    operator.wait_for_held(4)
    in_flight = operator.held

    gateway.kill()
    operator.release()
    gateway.start()

    def delivered() -> list[str]:
        return [str(m.message["Message-ID"]) for m in operator.messages]

    operator.wait_until(lambda: set(delivered()) == expected, timeout=120, what=f"{COUNT} distinct messages")
    assert gateway.stop() == 0
    ids = delivered()
    assert set(ids) == expected
    assert len(ids) - COUNT <= in_flight
    assert gateway.json("queue", "list") == []

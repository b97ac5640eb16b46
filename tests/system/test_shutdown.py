"""SIGTERM: the daemon stops claiming, lets deliveries in flight finish within its grace time, gives the
unfinished ones back to the queue, and exits 0."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.pki import Pki

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


def test_a_delivery_in_flight_finishes_before_the_daemon_exits(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateways.append(gateway)
    gateway.start()
    operator.hold()
    queue_id = gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", "in flight")
    operator.wait_for_held(1)
    assert gateway.process is not None
    gateway.process.terminate()
    operator.release()
    assert gateway.process.wait(30) == 0
    gateway.process = None
    (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
    assert delivery["state"] == "sent" and len(operator.messages) == 1


def test_a_peer_that_never_answers_does_not_hold_the_stop_beyond_the_grace_time(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["gateway"]["shutdown_timeout"] = "1s"
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    operator.hold()
    queue_id = gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", "stuck")
    operator.wait_for_held(1)
    started = time.monotonic()
    assert gateway.stop() == 0
    assert time.monotonic() - started < 10
    (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
    assert delivery["state"] == "queued"
    assert "stopping" in gateway.output() and "stopped" in gateway.output()
    operator.release()

"""``gateway.relay_process = true``: the relay runs in a child process of ``mssgw run``; mail still goes out,
a stop and a reload reach it, and its death is the gateway's (loudly, for systemd to restart both)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from gateway.trust import FOLLOW_INTERVAL
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, STOP_TIMEOUT, Gateway, gateway_for
from tests.support.https import HttpsServer
from tests.support.notify import NotifySocket, count, index
from tests.support.pki import Pki
from tests.unit.mappers.test_trustlist import SAMPLE

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


@pytest.fixture
def split(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> tuple[Gateway, FakeOperator]:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["gateway"]["relay_process"] = True
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    return gateway, operator


def relay_pid(gateway: Gateway) -> int:
    found = re.search(r"event=relay-process-started pid=(\d+)", gateway.wait_for_output("event=started", 2))
    assert found
    return int(found.group(1))


def send(gateway: Gateway, subject: str) -> int:
    return gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", subject)


def test_systemd_hears_ready_once_the_relay_process_is_ready_and_only_from_the_parent(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["gateway"]["relay_process"] = True
    gateway.write()
    gateways.append(gateway)
    with NotifySocket(lambda: gateway.output().count("event=started")) as manager:
        gateway.start(env={"NOTIFY_SOCKET": manager.address})
        seen = manager.wait_for(lambda seen: index(seen, "READY") >= 0)
        assert seen[index(seen, "READY")].probe == 2, "the relay process and the parent both started"
        assert gateway.stop() == 0
        seen = manager.wait_for(lambda seen: index(seen, "STOPPING") >= 0)
    assert count(seen, "READY") == 1, "the relay process's READY went to the parent, not to systemd"


def test_a_delivery_in_flight_in_the_relay_process_finishes_before_the_gateway_exits(
    split: tuple[Gateway, FakeOperator],
) -> None:
    gateway, operator = split
    child = relay_pid(gateway)
    operator.hold()
    queue_id = send(gateway, "in flight")
    operator.wait_for_held(1)
    assert gateway.process is not None
    gateway.process.terminate()
    operator.release()
    assert gateway.process.wait(STOP_TIMEOUT) == 0
    gateway.process = None
    (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
    assert delivery["state"] == "sent" and len(operator.messages) == 1
    assert not Path(f"/proc/{child}").exists()


def test_a_reload_reaches_the_relay_process(split: tuple[Gateway, FakeOperator]) -> None:
    gateway, operator = split
    gateway.reload()
    gateway.wait_for_output("event=reloaded", count=2)  # the parent's and the relay process's
    send(gateway, "after the reload")
    operator.wait_for_messages(1)
    assert gateway.stop() == 0


def test_the_relay_process_dying_ends_the_gateway_with_a_failure(split: tuple[Gateway, FakeOperator]) -> None:
    gateway, _ = split
    os.kill(relay_pid(gateway), signal.SIGKILL)
    assert gateway.process is not None
    assert gateway.process.wait(STOP_TIMEOUT) != 0
    gateway.process = None
    assert "event=relay-process-died" in gateway.output()


def test_the_relay_process_stops_when_the_gateway_is_killed(split: tuple[Gateway, FakeOperator]) -> None:
    gateway, _ = split
    child = relay_pid(gateway)
    gateway.kill()
    deadline = time.monotonic() + STOP_TIMEOUT
    while Path(f"/proc/{child}").exists() and b"zombie" not in _state(child):
        assert time.monotonic() < deadline, "the relay process outlived its gateway"
        time.sleep(0.05)
    assert "event=parent-gone" in gateway.output()


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes().lower()
    except FileNotFoundError:
        return b"zombie"


def test_a_hung_relay_process_is_killed_and_ends_the_gateway(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    """Under systemd's watchdog the child's loop is held to it as well: silent a ``WatchdogSec``, hung."""
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["gateway"]["relay_process"] = True
    gateway.write()
    gateways.append(gateway)
    with NotifySocket() as manager:
        gateway.start(env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
        manager.wait_for(lambda seen: count(seen, "WATCHDOG") >= 3)
        child = relay_pid(gateway)
        time.sleep(2)
        assert gateway.process is not None and gateway.process.poll() is None, "heartbeats keep it alive"
        os.kill(child, signal.SIGSTOP)  # its loop no longer runs
        assert gateway.process.wait(STOP_TIMEOUT) != 0
    gateway.process = None
    output = gateway.output()
    assert f"event=relay-process-hung pid={child}" in output
    assert "event=relay-process-died code=-9" in output


def test_only_the_gateway_fetches_the_trust_list_and_the_relay_process_follows_its_copy(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    with HttpsServer(pki.server) as server:
        server.files["/liste.xml"] = SAMPLE.read_bytes()
        gateway = gateway_for(tmp_path / "gw", pki, None)
        gateway.sections["gateway"]["relay_process"] = True
        gateway.sections["trust"] = {
            "url": server.url("/liste.xml"),
            "ca_bundle": str(pki.ca),
            "refresh": "1h",
        }
        gateway.write()
        gateways.append(gateway)
        gateway.start()
        gateway.wait_for_output("event=trust-list-updated")
        # The parent's, then the relay process's (at its start, or once it saw the copy saved).
        gateway.wait_for_output("event=trust-list-in-force domains=4", count=2, timeout=FOLLOW_INTERVAL + 10)
        assert gateway.stop() == 0
    assert server.requests == ["/liste.xml"]

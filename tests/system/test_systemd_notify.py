"""``mssgw run`` under a stand-in for systemd: READY=1 only once everything listens, WATCHDOG=1 from the
event loop, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from tests.support.gateway import Gateway, gateway_for
from tests.support.notify import Notification, NotifySocket, count, index
from tests.support.pki import Pki

_LISTENING = re.compile(r"event=\S*listening\b.*?\baddress=\[?([^\s\]]+?)\]?:(\d+)\b")


def listening(gateway: Gateway) -> dict[str, bool]:
    """Every address the daemon logged as listening (metrics, SMTP listeners …) → accepts connections now."""
    result: dict[str, bool] = {}
    for host, port in _LISTENING.findall(gateway.output()):
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            result[f"{host}:{port}"] = True
        except OSError:
            result[f"{host}:{port}"] = False
    return result


def ready_state(gateway: Gateway) -> dict[str, object]:
    return {"wake_socket": (gateway.state_dir / "wake.sock").exists(), "listening": listening(gateway)}


def test_systemd_hears_ready_watchdog_reloading_and_stopping_in_order(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["metrics"] = {"listen": "127.0.0.1:0"}
    gateway.sections["submission"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
    }
    gateway.write()
    gateways.append(gateway)
    with NotifySocket(lambda: ready_state(gateway)) as manager:
        gateway.start(env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000"})

        def ready_then_pings(seen: list[Notification]) -> bool:
            first = index(seen, "READY")
            return first >= 0 and count(seen[first:], "WATCHDOG") >= 3

        seen = manager.wait_for(ready_then_pings)
        ready = seen[index(seen, "READY")]
        assert ready.probe == {"wake_socket": True, "listening": {a: True for a in listening(gateway)}}
        assert len(listening(gateway)) == 2, "the metrics endpoint and the SMTP listener log their address"
        assert ready.fields["STATUS"] == "ready: queue 0 queued, 0 deferred, 0 sending, 0 held"
        assert index(seen, "WATCHDOG") > index(seen, "READY"), "no heartbeat before READY"

        before = len(seen)
        gateway.reload()

        def reloaded(seen: list[Notification]) -> bool:
            reloading = index(seen, "RELOADING", start=before)
            return reloading >= 0 and index(seen, "READY", start=reloading) > reloading

        seen = manager.wait_for(reloaded)
        reloading = seen[index(seen, "RELOADING", start=before)]
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0

        before = len(seen)
        assert gateway.stop() == 0
        seen = manager.wait_for(lambda s: index(s, "STOPPING", start=before) >= 0)
    assert count(seen, "READY") == 2

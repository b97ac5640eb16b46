"""SIGTERM is orderly on every store: claiming stops, transactions in flight finish, leases go back — in
that order, never beside a claim — and the daemon exits 0. A stop never counts as a crash: six stops in a
row while deliveries defer (and are claimed again every 200 ms) leave nothing ``held``."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.support.gateway import Gateway, gateway_for
from tests.support.pki import Pki
from tests.support.queue import queue_messages

STOPS = 6
COUNT = 40


def test_six_stops_while_deliveries_defer_exit_0_and_hold_nothing(
    tmp_path: Path, pki: Pki, store_url: str, gateways: list[Gateway]
) -> None:
    # No next hop listens: every attempt defers, and is due again 200 ms later.
    gateway = gateway_for(tmp_path / "gw", pki, None, store_url=store_url, relay={"concurrency": 8})
    gateways.append(gateway)
    shuffle = random.Random(11)
    codes: list[int] = []
    for run in range(STOPS):
        gateway.start()
        if run == 0:
            queue_messages(gateway, COUNT, tag="stop")
        output = gateway.wait_for_output("event=leases-recovered")
        assert "event=leases-recovered count=0" in output
        gateway.wait_for_output("event=deferred", count=COUNT // 2)
        time.sleep(shuffle.uniform(0.0, 0.5))
        codes.append(gateway.stop())
        assert codes[-1] == 0, gateway.output()[-4000:]
        assert "event=leases-released" in gateway.output()
    held = gateway.json("queue", "list", "--state", "held")
    print(f"orderly-stop store={'postgresql' if store_url else 'sqlite'} exit_codes={codes} held={len(held)}")
    assert held == []
    assert gateway.json("queue", "list", "--state", "sending") == []
    for entry in gateway.json("queue", "list")[:5]:
        events = {event[1] for event in gateway.json("queue", "show", str(entry["id"]))["events"]}
        assert not events & {"lease-reclaimed", "held"}, events

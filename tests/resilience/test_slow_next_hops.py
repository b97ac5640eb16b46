"""Slow and stalling next hops beyond the lease (issue 11 point 7).

A next hop that answers every DATA only after more than two leases still progresses: each message is
delivered exactly once, the instance never reclaims its own live delivery (no two open transactions carry
the same message, no ``lease-reclaimed`` event), nothing is ``held``, and a SIGTERM with slow transactions
in flight waits for their answers and exits 0. A next hop that never answers makes the transaction time
out (``relay.command_timeout``, longer than the lease): the delivery defers and is tried again later, one
transaction at a time, and once the next hop answers again it is delivered exactly once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import Gateway, gateway_for
from tests.support.pki import Pki
from tests.support.queue import queue_messages

LEASE = 1.0
CONCURRENCY = 2


def relay_settings(**changes: Any) -> dict[str, Any]:
    return {
        "lease": f"{LEASE}s",
        "concurrency": CONCURRENCY,
        "connections_per_destination": CONCURRENCY,
        **changes,
    }


def deliveries(gateway: Gateway) -> list[dict[str, Any]]:
    """Every delivery of every message, as ``mssgw queue show`` gives it, with its message's events."""
    shown = []
    for entry in gateway.json("queue", "list", "--all"):
        message = gateway.json("queue", "show", str(entry["id"]))
        events = {event[1] for event in message["events"]}
        shown.extend({**delivery, "events": events} for delivery in message["deliveries"])
    return shown


def delivered(operator: FakeOperator) -> list[str]:
    return [str(m.message["Message-ID"]) for m in operator.messages]


def test_a_next_hop_slower_than_the_lease_gets_each_message_once_and_a_stop_waits_for_it(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, store_url: str, gateways: list[Gateway]
) -> None:
    count, answer_after = 6, 2.5 * LEASE
    operator = fake_operator()
    operator.answer_after(answer_after)
    gateway = gateway_for(tmp_path / "gw", pki, operator, store_url=store_url, relay=relay_settings())
    gateways.append(gateway)
    gateway.start()
    expected = queue_messages(gateway, count, tag="slow")
    # Stop while the second round of slow transactions is open: the stop must wait for their answers.
    operator.wait_until(lambda: len(operator.attempts) > CONCURRENCY, timeout=30, what="a second round")
    in_flight = set(operator.attempts[CONCURRENCY:])
    assert gateway.stop() == 0, gateway.output()[-4000:]
    assert in_flight <= set(delivered(operator)), "a transaction open at the stop was not answered"
    gateway.start()
    assert "event=leases-recovered count=0" in gateway.wait_for_output("event=leases-recovered")
    operator.wait_until(lambda: set(delivered(operator)) == expected, timeout=60, what=f"{count} messages")
    assert gateway.stop() == 0, gateway.output()[-4000:]

    assert sorted(delivered(operator)) == sorted(expected)
    assert operator.overlaps == []
    assert Counter(operator.attempts) == Counter(expected)  # one transaction each: no reclaim, no retry
    shown = deliveries(gateway)
    assert [[(a["outcome"], a["code"]) for a in d["history"]] for d in shown] == [[("sent", 250)]] * count
    assert [(d["state"], d["attempts"]) for d in shown] == [("sent", 1)] * count, shown
    assert all(not d["events"] & {"lease-reclaimed", "held"} for d in shown), shown


def test_a_next_hop_that_never_answers_times_out_and_is_retried_one_transaction_at_a_time(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, store_url: str, gateways: list[Gateway]
) -> None:
    count, command_timeout = 3, 2.5 * LEASE
    operator = fake_operator()
    operator.answer_after(None)
    relay = relay_settings(command_timeout=f"{command_timeout}s", retry_schedule=["500ms"])
    gateway = gateway_for(tmp_path / "gw", pki, operator, store_url=store_url, relay=relay)
    gateways.append(gateway)
    gateway.start()
    expected = queue_messages(gateway, count, tag="stall")
    # Every message stalls, times out after 2.5 leases, defers and stalls again on its retry.
    operator.wait_until(
        lambda: all(operator.attempts.count(mid) >= 2 for mid in expected), timeout=60, what="2 tries each"
    )
    timed_out = [d for d in deliveries(gateway) if d["attempts"] >= 1 and d["state"] != "sent"]
    assert timed_out and all(d["state"] in ("deferred", "sending") for d in timed_out), timed_out
    assert "lost during the transaction" in gateway.output()
    assert operator.messages == []
    operator.answer_after(0)
    operator.wait_until(lambda: set(delivered(operator)) == expected, timeout=60, what=f"{count} messages")
    assert gateway.stop() == 0, gateway.output()[-4000:]

    assert sorted(delivered(operator)) == sorted(expected)
    assert operator.overlaps == []
    assert operator.stalled == 0
    shown = deliveries(gateway)
    assert [d["state"] for d in shown] == ["sent"] * count
    tries = Counter(operator.attempts)
    # The queue counts every transaction the next hop saw, and none it did not.
    assert sorted(d["attempts"] for d in shown) == sorted(tries.values()), (shown, tries)
    assert all(not d["events"] & {"lease-reclaimed", "held"} for d in shown), shown
    print(
        f"stalling-next-hop store={'postgresql' if store_url else 'sqlite'} "
        f"transactions={sum(tries.values())} delivered={len(operator.messages)} overlaps=0"
    )

"""The per-address delay of failed logins: doubling, capped, forgotten after a quiet while, bounded."""

from __future__ import annotations

from gateway.inbound.auth_throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_failure_from_an_address_doubles_the_delay_up_to_the_cap() -> None:
    throttle = AuthThrottle(base=1.0, cap=5.0, clock=Clock())
    assert [throttle.failed("192.0.2.1") for _ in range(5)] == [
        (1, 0.0),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (5, 5.0),
    ]
    assert throttle.failed("192.0.2.2") == (1, 0.0)


def test_a_quiet_address_or_a_success_starts_again() -> None:
    clock = Clock()
    throttle = AuthThrottle(base=1.0, forget=60.0, clock=clock)
    throttle.failed("192.0.2.1")
    throttle.failed("192.0.2.1")
    clock.now = 61.0
    assert throttle.failed("192.0.2.1") == (1, 0.0)
    throttle.failed("192.0.2.1")
    throttle.succeeded("192.0.2.1")
    assert throttle.failed("192.0.2.1") == (1, 0.0)


def test_the_table_keeps_the_most_recent_addresses_only() -> None:
    throttle = AuthThrottle(max_addresses=2, clock=Clock())
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3"):
        throttle.failed(address)
    assert throttle.failed("192.0.2.1") == (3, 2.0)
    assert throttle.failed("192.0.2.2") == (1, 0.0)

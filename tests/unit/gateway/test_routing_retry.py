"""Routing and retry policy: pure decisions, tested without sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway import settings
from gateway.outbound.retry import gives_up, next_attempt_at
from gateway.outbound.routing import Destination, Router

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def router(tmp_path: Path, mode: str = "client", smarthost: str = "smtp.operateur.test") -> Router:
    ca = tmp_path / "ca.pem"
    ca.write_text("x", encoding="utf-8")
    raw = {
        "gateway": {"mode": mode},
        "tls": {"ca_bundle": str(ca)},
        "smarthost": {"host": smarthost, "port": 587},
        "routes": [
            {"domain": "voisin.mssante.fr", "host": "mx.voisin.test", "port": 2525},
            {"domain": ".chu.mssante.fr", "host": "relay.chu.test", "security": "tls", "port": 465},
            {"domain": "archive.local", "transport": "folder", "path": str(tmp_path / "drop")},
        ],
    }
    return Router(settings.from_mapping(raw))


def test_routes_are_tried_exact_then_suffix_then_smarthost(tmp_path: Path) -> None:
    r = router(tmp_path)
    assert r.destination("a@VOISIN.mssante.fr") == Destination("smtp", "mx.voisin.test", 2525)
    assert r.destination("b@cardio.chu.mssante.fr") == Destination("smtp", "relay.chu.test", 465, "tls")
    assert r.destination("c@archive.local") == Destination("folder", path=tmp_path / "drop")
    assert r.destination("279035121518989@patient.mssante.fr") == Destination(
        "smtp", "smtp.operateur.test", 587
    )


def test_operator_mode_goes_to_the_recipient_domains_mx(tmp_path: Path) -> None:
    r = router(tmp_path, mode="operator")
    assert r.destination("x@clinique.mssante.fr") == Destination("mx", "clinique.mssante.fr", 25)
    assert r.destination("a@voisin.mssante.fr").host == "mx.voisin.test"


def test_retry_delays_follow_the_schedule_and_repeat_the_last() -> None:
    schedule = (60.0, 300.0, 900.0)
    delays = [next_attempt_at(NOW, n, schedule) - NOW for n in (1, 2, 3, 4, 10)]
    assert delays == [timedelta(minutes=1), timedelta(minutes=5)] + [timedelta(minutes=15)] * 3


@given(st.integers(min_value=1, max_value=10_000), st.lists(st.floats(0, 1e6), min_size=1, max_size=8))
def test_a_retry_is_never_scheduled_in_the_past(attempts: int, schedule: list[float]) -> None:
    assert next_attempt_at(NOW, attempts, schedule) >= NOW


def test_giving_up_happens_at_max_lifetime() -> None:
    five_days = 5 * 86400.0
    assert not gives_up(NOW - timedelta(days=4, hours=23), NOW, five_days)
    assert gives_up(NOW - timedelta(days=5), NOW, five_days)

"""Settings of the operations sections: metrics only on loopback, the trust list only over HTTPS, sane
certificate thresholds; each refusal names its key."""

from __future__ import annotations

import pytest

from gateway import settings, settings_checks
from gateway.errors import ConfigError


def problems(**sections: dict[str, object]) -> tuple[str, ...]:
    raw = {"gateway": {"mode": "operator"}, **sections}
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    return caught.value.problems


@pytest.mark.parametrize("listen", ["127.0.0.1:9325", "[::1]:9325", "127.0.0.2:0", ""])
def test_loopback_metrics_addresses_are_accepted(listen: str) -> None:
    loaded = settings.from_mapping({"gateway": {"mode": "operator"}, "metrics": {"listen": listen}})
    assert loaded.metrics.listen == listen
    if listen:
        assert settings_checks.split_host_port(listen)[1] in (9325, 0)


@pytest.mark.parametrize("listen", ["0.0.0.0:9325", "10.1.2.3:9325", "[::]:9325", "localhost", "127.0.0.1:x"])
def test_metrics_off_loopback_or_malformed_are_refused(listen: str) -> None:
    (problem,) = problems(metrics={"listen": listen})
    assert problem.startswith("metrics.listen:")


def test_the_trust_list_url_must_be_https() -> None:
    (problem,) = problems(trust={"url": "http://espacedeconfiance.example/listeblanche.xml"})
    assert problem.startswith("trust.url: must be an https:// URL")


def test_the_error_threshold_cannot_come_before_the_warning() -> None:
    (problem,) = problems(certificates={"warn_before": "7d", "error_before": "30d"})
    assert problem.startswith("certificates.error_before:")


def test_defaults_check_daily_and_warn_30_days_ahead() -> None:
    loaded = settings.from_mapping({"gateway": {"mode": "operator"}})
    assert loaded.certificates.check_interval == 86400.0
    assert loaded.certificates.warn_before == 30 * 86400.0 and loaded.certificates.error_before == 7 * 86400.0
    assert loaded.trust.refresh == 86400.0 and loaded.metrics.listen == ""

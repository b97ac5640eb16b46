"""The Prometheus endpoint, scraped after real traffic through ``mssgw run``: the counters say what
happened to the messages the test sent, and the gauges what the store and the certificates say."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.pki import Pki

DEADLINE = 30.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:  # noqa: S310 (loopback)
        text = answer.read().decode()
    described = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(described) == len(set(described)), "one family per name, as Prometheus wants"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("relay_process", [False, True], ids=["one-process", "relay-process"])
def test_counters_match_the_traffic_sent(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway], relay_process: bool
) -> None:
    """With ``gateway.relay_process`` the relay counts in the child, and the parent serves its counts."""
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["metrics"] = {"listen": "127.0.0.1:0"}
    gateway.sections["gateway"]["relay_process"] = relay_process
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    found = re.search(r"event=metrics-listening address=(\S+)", gateway.output())
    assert found, gateway.output()
    address = found.group(1)

    refused = "inconnu@cabinet.test.mssante.fr"
    operator.script(("DATA", 451, "4.3.0 try again later"), ("RCPT", 550, "5.1.1 no such mailbox", refused))
    for number in (1, 2):
        gateway.send("--from", SENDER, "--to", f"dr.{number}@cabinet.test.mssante.fr", "--subject", "CR")
    gateway.send("--from", SENDER, "--to", refused, "--subject", "CR")
    operator.wait_for_messages(2)

    deadline = time.monotonic() + DEADLINE
    while (samples := scrape(address)) and value(samples, "mssgw_deliveries_total", outcome="sent") < 2:
        assert time.monotonic() < deadline, samples
        time.sleep(0.05)
    assert value(samples, "mssgw_deliveries_total", outcome="sent") == 2
    assert value(samples, "mssgw_deliveries_total", outcome="deferred") == 1
    assert value(samples, "mssgw_deliveries_total", outcome="failed") == 1
    assert value(samples, "mssgw_delivery_retries_total") == 1
    assert value(samples, "mssgw_delivery_latency_seconds_count") == 2
    for state in ("queued", "deferred", "sending", "held"):
        assert value(samples, "mssgw_queue_depth", state=state) == 0
    assert value(samples, "mssgw_queue_oldest_age_seconds") == 0
    assert value(samples, "mssgw_store_up") == 1
    # No list was ever loaded: an alert on the age fires (and one on loaded == 0).
    assert value(samples, "mssgw_trust_list_loaded") == 0
    assert value(samples, "mssgw_trust_list_age_seconds") == float("inf")
    days = value(
        samples, "mssgw_certificate_expiry_days", key="tls.client_certificate", path=str(pki.client.cert)
    )
    assert days > 300
    for path in ("/", "/metrics/", "/favicon.ico", "/anything"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://{address}{path}", timeout=10)  # noqa: S310 (loopback)
        missing.value.close()
        assert missing.value.code == 404, path
    assert gateway.stop() == 0


def test_queue_gauges_show_waiting_mail(tmp_path: Path, pki: Pki, gateways: list[Gateway]) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, None, relay={"retry_schedule": ["1h"]})
    gateway.sections["metrics"] = {"listen": "127.0.0.1:0"}
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    address = re.findall(r"event=metrics-listening address=(\S+)", gateway.output())[0]
    gateway.send("--from", SENDER, "--to", "dr.martin@cabinet.test.mssante.fr", "--subject", "CR")
    deadline = time.monotonic() + DEADLINE
    while value(samples := scrape(address), "mssgw_queue_depth", state="deferred") < 1:
        assert time.monotonic() < deadline, samples
        time.sleep(0.05)
    assert value(samples, "mssgw_queue_oldest_age_seconds") > 0
    assert value(samples, "mssgw_deliveries_total", outcome="deferred") == 1
    assert gateway.stop() == 0

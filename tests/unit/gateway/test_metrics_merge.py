"""The counts of a relay process, sent as JSON and merged into the parent's at scrape time: one family per
name, counters and histograms summed, the earliest ``_created``, the parent's own gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

from gateway import metrics


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def counts(sent: int, latency: float, lag: float | None) -> list[Metric]:
    """A process's families: a counter, a histogram, a gauge (set only when ``lag`` is given)."""
    registry = CollectorRegistry()
    deliveries = Counter("deliveries", "by outcome", ["outcome"], registry=registry)
    deliveries.labels("sent").inc(sent)
    Histogram("latency", "seconds", buckets=(1, 10), registry=registry).observe(latency)
    gauge = Gauge("lag", "seconds", ["account"], registry=registry)
    if lag is not None:
        gauge.labels("a").set(lag)
    return list(registry.collect())


def test_counters_and_histograms_add_up_and_gauges_stay_ours() -> None:
    ours, theirs = counts(2, 0.5, 7.0), counts(3, 5.0, 99.0)
    created = min(
        samples(ours)[("deliveries_created", (("outcome", "sent"),))],
        samples(theirs)[("deliveries_created", (("outcome", "sent"),))],
    )
    result = metrics.merged(ours, theirs)
    assert [f.name for f in result] == ["deliveries", "latency", "lag"]
    found = samples(result)
    assert found[("deliveries_total", (("outcome", "sent"),))] == 5
    assert found[("deliveries_created", (("outcome", "sent"),))] == created
    assert found[("latency_bucket", (("le", "1.0"),))] == 1
    assert found[("latency_bucket", (("le", "10.0"),))] == 2
    assert found[("latency_count", ())] == 2 and found[("latency_sum", ())] == 5.5
    assert found[("lag", (("account", "a"),))] == 7.0


def test_what_only_the_other_process_counted_is_served_as_it_is() -> None:
    found = samples(metrics.merged(counts(0, 0.5, None), counts(0, 0.5, 4.0)))
    assert found[("lag", (("account", "a"),))] == 4.0
    assert found[("deliveries_total", (("outcome", "sent"),))] == 0


def test_the_json_carries_every_sample_of_this_process() -> None:
    metrics.delivery_recorded("sent", 2, 1.5)
    sent = metrics.families_from_json(metrics.counted_json())
    assert samples(sent) == samples(list(metrics.COUNTED.collect()))
    assert samples(sent)[("mssgw_deliveries_total", (("outcome", "sent"),))] >= 1

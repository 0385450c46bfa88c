"""The hot families kept as plain numbers (metrics.TallyCounter / TallyHistogram) are scraped as
the prometheus-client Counter and Histogram they replace would be: same names, help, types,
labels, buckets and values, compared byte for byte over random updates."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics

from tidelog.metrics import _FSYNC_BUCKETS, _LATENCY_BUCKETS, BrokerMetrics, TallyCounter, TallyHistogram


def _scrape(family) -> bytes:
    registry = CollectorRegistry()
    registry.register(family) if not isinstance(family, (Counter, Histogram)) else None
    return generate_latest(registry)


def _pair_counter(labelnames):
    theirs_registry = CollectorRegistry()
    theirs = Counter("tidelog_things", "Things, by kind.", list(labelnames), registry=theirs_registry)
    ours = TallyCounter("tidelog_things", "Things, by kind.", tuple(labelnames))
    return theirs, theirs_registry, ours


def _same_created(theirs, ours, labelnames) -> None:
    """prometheus-client stamps _created when a series appears: give its series ours."""
    for labels, created in ours.created.items():
        child = theirs.labels(*labels) if labelnames else theirs
        child._created = created


@pytest.mark.parametrize("labelnames", [(), ("topic",), ("group", "topic")])
def test_tally_counter_scrapes_as_counter(labelnames):
    rng = random.Random(len(labelnames))
    theirs, theirs_registry, ours = _pair_counter(labelnames)
    for _ in range(500):
        labels = tuple(rng.choice(["a", "b", 'q"uo\\te', "t\nl"]) for _ in labelnames)
        amount = rng.choice([1, 7, 1_048_576, 0.25])
        (theirs.labels(*labels) if labelnames else theirs).inc(amount)
        ours.inc(labels, amount)
    _same_created(theirs, ours, labelnames)
    assert _scrape(ours) == generate_latest(theirs_registry)


@pytest.mark.parametrize("labelnames", [(), ("api",)])
@pytest.mark.parametrize("buckets", [_LATENCY_BUCKETS, _FSYNC_BUCKETS])
def test_tally_histogram_scrapes_as_histogram(labelnames, buckets):
    rng = random.Random(len(buckets))
    theirs_registry = CollectorRegistry()
    theirs = Histogram("tidelog_wait_seconds", "Waits.", list(labelnames), buckets=buckets, registry=theirs_registry)
    ours = TallyHistogram("tidelog_wait_seconds", "Waits.", tuple(labelnames), buckets=buckets)
    values = [b for b in buckets] + [0.0, 1e-9, 1e6, math.nextafter(buckets[0], 1)]  # on and next to the bounds
    for _ in range(1_000):
        labels = tuple(rng.choice(["Produce", "Fetch", "Metadata"]) for _ in labelnames)
        value = rng.choice(values) if rng.random() < 0.3 else rng.expovariate(1 / buckets[len(buckets) // 2])
        (theirs.labels(*labels) if labelnames else theirs).observe(value)
        ours.observe(labels, value)
    _same_created(theirs, ours, labelnames)
    assert _scrape(ours) == generate_latest(theirs_registry)


def test_created_series_follow_prometheus_client_switch():
    ours = TallyCounter("tidelog_things", "Things.", ("topic",))
    ours.inc(("t",), 3)
    prometheus_metrics.disable_created_metrics()
    try:
        assert b"_created" not in _scrape(ours)
    finally:
        prometheus_metrics.enable_created_metrics()
    assert b'tidelog_things_created{topic="t"}' in _scrape(ours)


def test_broker_metrics_publish_the_hot_families():
    """The broker's own helpers feed the families scraped under the names the docs and
    dashboards use (tests/integration/test_metrics.py checks them after real traffic)."""
    metrics = BrokerMetrics()
    metrics.count_request("Produce")
    metrics.count_request("Produce")
    metrics.observe_request("Produce", started=0.0)  # perf_counter() - 0: a long request
    metrics.count_produced("t", 1_000, 10)
    metrics.count_produced("t", 500, 5)
    metrics.observe_produce(0.0015)
    metrics.observe_fsync(0.0002, ok=True)
    metrics.observe_fsync(0.02, ok=False)
    metrics.count_fetched("t", b"")
    text = generate_latest(metrics.registry).decode()
    assert 'tidelog_requests_total{api="Produce"} 2.0' in text
    assert 'tidelog_request_latency_seconds_bucket{api="Produce",le="+Inf"} 1.0' in text
    assert 'tidelog_request_latency_seconds_count{api="Produce"} 1.0' in text
    assert 'tidelog_produced_bytes_total{topic="t"} 1500.0' in text
    assert 'tidelog_produced_records_total{topic="t"} 15.0' in text
    assert 'tidelog_produce_latency_seconds_bucket{le="0.001"} 0.0' in text
    assert 'tidelog_produce_latency_seconds_bucket{le="0.002"} 1.0' in text
    assert 'tidelog_fsync_latency_seconds_count 2.0' in text
    assert 'tidelog_fsync_latency_seconds_bucket{le="0.0005"} 1.0' in text
    assert 'tidelog_fsync_errors_total 1.0' in text
    assert 'tidelog_fetched_bytes_total{topic="t"} 0.0' in text
    assert "# TYPE tidelog_request_latency_seconds histogram" in text
    assert "# TYPE tidelog_produced_bytes_total counter" in text

"""The logs' per-partition families are text Tidelog writes (metrics.PartitionSeries, server/gauges.py):
the same sample lines prometheus-client writes for a gauge with those labels and values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from tidelog.metrics import PartitionSeries, gauge_value

VALUES = [0, 1, -1, 999_999, 1_000_000, 1_073_741_824, 123_456_789_012, 2**53]


def test_partition_lines_are_prometheus_clients():
    registry = CollectorRegistry()
    gauge = Gauge("tidelog_log_size_bytes", "Bytes of segment files.", ["topic", "partition"], registry=registry)
    keys = [("orders", i) for i in range(len(VALUES))] + [('odd"topic\\with\nall', 7)]
    values = VALUES + [5]
    for (topic, partition), value in zip(keys, values):
        gauge.labels(topic, str(partition)).set(value)
    expected = [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    series = PartitionSeries()
    ours = [f"tidelog_log_size_bytes{label}{gauge_value(value)}" for label, value in zip(series.labels(keys), values)]
    assert ours == expected


def test_label_sets_are_kept_for_the_partitions_hosted_only():
    series = PartitionSeries()
    first = series.labels([("a", 0), ("a", 1)])
    assert series.labels([("a", 1), ("b", 0)]) == [first[1], '{partition="0",topic="b"} ']
    assert set(series._labels) == {("a", 1), ("b", 0)}  # a deleted partition's label set goes

"""The broker's metrics: one prometheus-client registry per broker process.

Names follow Prometheus conventions with a ``tidelog_`` prefix; what Kafka calls
``MessagesInPerSec`` is ``tidelog_produced_records_total`` here (rates come from the scraper).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tidelog_requests", "Requests received, by API.", ["api"], registry=r)
        self.connections = Gauge("tidelog_connections", "Open client connections.", registry=r)
        self.connection_errors = Counter(
            "tidelog_connections_closed_on_error", "Connections closed for a malformed or unsupported request.", registry=r
        )
        self.produced_bytes = Counter("tidelog_produced_bytes", "Record batch bytes appended.", ["topic"], registry=r)
        self.produced_records = Counter("tidelog_produced_records", "Records appended.", ["topic"], registry=r)
        self.produce_errors = Counter("tidelog_produce_errors", "Partitions answered with an error.", ["error"], registry=r)
        self.fetched_bytes = Counter("tidelog_fetched_bytes", "Record bytes returned by Fetch.", ["topic"], registry=r)
        self.produce_latency = Histogram(
            "tidelog_produce_latency_seconds",
            "Produce request time, receipt to response (includes the durability wait).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )
        self.partitions = Gauge("tidelog_partitions", "Partitions hosted.", registry=r)
        partition_labels = ["topic", "partition"]
        self.log_end_offset = Gauge("tidelog_log_end_offset", "Next offset to be written.", partition_labels, registry=r)
        self.log_start_offset = Gauge("tidelog_log_start_offset", "First offset kept.", partition_labels, registry=r)
        self.log_size_bytes = Gauge("tidelog_log_size_bytes", "Bytes of segment files.", partition_labels, registry=r)
        self._request_children: dict[str, Counter] = {}
        self._topic_children: dict[tuple[str, str], Counter] = {}

    # Cached label children: a labels() lookup per request is measurable on the hot path.
    def count_request(self, api: str) -> None:
        child = self._request_children.get(api)
        if child is None:
            child = self._request_children[api] = self.requests.labels(api)
        child.inc()

    def topic_counter(self, counter: Counter, kind: str, topic: str) -> Counter:
        key = (kind, topic)
        child = self._topic_children.get(key)
        if child is None:
            child = self._topic_children[key] = counter.labels(topic)
        return child

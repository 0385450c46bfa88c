"""The broker's metrics: one prometheus-client registry per broker process.

Names follow Prometheus conventions with a ``tidelog_`` prefix; what Kafka calls
``MessagesInPerSec`` is ``tidelog_produced_records_total`` here (rates come from the scraper).
Counters and histograms are updated where things happen (the connection, the handlers, the
log manager's fsyncs); those touched for every request (requests and their latency, bytes and
records produced and fetched, the Produce latency, fsync jobs) are plain numbers
(TallyCounter, TallyHistogram) the registry turns into the same samples prometheus-client's
Counter and Histogram would write, at scrape time: a prometheus-client update is ~a dozen Python
calls and a lock, and a Produce request made ~8 of them. Gauges that describe state (logs, groups, lag, waiting requests) are
set from the node's parts at scrape time by server/gauges.py, cleared first so a deleted topic
or group disappears from the scrape; the logs' per-partition families are text it writes
(PartitionSeries), served after the registry's.
"""

from __future__ import annotations

import math
import struct
import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)
_FSYNC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5)
_BATCH_LENGTH = struct.Struct(">i")  # at byte 8 of a batch: bytes after the first 12
_RECORD_COUNT = struct.Struct(">i")  # at byte 57 of a batch
_BATCH_OVERHEAD = 12


# The per-partition state of the logs (a series each per partition hosted): not prometheus-client
# gauges but text that server/gauges.py writes at each scrape (PartitionSeries), after the
# registry's. With 10,000 partitions, clearing and re-creating 40,000 label children and
# formatting them cost ~0.7 s of CPU a scrape. (name, help)
LOG_PARTITION_FAMILIES = (
    ("tidelog_log_end_offset", "Next offset to be written."),
    ("tidelog_log_start_offset", "First offset kept."),
    ("tidelog_log_size_bytes", "Bytes of segment files."),
    ("tidelog_log_segments", "Segment files."),
)
CLEANER_DIRTY_RATIO = ("tidelog_log_cleaner_dirty_ratio",
                       "A compacted log's dirty bytes over its cleanable bytes (cleaned once above min.cleanable.dirty.ratio).")


class PartitionSeries:
    """The per-partition families' text (LOG_PARTITION_FAMILIES, CLEANER_DIRTY_RATIO), set by
    server/gauges.py at each scrape, and each partition's label set, formatted once."""

    def __init__(self) -> None:
        self.text = b""
        self._labels: dict[tuple[str, int], str] = {}

    def labels(self, live: list[tuple[str, int]]) -> list[str]:
        """``{partition="0",topic="t"} `` of each (topic, partition), in the order given; the
        cache keeps only these."""
        cache = self._labels
        out = [cache.get(key) or _partition_labels(*key) for key in live]
        if len(cache) != len(live) or any(key not in cache for key in live):
            self._labels = dict(zip(live, out))
        return out


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _partition_labels(topic: str, partition: int) -> str:
    return f'{{partition="{partition}",topic="{_escape(topic)}"}} '


def gauge_value(value: int) -> str:
    """An integer as prometheus-client writes a gauge's value (1.0, 1.234567e+06)."""
    return f"{value}.0" if value < 1_000_000 else floatToGoString(value)


class TallyCounter:
    """A counter family kept as plain numbers (one per label-value tuple) and written at scrape
    time as prometheus-client's Counter writes it: ``NAME_total`` and ``NAME_created`` per
    series, in the order the series first appeared. Updated on the event loop only."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}
        if not labelnames:
            self.values[()] = 0
            self.created[()] = time.time()

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        else:
            self.created[labels] = time.time()
            values[labels] = amount

    def collect(self) -> list[Metric]:
        family = Metric(self.name, self.documentation, "counter")
        created = self.created
        for labels, value in list(self.values.items()):
            named = dict(zip(self.labelnames, labels))
            family.add_sample(self.name + "_total", named, value)
            if prometheus_metrics._use_created:
                family.add_sample(self.name + "_created", named, created[labels])
        return [family]

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "counter")]


class TallyHistogram:
    """A histogram family kept as plain numbers and written at scrape time as prometheus-client's
    Histogram writes it (cumulative ``_bucket`` per ``le``, ``_count``, ``_sum``, ``_created``).
    A series is a list: its sum, then the count of each bucket (``le``: the first bound not below
    the value, as prometheus-client places it). Updated on the event loop only."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = (), *, buckets) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets) + (math.inf,)
        self._le = [floatToGoString(b) for b in self.bounds]
        self.series: dict[tuple[str, ...], list] = {}
        self.created: dict[tuple[str, ...], float] = {}
        if not labelnames:
            self.new_series(())

    def new_series(self, labels: tuple[str, ...]) -> list:
        self.created[labels] = time.time()
        series = self.series[labels] = [0.0] + [0] * len(self.bounds)
        return series

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels) or self.new_series(labels)
        series[0] += value
        series[bisect_left(self.bounds, value) + 1] += 1

    def collect(self) -> list[Metric]:
        family = Metric(self.name, self.documentation, "histogram")
        name, le = self.name, self._le
        for labels, series in list(self.series.items()):
            named = dict(zip(self.labelnames, labels))
            counts = series[1:]
            total = 0.0
            for bound, count in zip(le, counts):
                total += count
                family.add_sample(name + "_bucket", {**named, "le": bound}, total)
            family.add_sample(name + "_count", named, total)
            family.add_sample(name + "_sum", named, series[0])
            if prometheus_metrics._use_created:
                family.add_sample(name + "_created", named, self.created[labels])
        return [family]

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]


class BrokerMetrics:
    def __init__(self, per_partition: bool = True) -> None:
        # metrics.per.partition.enable: false leaves every series labelled by partition out
        self.per_partition = per_partition
        self.partition_series = PartitionSeries()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = self._tally(TallyCounter("tidelog_requests", "Requests received, by API.", ("api",)))
        self.request_latency = self._tally(TallyHistogram(
            "tidelog_request_latency_seconds",
            "Request time by API, from decoding to the response being ready (includes long-poll and durability waits).",
            ("api",), buckets=_LATENCY_BUCKETS,
        ))
        self.connections = Gauge("tidelog_connections", "Open client connections.", registry=r)
        self.connections_accepted = Counter("tidelog_connections_accepted", "Client connections accepted.", registry=r)
        self.throttle_time = Counter(
            "tidelog_client_throttle_seconds",
            "Time clients were throttled for going over a client quota, by quota (produce, fetch, request).",
            ["quota"], registry=r,
        )
        self.sasl_authentications = Counter(
            "tidelog_sasl_authentications",
            "SASL authentications by listener, mechanism and result (authenticated, reauthenticated, failed).",
            ["listener", "mechanism", "result"], registry=r,
        )
        self.queued_request_bytes = Gauge(
            "tidelog_queued_request_bytes",
            "Bytes of requests read and not yet answered, all connections (capped by queued.max.request.bytes).", registry=r,
        )
        self.request_memory_waiting = Gauge(
            "tidelog_request_memory_waiting_connections",
            "Connections whose reading is paused because queued.max.request.bytes is reached.", registry=r,
        )
        self.request_memory_waits = Counter(
            "tidelog_request_memory_waits", "Times a connection paused reading at queued.max.request.bytes.", registry=r
        )
        self.open_files_limit = Gauge("tidelog_open_files_limit", "The open files limit (RLIMIT_NOFILE, raised to the hard limit at start).", registry=r)
        self.open_files = Gauge("tidelog_open_files", "File descriptors open.", registry=r)
        self.open_segment_files = Gauge(
            "tidelog_open_segment_files",
            "Sealed segments' log files open for reads (closed when idle, log.segment.idle.close.ms); active segments hold one each besides.",
            registry=r,
        )
        self.segment_files_closed = Gauge(
            "tidelog_segment_files_closed", "Sealed segments' log files closed for being idle or least recently used, since start.",
            registry=r,
        )
        self.partition_capacity = Gauge(
            "tidelog_partition_capacity",
            "Partition replicas this broker may hold (max.broker.partitions, else from the open files limit and memory).",
            registry=r,
        )
        self.resource_out = Gauge(
            "tidelog_resource_out",
            "1 while a resource has run out (file descriptors, disk space, memory; /ready is 503 meanwhile), else 0.",
            ["resource"], registry=r,
        )
        self.resource_exhausted = Counter(
            "tidelog_resource_exhausted",
            "Operations that failed because a resource ran out (file descriptors, disk space, memory).", ["resource"], registry=r,
        )
        self.connection_errors = Counter(
            "tidelog_connections_closed_on_error", "Connections closed for a malformed or unsupported request.", registry=r
        )
        self.produced_bytes = self._tally(TallyCounter("tidelog_produced_bytes", "Record batch bytes appended.", ("topic",)))
        self.produced_records = self._tally(TallyCounter("tidelog_produced_records", "Records appended.", ("topic",)))
        self.produce_errors = Counter("tidelog_produce_errors", "Partitions answered with an error.", ["error"], registry=r)
        self.fetched_bytes = self._tally(TallyCounter("tidelog_fetched_bytes", "Record bytes returned by Fetch.", ("topic",)))
        self.fetched_records = self._tally(TallyCounter(
            "tidelog_fetched_records", "Records in the batches returned by Fetch and the HTTP API.", ("topic",)
        ))
        self.produce_latency = self._tally(TallyHistogram(
            "tidelog_produce_latency_seconds",
            "Produce request time, receipt to response (includes the durability wait).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5),
        ))
        self.fsync_latency = self._tally(TallyHistogram(
            "tidelog_fsync_latency_seconds", "Time of one fsync job (every log flushed together).", buckets=_FSYNC_BUCKETS,
        ))
        self.fsyncs_failed = Counter("tidelog_fsync_errors", "fsync jobs that failed.", registry=r)
        self.event_loop_lag = self._tally(TallyHistogram(
            "tidelog_event_loop_lag_seconds",
            "How late the event loop woke a task due every 0.5 s (server/loop_monitor.py): the wait any callback "
            "due then (a request, a session timer, the etcd lease's keep-alive) had on top of its own.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ))
        self.event_loop_stalls = Counter(
            "tidelog_event_loop_stalls", "Event loop lags of 1 s or more (each logged as a WARNING, with where the "
            "loop was stuck).", registry=r)
        self.log_dir_offline = Gauge(
            "tidelog_log_dir_offline",
            "1 while an I/O error keeps the data directory offline (KAFKA_STORAGE_ERROR until a restart), else 0.",
            registry=r,
        )
        self.fetch_purgatory = Gauge("tidelog_fetch_purgatory_size", "Fetches waiting for data (long poll).", registry=r)
        self.fetch_requests = Counter(
            "tidelog_fetch_requests", "Fetch requests answered, by kind (full: opened a session, incremental, "
            "sessionless, error: an unknown session or epoch) and fetcher (consumer, follower).", ["kind", "fetcher"],
            registry=r)
        self.fetch_response_bytes = Counter(
            "tidelog_fetch_response_record_bytes", "Record bytes of Fetch responses written, by path (sendfile: from "
            "the segment file by the kernel; copy: read into the broker, on TLS, a socket not writable at once, or a "
            "response of at most 64 KiB of records).",
            ["path"], registry=r)
        # Its two children, here once: the hot paths (the connection's send, the handler's small
        # responses) inc them without labels()'s lookup, and both series are there from the start.
        self.fetch_response_bytes_sendfile = self.fetch_response_bytes.labels("sendfile")
        self.fetch_response_bytes_copy = self.fetch_response_bytes.labels("copy")
        self.fetch_sessions = Gauge("tidelog_fetch_sessions", "Incremental fetch sessions (KIP-227) cached.", registry=r)
        self.fetch_session_evictions = Counter(
            "tidelog_fetch_session_evictions", "Fetch sessions evicted from a full cache for a new one.", registry=r)
        self.produce_purgatory = Gauge(
            "tidelog_produce_purgatory_size", "Produce acknowledgements waiting for a group commit (balanced profile).", registry=r
        )
        self.partitions = Gauge("tidelog_partitions", "Partitions hosted.", registry=r)
        self.topics = Gauge("tidelog_topics", "Topics, internal ones included.", registry=r)
        self.under_replicated = Gauge(
            "tidelog_under_replicated_partitions",
            "Partitions this broker leads with fewer in-sync replicas than replicas (a single node: 0).", registry=r
        )
        self.offline = Gauge(
            "tidelog_offline_partitions",
            "Partitions without a leader (reported by the controller, 0 elsewhere; a single node: without a log).",
            registry=r,
        )
        # Cluster mode: replication and the controller.
        self.isr_shrinks = Counter("tidelog_isr_shrinks", "ISR shrinks of partitions this broker leads.", registry=r)
        self.isr_expands = Counter("tidelog_isr_expands", "ISR expansions of partitions this broker leads.", registry=r)
        self.isr_join_refusals = Counter(
            "tidelog_isr_join_refusals", "Caught-up follower fetches on partitions led here whose broker may not join the "
            "ISR yet (not registered, in controlled shutdown, log directory offline, or its registration not yet fenced "
            "and let back by the controller: KIP-903's INELIGIBLE_REPLICA).", registry=r)
        self.follower_flushes = Counter(
            "tidelog_follower_flushes",
            "Flushes of the partitions this broker follows, by why: interval or bytes (replica.flush.interval.ms / .bytes), "
            "leader (a follower became leader and flushed what it held).", ["reason"], registry=r,
        )
        self.follower_write_behind_bytes = Counter(
            "tidelog_follower_write_behind_bytes", "Bytes of followed partitions' copies whose write-back this broker "
            "started before their flush (replica.write.behind.bytes).", registry=r,
        )
        self.follower_cache_released_bytes = Counter(
            "tidelog_follower_cache_released_bytes", "Bytes of followed partitions' flushed copies this broker dropped "
            "from the page cache (replica.page.cache.keep.bytes).", registry=r,
        )
        self.follower_write_behind_failures = Counter(
            "tidelog_follower_write_behind_failures", "Write-backs of followed partitions' copies that could not be "
            "started (logged; the scheduled flush writes them back and reports a write-back error).", registry=r,
        )
        self.backlog_holds = Counter(
            "tidelog_replica_backlog_holds",
            "Times a client connection stopped reading because its acks=all Produce left a partition led here more "
            "than replica.backlog.max.bytes above its high watermark (it reads again once the followers catch up).",
            registry=r,
        )
        self.backlog_bytes = Gauge(
            "tidelog_replica_backlog_bytes", "Bytes a partition led here appended above its high watermark (not yet in "
            "every in-sync replica and the leader's fsync); over replica.backlog.max.bytes, acks=all producers are held.",
            ["topic", "partition"], registry=r,
        )
        self.backlog_bytes_sum = Gauge(
            "tidelog_replica_backlog_bytes_sum", "Bytes above the high watermark, summed over the partitions led here.",
            registry=r,
        )
        self.backlog_held_connections = Gauge(
            "tidelog_replica_backlog_held_connections", "Client connections not read now because their acks=all Produce "
            "left a partition led here over replica.backlog.max.bytes.", registry=r,
        )
        self.follower_unflushed_bytes = Gauge(
            "tidelog_follower_unflushed_bytes", "Bytes this broker copied as a follower and has not yet handed to a flush.", registry=r
        )
        self.controller_changes = Counter(
            "tidelog_controller_changes", "Controller changes this broker saw (a new controller, or none).", registry=r
        )
        self.active_controller = Gauge("tidelog_active_controller", "1 on the broker that is the controller, else 0.", registry=r)
        self.replica_lag = Gauge(
            "tidelog_replica_lag_records", "Records a follower lacks behind this leader's log end offset.",
            ["topic", "partition", "replica"], registry=r,
        )
        self.leader_partitions = Gauge("tidelog_leader_partitions", "Partitions this broker leads.", registry=r)
        self.producer_ids = Gauge("tidelog_producer_ids", "Idempotent producer states kept, summed over partitions.", registry=r)
        self.delay_topic_records = Counter(
            "tidelog_delay_topic_records", "Records of delay topics moved to their target when due (moved), or removed by "
            "retention before (lost).", ["topic", "event"], registry=r)
        self.delay_topic_remote_appends = Counter(
            "tidelog_delay_topic_remote_appends", "Batches of due records a delay topic's mover appended to a target "
            "partition led by another broker (ok), or tried to and will retry (failed).", ["topic", "result"], registry=r)
        self.delay_topic_recoveries = Counter(
            "tidelog_delay_topic_recoveries", "Delay movers started here (a new leader, a restart, after a failure), by "
            "where each found its progress: its last batch in the target, the progress committed to __consumer_offsets "
            "(the batch deleted), this broker's copy, or the partition's start.", ["topic", "source"], registry=r)
        self.delay_topic_waiting = Gauge(
            "tidelog_delay_topic_waiting_records", "Records of a delay topic's partition led here not moved to the target "
            "yet (due or not; from the due-time index).", ["topic", "partition"], registry=r)
        # Transactions (issue 17): the coordinator's ids and outcomes, the partitions' open transactions.
        self.transactions = Gauge("tidelog_transactions", "Transactional ids coordinated here, by state.", ["state"],
                                  registry=r)
        self.transactions_completed = Counter(
            "tidelog_transactions_completed", "Transactions completed by this coordinator (every marker written), by result.",
            ["result"], registry=r)
        self.transaction_timeouts = Counter(
            "tidelog_transaction_timeouts", "Transactions this coordinator aborted because they outlived transaction.timeout.ms.",
            registry=r)
        self.internal_write_timeouts = Counter(
            "tidelog_internal_write_timeouts", "Internal writes answered REQUEST_TIMED_OUT because their flush or ISR did "
            "not finish within the write's timeout, by writer: transaction_marker, transaction_state, delay_mover, "
            "offset_commit, group_metadata (SyncGroup, group state), share_state, dead_letter.",
            ["writer"], registry=r)
        self.transaction_markers_pending = Gauge(
            "tidelog_transaction_markers_pending", "Transactions whose COMMIT/ABORT markers are still being written.", registry=r)
        self.open_transactions = Gauge(
            "tidelog_open_transactions", "Transactions open in partitions this broker leads (undecided there).", registry=r)
        self.last_stable_offset_lag = Gauge(
            "tidelog_last_stable_offset_lag", "High watermark minus last stable offset: records read_committed consumers "
            "cannot read yet (partitions with an open transaction).", ["topic", "partition"], registry=r)
        self.groups = Gauge("tidelog_consumer_groups", "Consumer groups, by state.", ["state"], registry=r)
        self.group_members = Gauge("tidelog_consumer_group_members", "Members of a consumer group.", ["group"], registry=r)
        group_labels = ["group", "topic", "partition"]
        self.committed_offset = Gauge(
            "tidelog_consumer_committed_offset", "A group's committed offset.", group_labels, registry=r
        )
        self.consumer_lag = Gauge(
            "tidelog_consumer_lag", "Log end offset (the last stable offset for a group committing in "
            "transactions) minus the group's committed offset.", group_labels, registry=r
        )
        self.consumer_lag_total = Gauge("tidelog_consumer_lag_sum", "A group's lag over all its partitions.", ["group"], registry=r)
        self.deleted_topic_offsets = Counter(
            "tidelog_deleted_topic_offsets", "Committed offsets (consumer) and share-partition states (share) removed "
            "because their topic was deleted, one per group and partition.", ["kind"], registry=r)
        self.http_requests = Counter(
            "tidelog_http_requests", "HTTP requests (API, console, metrics), by route and status.", ["method", "route", "status"],
            registry=r,
        )
        self.http_peer_requests = Counter(
            "tidelog_http_peer_requests", "Requests this broker's HTTP API made to other brokers' HTTP APIs, by what "
            "(broker: the cluster view's event-loop lag, groups, share, push, delay) and result (ok: any HTTP answer; "
            "failed: none, e.g. refused, an untrusted certificate, a timeout).", ["what", "result"], registry=r)
        self.uptime = Gauge("tidelog_uptime_seconds", "Seconds since the broker started.", registry=r)
        # The log cleaner (compaction of cleanup.policy=compact logs).
        self.cleaner_runs = Counter("tidelog_log_cleaner_runs", "Log cleanings, by result (cleaned, aborted, failed).",
                                    ["result"], registry=r)
        self.cleaner_read_bytes = Counter("tidelog_log_cleaner_read_bytes", "Segment bytes the cleaner recopied.", registry=r)
        self.cleaner_written_bytes = Counter("tidelog_log_cleaner_written_bytes", "Bytes of cleaned segments written.",
                                             registry=r)
        self.cleaner_removed_records = Counter("tidelog_log_cleaner_removed_records",
                                               "Records cleanings removed (superseded, expired tombstones, aborted).", registry=r)
        self.cleaner_run_seconds = Histogram("tidelog_log_cleaner_run_seconds", "Time of one cleaning, off the event loop.",
                                             buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800), registry=r)
        self.cleaner_uncleanable = Gauge("tidelog_log_cleaner_uncleanable_partitions",
                                         "Compacted logs a cleaning error left uncleanable until a restart.", registry=r)
        self.cleaner_last_error = Gauge("tidelog_log_cleaner_last_error_timestamp_seconds",
                                        "When a cleaning last failed (0: never); the broker's log says why.", registry=r)
        self.share_records = Counter(
            "tidelog_share_group_records",
            "Share-group record events by group: acquired, redelivered (acquired again), acknowledged, released, "
            "rejected, renewed, lock_expired, archived, dead_lettered.", ["group", "event"], registry=r)
        self.share_groups = Gauge("tidelog_share_groups", "Share groups of this coordinator, by state.", ["state"], registry=r)
        self.share_group_members = Gauge("tidelog_share_group_members", "Members of a share group.", ["group"], registry=r)
        self.share_sessions = Gauge("tidelog_share_sessions", "ShareFetch sessions open on this broker.", registry=r)
        self.share_in_flight = Gauge("tidelog_share_in_flight_records",
                                     "Records between a share-partition's start offset and next offset, by group.",
                                     ["group"], registry=r)
        self.push_records = Counter(
            "tidelog_push_records",
            "Push subscription record events by subscription: delivered (POSTed), acknowledged (2xx or accept), "
            "released (to be retried), rejected, dead_lettered.", ["subscription", "event"], registry=r)
        self.push_requests = Counter(
            "tidelog_push_requests",
            "Push POSTs by subscription and result: ok (2xx), the HTTP status (500, ...), timeout, connection, tls, "
            "not_allowed, bad_answer.", ["subscription", "result"], registry=r)
        self.push_latency = Histogram(
            "tidelog_push_latency_seconds",
            "End-to-end push latency of acknowledged records: from the record's timestamp to its acknowledgement.",
            ["subscription"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.push_in_flight = Gauge("tidelog_push_in_flight_records", "Records in POSTs not yet answered, by subscription.",
                                    ["subscription"], registry=r)
        self.push_backlog = Gauge("tidelog_push_backlog_records",
                                  "Records of a subscription's share-partitions led here not yet acknowledged or archived.",
                                  ["subscription"], registry=r)
        self.push_concurrency = Gauge("tidelog_push_concurrency", "POSTs a subscription may have in flight now (adaptive).",
                                      ["subscription"], registry=r)
        self._api_labels: dict[str, tuple[str]] = {}
        self._topic_labels: dict[str, tuple[str]] = {}

    def _tally(self, family):
        self.registry.register(family)
        return family

    def count_share_records(self, group_id: str, counts) -> None:
        """One share-partition change's record events (queues/manager.py's counts)."""
        for event, records in counts.items():
            if records:
                self.share_records.labels(group_id, event).inc(records)

    # The label tuples of the hot families, made once per API or topic.
    def _api(self, api: str) -> tuple[str]:
        labels = self._api_labels.get(api)
        if labels is None:
            labels = self._api_labels[api] = (api,)
        return labels

    def _topic(self, topic: str) -> tuple[str]:
        labels = self._topic_labels.get(topic)
        if labels is None:
            labels = self._topic_labels[topic] = (topic,)
        return labels

    def count_request(self, api: str) -> None:
        self.requests.inc(self._api(api))

    def observe_request(self, api: str, started: float, _task=None) -> None:
        """Record a request's latency; usable as a task done-callback via functools.partial."""
        self.request_latency.observe(self._api(api), time.perf_counter() - started)

    def count_produced(self, topic: str, size_bytes: int, records: int) -> None:
        """One batch appended to ``topic`` (Produce, the HTTP API)."""
        labels = self._topic(topic)
        self.produced_bytes.inc(labels, size_bytes)
        self.produced_records.inc(labels, records)

    def observe_produce(self, seconds: float) -> None:
        """One Produce request's time, receipt to response."""
        self.produce_latency.observe((), seconds)

    def internal_write_timed_out(self, writer: str) -> None:
        """One internal write of ``writer`` answered REQUEST_TIMED_OUT (the writers' hook)."""
        self.internal_write_timeouts.labels(writer).inc()

    def internal_write_timeout_counts(self) -> dict[str, int]:
        """writer -> internal writes timed out since the start (GET /api/v1/broker, the console, tidelog cluster)."""
        return {sample.labels["writer"]: int(sample.value) for family in self.internal_write_timeouts.collect()
                for sample in family.samples if sample.name.endswith("_total")}

    def observe_loop_lag(self, seconds: float) -> None:
        """One wake-up of the loop monitor (server/loop_monitor.py): how late it woke."""
        self.event_loop_lag.observe((), seconds)

    def observe_fsync(self, seconds: float, ok: bool) -> None:
        """One fsync job of the log manager (its ``fsync_observer``)."""
        self.fsync_latency.observe((), seconds)
        if not ok:
            self.fsyncs_failed.inc()

    def observe_cleaning(self, result: str, stats) -> None:
        """One run of the log cleaner (its ``observer``): ``stats`` (CleanerStats) or None."""
        self.cleaner_runs.labels(result).inc()
        if stats is not None:
            self.cleaner_read_bytes.inc(stats.bytes_read)
            self.cleaner_written_bytes.inc(stats.bytes_written)
            self.cleaner_removed_records.inc(max(stats.records_read - stats.records_written, 0))
            self.cleaner_run_seconds.observe(stats.seconds)

    def count_fetched(self, topic: str, batches) -> None:
        """Count the bytes and records of whole v2 batches read from a log (headers only; a
        FileSlice knows the offsets it spans)."""
        size = len(batches)
        labels = self._topic(topic)
        if hasattr(batches, "records"):
            self.fetched_bytes.inc(labels, size)
            self.fetched_records.inc(labels, batches.records)
            return
        records = 0
        pos = 0
        while pos + 61 <= size:
            records += _RECORD_COUNT.unpack_from(batches, pos + 57)[0]
            pos += _BATCH_OVERHEAD + _BATCH_LENGTH.unpack_from(batches, pos + 8)[0]
        self.fetched_bytes.inc(labels, size)
        self.fetched_records.inc(labels, records)

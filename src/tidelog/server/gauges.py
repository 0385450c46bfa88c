"""The state gauges (tidelog/metrics.py defines them), set at scrape time from the node's parts:
logs, the cleaner, resources, partitions and their ISRs, waiting requests, groups and their lag.

Each refresh clears the labelled gauges first, so a deleted topic, partition or group leaves the
scrape. The logs' per-partition families are written as text (metrics.PartitionSeries), not kept
as label children; with ``metrics.per.partition.enable`` false no series labelled by
partition is set. Called by ``Broker.refresh_gauges`` (the HTTP listener's /metrics) once the
broker serves; reads only, on the event loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client.utils import floatToGoString

from tidelog.cluster.waiters import parked_fetch_count
from tidelog.metrics import CLEANER_DIRTY_RATIO, LOG_PARTITION_FAMILIES, gauge_value
from tidelog.server.resources import RESOURCES

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.groups.coordinator import GroupCoordinator
    from tidelog.metrics import BrokerMetrics
    from tidelog.server.resources import ResourceMonitor
    from tidelog.storage.manager import LogManager
    from tidelog.txn.service import TransactionService

__all__ = ["refresh_gauges"]


def refresh_gauges(metrics: "BrokerMetrics", *, metadata: "MetadataStore", logs: "LogManager",
                   replicas: "ReplicaManager", groups: "GroupCoordinator", resources: "ResourceMonitor",
                   is_controller: bool, started_at_ms: int, transactions: "TransactionService | None" = None) -> None:
    """Set every state gauge from the parts given; stale label sets are cleared."""
    topics = metadata.topics
    metrics.topics.set(len(topics))
    metrics.partitions.set(sum(t.partitions for t in topics.values()))
    metrics.uptime.set(time.time() - started_at_ms / 1000)
    for gauge in (metrics.groups, metrics.group_members, metrics.committed_offset, metrics.consumer_lag,
                  metrics.consumer_lag_total):
        gauge.clear()
    _refresh_log_gauges(metrics, logs, resources)
    metrics.partition_series.text = _partition_text(metrics, logs) if metrics.per_partition else b""
    _refresh_cluster_gauges(metrics, metadata, replicas, is_controller)
    metrics.fetch_purgatory.set(parked_fetch_count(replicas.partitions.values()))
    metrics.producer_ids.set(replicas.producer_count())
    metrics.produce_purgatory.set(logs.pending_durability_waits())
    _refresh_group_gauges(metrics, groups, replicas)
    _refresh_transaction_gauges(metrics, transactions, replicas)


def _refresh_transaction_gauges(metrics: "BrokerMetrics", transactions: "TransactionService | None",
                                replicas: "ReplicaManager") -> None:
    metrics.transactions.clear()
    metrics.last_stable_offset_lag.clear()
    if transactions is not None:
        stats = transactions.stats()
        for state, count in stats["transactions"].items():
            metrics.transactions.labels(state).set(count)
        metrics.transaction_markers_pending.set(stats["pending_markers"])
    open_count = 0
    for partition in list(replicas.partitions.values()):
        if not partition.leading or not partition.transactions.open_count:
            continue
        open_count += partition.transactions.open_count
        if metrics.per_partition:
            lag = partition.high_watermark - partition.last_stable_offset
            metrics.last_stable_offset_lag.labels(partition.topic, str(partition.index)).set(lag)
    metrics.open_transactions.set(open_count)


def _refresh_log_gauges(metrics: "BrokerMetrics", logs: "LogManager", resources: "ResourceMonitor") -> None:
    cleaner = logs.cleaner
    metrics.cleaner_uncleanable.set(sum(1 for state in cleaner.states.values() if state.uncleanable))
    metrics.cleaner_last_error.set((cleaner.totals.last_error_ms or 0) / 1000)
    metrics.log_dir_offline.set(1 if logs.offline else 0)
    metrics.open_segment_files.set(len(logs.files))
    metrics.segment_files_closed.set(logs.files.closed_total)
    exhausted = resources.exhausted()
    for kind in RESOURCES:
        metrics.resource_out.labels(kind).set(1 if kind in exhausted else 0)


def _partition_text(metrics: "BrokerMetrics", logs: "LogManager") -> bytes:
    """The per-partition families of the logs in the text format, written here rather than kept
    as prometheus-client label children (metrics.LOG_PARTITION_FAMILIES says why); each
    partition's label set is formatted once, not at every scrape."""
    hosted = logs.logs()
    labels = metrics.partition_series.labels([(log.topic, log.partition) for log in hosted])
    columns = ([log.log_end_offset for log in hosted], [log.log_start_offset for log in hosted],
               [log.size_bytes for log in hosted],
               [len(log.segments) for log in hosted])
    out = []
    for (name, help_text), values in zip(LOG_PARTITION_FAMILIES, columns):
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        out += [f"{name}{label}{gauge_value(value)}\n" for label, value in zip(labels, values)]
    name, help_text = CLEANER_DIRTY_RATIO
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
    cleaner = logs.cleaner
    out += [f"{name}{label}{floatToGoString(cleaner.dirty_ratio(log))}\n" for label, log in zip(labels, hosted)
            if log.config.compact and not log.closed]
    return "".join(out).encode()


def _refresh_cluster_gauges(metrics: "BrokerMetrics", store: "MetadataStore", replicas: "ReplicaManager",
                            is_controller: bool) -> None:
    metrics.active_controller.set(1 if is_controller else 0)
    states = list(store.partitions.items())
    metrics.offline.set(sum(1 for key, s in states if s.leader == -1 and key[0] in store.topics) if is_controller else 0)
    led = [p.state for p in replicas.partitions.values() if p.leading]
    metrics.leader_partitions.set(len(led))
    metrics.under_replicated.set(sum(1 for s in led if len(s.isr) < len(s.target_replicas)))
    metrics.follower_unflushed_bytes.set(replicas.follower_unflushed_bytes)
    metrics.replica_lag.clear()
    for topic, partition, replica, lag in (replicas.replica_lags() if metrics.per_partition else ()):
        metrics.replica_lag.labels(topic, str(partition), str(replica)).set(lag)
    metrics.backlog_bytes.clear()
    total = 0
    for topic, partition, backlog, _held in replicas.backlogs():
        total += backlog
        if metrics.per_partition:
            metrics.backlog_bytes.labels(topic, str(partition)).set(backlog)
    metrics.backlog_bytes_sum.set(total)


def _refresh_group_gauges(metrics: "BrokerMetrics", groups: "GroupCoordinator", replicas: "ReplicaManager") -> None:
    def readable_end(topic: str, partition: int) -> int | None:
        """For consumer lag: the end a consumer can read to (the high watermark)."""
        hosted = replicas.get(topic, partition)
        return hosted.high_watermark if hosted is not None else None

    def committed_end(topic: str, partition: int) -> int | None:
        """For an exactly-once group (read_committed): the last stable offset."""
        hosted = replicas.get(topic, partition)
        return hosted.last_stable_offset if hosted is not None else None

    states: dict[str, int] = {}
    for group_id, _protocol_type, state, _type in groups.admin.list_groups():
        states[state] = states.get(state, 0) + 1
        consumer_group = groups.registry.consumer_groups.get(group_id)
        description = groups.admin.describe_group(group_id) if consumer_group is None else consumer_group
        metrics.group_members.labels(group_id).set(len(description.members) if description else 0)
        total = 0
        end = committed_end if groups.offsets.is_transactional(group_id) else readable_end
        for lag in groups.offsets.lag(group_id, end):
            if metrics.per_partition:
                labels = (group_id, lag.topic, str(lag.partition))
                metrics.committed_offset.labels(*labels).set(lag.committed_offset)
                metrics.consumer_lag.labels(*labels).set(lag.lag)
            total += lag.lag
        metrics.consumer_lag_total.labels(group_id).set(total)
    for state, count in states.items():
        metrics.groups.labels(state).set(count)

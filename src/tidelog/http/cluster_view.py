"""The cluster as the HTTP API sees it: live brokers, each partition's leader, replicas, ISR and
health, a topic by name, and the live leader a partition's records are read from.

Every broker answers alike: leaders, replicas and ISR come from the metadata store, which every
broker has the same; a single node is its own only broker and the leader of everything.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.protocol.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["ClusterView"]


class ClusterView:
    """Reads of the broker's metadata and logs that every route needs."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker

    def live_brokers(self) -> dict[int, tuple[str, int, str | None]]:
        """node id -> (host, port, rack) of every live broker, as Metadata lists them."""
        return {b.node_id: (b.host, b.port, b.rack) for b in self.broker.metadata.brokers.values()}

    def http_address(self, node_id: int) -> str | None:
        if node_id == self.broker.node_id:
            return self.broker.http_address
        info = self.broker.metadata.brokers.get(node_id)
        return info.http if info is not None else None

    def controller_id(self) -> int:
        return self.broker.metadata.controller_id

    def partition_state(self, name: str, partition: int, live) -> dict:
        """Leader, replicas, ISR and health of a partition as the metadata store has it (every
        broker has the same store, so every broker's answer is the same)."""
        state = self.broker.metadata.partitions.get((name, partition))
        if state is None:
            return {"partition": partition, "leader": None, "leader_epoch": -1, "replicas": [], "isr": [],
                    "offline_replicas": [], "offline": True, "under_replicated": False}
        leader = state.leader if state.leader in live else None
        return {
            "partition": partition, "leader": leader, "leader_epoch": state.leader_epoch,
            "replicas": list(state.replicas), "isr": list(state.isr),
            "offline_replicas": [r for r in state.replicas if r not in live],
            "offline": leader is None,
            "under_replicated": leader is not None and len(state.isr) < len(state.target_replicas),
        }

    def topic(self, name: str):
        record = self.broker.metadata.topics.get(name)
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        return record

    def leads(self, topic: str, partition: int) -> bool:
        partition = self.broker.replicas.get(topic, partition)
        return partition is not None and partition.leading

    def backlog(self, topic: str, partition: int) -> dict:
        """A partition led here: its bytes above the high watermark and the Produce requests
        holding their connections for it (replica.backlog.max.bytes); 0 and 0 without followers."""
        hosted = self.broker.replicas.get(topic, partition)
        if hosted is None or not hosted.leading:
            return {}
        return {"backlog_bytes": hosted.backlog_bytes, "backlog_held": hosted.backlog_held}

    def hosted(self, keys: list[tuple[str, int]]) -> list:
        """The partitions of ``keys`` hosted here (a read waits for data on them)."""
        return [p for key in keys if (p := self.broker.replicas.get(*key)) is not None]

    def high_watermark(self, log) -> int:
        """What readers may see, as Fetch serves (the ISR's in a cluster, the durable end on one node)."""
        return self.broker.high_watermark(log.topic, log.partition)

    def leader(self, record, partition: int) -> int:
        """The live leader of a partition; LEADER_NOT_AVAILABLE (503) when it has none."""
        if not 0 <= partition < record.partitions:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{record.name} has no partition {partition}")
        leader = self.partition_state(record.name, partition, self.live_brokers())["leader"]
        if leader == self.broker.node_id and self.broker.logs.offline:
            raise KafkaError(ErrorCode.kafka_storage_error, f"{record.name}-{partition}: the log directory is offline "
                             f"({self.broker.logs.offline_reason})")
        if leader is None or (leader == self.broker.node_id and self.broker.partition_log(record.name, partition) is None):
            raise KafkaError(ErrorCode.leader_not_available, f"{record.name}-{partition} is offline: no live leader")
        return leader

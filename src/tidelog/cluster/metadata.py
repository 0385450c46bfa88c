"""Cluster metadata: topics (name, id, partition count, config overrides) and the cluster id.

``MetadataStore`` is the interface the broker uses; ``EmbeddedMetadataStore`` keeps it in one
JSON file in the data directory (``__tidelog_meta/metadata.json``), replaced atomically (write a
temporary file, fsync, rename, fsync the directory) on every change. Not thread-safe; the event
loop owns it. The etcd store (cluster mode) implements the same interface.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

META_DIR = "__tidelog_meta"


@dataclass
class TopicRecord:
    name: str
    topic_id: uuid.UUID
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "topic_id": str(self.topic_id),
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": self.configs,
        }

    @classmethod
    def from_json(cls, data: dict) -> "TopicRecord":
        return cls(
            name=data["name"],
            topic_id=uuid.UUID(data["topic_id"]),
            partitions=int(data["partitions"]),
            replication_factor=int(data.get("replication_factor", 1)),
            configs=dict(data.get("configs", {})),
        )


class MetadataStore(Protocol):
    cluster_id: str
    topics: dict[str, TopicRecord]

    async def create_topic(self, record: TopicRecord) -> None: ...
    async def delete_topic(self, name: str) -> None: ...
    async def set_partitions(self, name: str, partitions: int) -> None: ...
    async def set_configs(self, name: str, configs: dict[str, str]) -> None: ...
    async def allocate_producer_ids(self, count: int) -> int: ...


def new_topic_id() -> uuid.UUID:
    """A random, non-zero topic id (Kafka reserves the zero UUID and the 'metadata' id 1)."""
    while True:
        topic_id = uuid.uuid4()
        if topic_id.int > 1:
            return topic_id


class EmbeddedMetadataStore:
    """Single-node metadata in a JSON file: ``{"cluster_id": str, "topics": [TopicRecord...]}``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / META_DIR
        self.path = self.dir / "metadata.json"
        self.cluster_id = ""
        self.topics: dict[str, TopicRecord] = {}
        self.next_producer_id_block = 0  # ids below this may have been handed out

    def load(self, cluster_id: str = "") -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.cluster_id = data["cluster_id"]
            self.topics = {t["name"]: TopicRecord.from_json(t) for t in data.get("topics", [])}
            self.next_producer_id_block = int(data.get("next_producer_id_block", 0))
            if cluster_id and cluster_id != self.cluster_id:
                raise RuntimeError(
                    f"data directory belongs to cluster {self.cluster_id}, not {cluster_id}"
                )
        else:
            self.cluster_id = cluster_id or _new_cluster_id()
            self._save()
        logger.info("metadata loaded: cluster %s, %d topics", self.cluster_id, len(self.topics))

    async def create_topic(self, record: TopicRecord) -> None:
        self.topics[record.name] = record
        self._save()

    async def delete_topic(self, name: str) -> None:
        del self.topics[name]
        self._save()

    async def set_partitions(self, name: str, partitions: int) -> None:
        self.topics[name].partitions = partitions
        self._save()

    async def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self.topics[name].configs = dict(configs)
        self._save()

    async def allocate_producer_ids(self, count: int) -> int:
        """Reserve ``count`` producer ids, never handed out before; return the first."""
        first = self.next_producer_id_block
        self.next_producer_id_block = first + count
        self._save()
        return first

    def _save(self) -> None:
        data = {
            "cluster_id": self.cluster_id,
            "next_producer_id_block": self.next_producer_id_block,
            "topics": [t.to_json() for t in self.topics.values()],
        }
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _new_cluster_id() -> str:
    """Kafka's format: a base64url (no padding) random UUID, 22 characters."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

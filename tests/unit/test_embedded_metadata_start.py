"""The embedded metadata store's start (issue 19.4): a start that changes nothing leaves the
metadata file alone (it was parsed and rewritten whole, ~1 MB at 10,000 partitions, at every
start); a start that changes something writes it (durably: storage/checkpoint.py)."""

from __future__ import annotations

import asyncio
import os

from tidelog.cluster.metadata import EmbeddedMetadataStore, PartitionState, TopicRecord, new_topic_id


def started(data_dir, node_id: int = 1, cluster_id: str = "") -> EmbeddedMetadataStore:
    store = EmbeddedMetadataStore(data_dir, node_id)
    asyncio.run(store.start(cluster_id))
    return store


def file_identity(store: EmbeddedMetadataStore) -> tuple[int, int, bytes]:
    """Inode and mtime change with every write (a temporary file renamed over it)."""
    st = os.stat(store.path)
    return st.st_ino, st.st_mtime_ns, store.path.read_bytes()


def test_an_unchanged_start_does_not_rewrite_the_metadata_file(tmp_path):
    first = started(tmp_path)
    assert first.path.exists()  # a new data directory: the cluster id is written at once
    asyncio.run(first.create_topic(TopicRecord("t", new_topic_id(), 3, 1, {"retention.ms": "1000"})))
    before = file_identity(first)

    again = started(tmp_path)

    assert file_identity(again) == before
    assert again.cluster_id == first.cluster_id
    assert again.topics["t"].configs == {"retention.ms": "1000"}
    assert [again.partitions[("t", i)].replicas for i in range(3)] == [(1,)] * 3


def test_a_start_that_changes_the_replicas_writes_the_file(tmp_path):
    first = started(tmp_path, node_id=1)
    asyncio.run(first.create_topic(TopicRecord("t", new_topic_id(), 2, 1, {})))
    before = file_identity(first)

    moved = started(tmp_path, node_id=2)  # node.id changed: this broker is now the only replica

    after = file_identity(moved)
    assert after[:2] != before[:2]
    assert [moved.partitions[("t", i)] for i in range(2)] == [PartitionState.initial([2])] * 2
    assert started(tmp_path, node_id=2).partitions[("t", 0)].replicas == (2,)  # as written
    assert file_identity(moved) == after  # and that start changed nothing

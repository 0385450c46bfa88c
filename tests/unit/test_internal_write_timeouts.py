"""tidelog_internal_write_timeouts_total{writer}: every internal writer whose write times out on
a stuck flush is counted (robust16). It counted the delay movers, transaction markers and
__transaction_state only; __consumer_offsets writes (offset commits: ``offset_commit``;
SyncGroup's assignment and the groups' state: ``group_metadata``) and __share_group_state
writes (``share_state``) answered REQUEST_TIMED_OUT uncounted. Dead letters count as
``dead_letter`` (queues/dead_letters.py, the same one-line hook).

A real LogManager whose flush is held at the C fsync thread's gate, real leader partitions, the
writers' own classes and a real BrokerMetrics."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.groups.offsets_topic import ConsumerOffsetsTopic
from tidelog.groups.records import (ConsumerGroupKey, GroupKey, OffsetKey, encode_consumer_group_key, encode_group_key,
                                    encode_offset_key)
from tidelog.metrics import BrokerMetrics
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch
from tidelog.queues.share_groups import StateTopic
from tidelog.storage.fsync import FsyncWorker

from .test_fsync_worker import gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import TOPIC, offsets_partition, run
from .test_produce_flush_timeout import leader

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")


def counted(metrics: BrokerMetrics) -> dict[str, float]:
    return {sample.labels["writer"]: sample.value for family in metrics.internal_write_timeouts.collect()
            for sample in family.samples if sample.name.endswith("_total")}


def test_offsets_and_share_state_writes_that_time_out_are_counted(tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        metrics = BrokerMetrics()
        offsets = offsets_partition(logs, partitions)
        warm = ConsumerOffsetsTopic(lambda: offsets, 5000)
        await warm.open()
        await warm.write([(b"warm", b"up")])  # its files' first flush
        topic = ConsumerOffsetsTopic(lambda: partitions.get((TOPIC, 0)), commit_timeout_ms=100,
                                     on_timeout=metrics.internal_write_timed_out)
        await topic.open()
        state = leader(logs, partitions, "__share_group_state")
        state_topic = StateTopic.__new__(StateTopic)  # its local append only (no other broker here)
        state_topic.write_timeout_ms, state_topic.on_timeout = 5000, metrics.internal_write_timed_out
        await state_topic._append_here(state, build_batch([(b"warm", b"up", [])]))  # its files' first flush
        state_topic.write_timeout_ms = 100
        try:
            commit = [(encode_offset_key(OffsetKey("g", "orders", 0)), b"offset")]
            sync = [(encode_group_key(GroupKey("g")), b"assignment")]
            snapshot = [(encode_consumer_group_key(ConsumerGroupKey("g")), b"snapshot")]
            for records in (commit, sync, snapshot):
                with pytest.raises(KafkaError):
                    await asyncio.wait_for(topic.write(records), 5)
            with pytest.raises(KafkaError) as raised:
                await asyncio.wait_for(state_topic._append_here(state, build_batch([(b"k", b"v", [])])), 5)
            assert raised.value.error_code != ErrorCode.none
        finally:
            gate.release(1000)
        assert counted(metrics) == {"offset_commit": 1, "group_metadata": 2, "share_state": 1}

    run(main, tmp_path)

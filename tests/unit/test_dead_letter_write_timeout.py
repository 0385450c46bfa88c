"""stall14: a dead-letter write (acks=all) is bounded by ``share.coordinator.write.timeout.ms`` as
a whole, the flush included, as a share-state write is (defect14). The wait for durability had no
timeout (only the ISR's part had one): dead letters whose flush did not end (a stuck disk, a job
queued behind a slow one) held the share-partition's change, and the ShareAcknowledge that
rejected the records, as long. Failed before (still waiting after 5 s with a 200 ms timeout); it
now raises REQUEST_TIMED_OUT (the acknowledgement gets it; the records are not archived, so the
rejection or the lock expiry is tried again: a duplicate dead letter at most, never a loss), and
the next write, once the flush ends, succeeds."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.dead_letters import TOPIC_OPT_IN, DeadLetterWriter
from tidelog.queues.in_flight import ArchiveReason, DeadLetter
from tidelog.queues.state_records import ShareStateKey
from tidelog.storage.fsync import FsyncWorker

from .test_fsync_worker import gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import NODE, run
from .test_txn_state_write_timeout import Replicas

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")

SOURCE = SimpleNamespace(name="orders", topic_id=uuid.uuid4(), partitions=1, configs={})
DLQ = SimpleNamespace(name="dlq.orders", topic_id=uuid.uuid4(), partitions=1, configs={TOPIC_OPT_IN: "true"})


def test_a_dead_letter_write_whose_flush_does_not_end_times_out_by_the_write_timeout(tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        for topic in (SOURCE, DLQ):
            partition = partitions[(topic.name, 0)] = Partition(topic.name, 0, logs.create(topic.name, 0), logs, NODE,
                                                                PartitionConfig())
            partition.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
        writer = DeadLetterWriter({"share.coordinator.write.timeout.ms": 5000}, Replicas(partitions),
                                  lambda: {t.name: t for t in (SOURCE, DLQ)},
                                  lambda topic_id: SOURCE if topic_id == SOURCE.topic_id else None,
                                  lambda group_id: SimpleNamespace(dead_letter_topic=DLQ.name,
                                                                   dead_letter_copy_record=False))
        key = ShareStateKey("crew", SOURCE.topic_id, 0)
        await writer.write(key, [DeadLetter(0, 0, 1, ArchiveReason.REJECTED)])  # the first flush: the Python threads
        writer.timeout_ms = 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(KafkaError) as timed_out:  # its fsync held at the gate
                await asyncio.wait_for(writer.write(key, [DeadLetter(1, 1, 1, ArchiveReason.REJECTED)]), 5)
        finally:
            gate.release(1000)  # the flush ends (the logs' close waits for it)
        assert timed_out.value.error_code == ErrorCode.request_timed_out
        assert loop.time() - started < 2
        writer.timeout_ms = 5000
        await asyncio.wait_for(writer.write(key, [DeadLetter(2, 2, 1, ArchiveReason.REJECTED)]), 5)
        assert partitions[(DLQ.name, 0)].high_watermark == 3

    run(main, tmp_path)

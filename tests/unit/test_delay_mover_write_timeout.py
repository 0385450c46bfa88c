"""writes15: a delay mover's append to a target partition led here is bounded by its timeout as a
whole, the flush included, as the coordinators' own writes are (stall14). The wait for durability
had no timeout (only the ISR's part had one): a batch whose flush did not end (a stuck disk, a job
queued behind a slow one) held the mover, and with it every delay partition of the broker (one
task steps them all), as long. Failed before (still waiting after 5 s with a 200 ms timeout); it
now raises REQUEST_TIMED_OUT within the timeout, the step fails (DelayTopics retries it at its next
pass, logged once per streak) and, once the flush ends, the same batch with the same sequence
goes again: the target's producer state answers it as a duplicate, so each record is in the
target exactly once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import iter_records
from tidelog.queues import delay_topics
from tidelog.queues.delay_index import DelayIndex
from tidelog.queues.delay_mover import ORIGIN_OFFSET, DelayMover, mover_producer_id
from tidelog.storage.fsync import FsyncWorker

from .test_delay_mover import NOW, Clock, Source, run_until_idle
from .test_fsync_worker import gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import NODE, run

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")

TARGET = "orders"


class Replicas:
    """What a delay topic's _Target asks of the ReplicaManager: this broker's id and its partitions."""

    node_id = NODE
    channel_security = None

    def __init__(self, partitions: dict) -> None:
        self.partitions = partitions

    def get(self, topic: str, index: int) -> Partition | None:
        return self.partitions.get((topic, index))


def origin_offsets(partition: Partition) -> list[int]:
    """The origin offset of every record in the target's log, in log order (duplicates included)."""
    result = partition.read(0, 1 << 20, True, -1)
    return [int(dict(record.headers)[ORIGIN_OFFSET]) for record in iter_records(result.records)]


def test_a_movers_append_whose_flush_does_not_end_times_out_and_its_retry_moves_each_record_once(
        tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        target = partitions[(TARGET, 0)] = Partition(TARGET, 0, logs.create(TARGET, 0), logs, NODE, PartitionConfig())
        target.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
        clock, source = Clock(), Source()
        to = delay_topics._Target(Replicas(partitions), None, None, TARGET, 0, write_timeout_s=5)
        mover = DelayMover("delays", 0, source, to, DelayIndex(tmp_path / "index", bucket_ms=1000),
                           mover_producer_id(uuid.uuid4(), 0), clock)
        await mover.recover()
        source.produce([(b"k", b"v%d" % i, [], NOW) for i in range(3)])
        await asyncio.wait_for(run_until_idle(mover), 5)  # the new directory's first flush: the Python threads
        assert origin_offsets(target) == [0, 1, 2]

        to.write_timeout_s = 0.2
        source.produce([(b"k", b"v%d" % i, [], NOW) for i in range(3, 8)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(KafkaError) as timed_out:  # its fsync held at the gate
                await asyncio.wait_for(run_until_idle(mover), 5)
        finally:
            gate.release(1000)  # the flush ends (the logs' close waits for it)
        assert timed_out.value.error_code == ErrorCode.request_timed_out
        assert loop.time() - started < 2
        assert to.timeouts == 1

        await asyncio.wait_for(run_until_idle(mover), 5)  # DelayTopics' next pass: the same batch again
        assert origin_offsets(target) == list(range(8))  # each once: the retry was answered as a duplicate
        assert target.high_watermark == 8 and mover.moved == 8

    run(main, tmp_path)

"""stall14: a ``__transaction_state`` write (acks=all) is bounded by its timeout as a whole, the
flush included, as defect14's tests/unit/test_offsets_commit_timeout.py is for ``__consumer_offsets``.
The wait for durability had no timeout (only the ISR's part had one): a write whose flush did not
end (a stuck disk, a job queued behind a slow one) held the transaction coordinator's request
(InitProducerId, AddPartitionsToTxn, EndTxn) as long. Failed before (still waiting after 5 s with a
200 ms timeout); it now raises REQUEST_TIMED_OUT, as Kafka's TransactionStateManager sees when the
append's purgatory times out (the coordinator answers it as Kafka does), and the next write, once
the flush ends, succeeds."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import TRANSACTION_STATE
from tidelog.storage.fsync import FsyncWorker
from tidelog.txn.state_topic import TransactionStateTopic

from .test_fsync_worker import gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import NODE, run

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")


class Replicas:
    """What TransactionStateTopic and DeadLetterWriter ask of the ReplicaManager: the partitions it leads."""

    def __init__(self, partitions: dict) -> None:
        self.partitions = partitions

    def leader(self, topic: str, index: int) -> Partition:
        return self.partitions[(topic, index)]


def test_a_state_write_whose_flush_does_not_end_times_out_by_its_timeout(tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        partition = partitions[(TRANSACTION_STATE, 0)] = Partition(
            TRANSACTION_STATE, 0, logs.create(TRANSACTION_STATE, 0), logs, NODE, PartitionConfig(compact=True))
        partition.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
        topic = TransactionStateTopic(Replicas(partitions))
        await topic.append(0, [(b"txn", b"first")], 5000)  # the new directory's first flush: the Python threads
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(KafkaError) as timed_out:
                await asyncio.wait_for(topic.append(0, [(b"txn", b"held")], 200), 5)  # its fsync held at the gate
        finally:
            gate.release(1000)  # the flush ends (the logs' close waits for it)
        assert timed_out.value.error_code == ErrorCode.request_timed_out
        assert loop.time() - started < 2
        await asyncio.wait_for(topic.append(0, [(b"txn", b"after")], 5000), 5)
        assert partition.high_watermark == 3

    run(main, tmp_path)

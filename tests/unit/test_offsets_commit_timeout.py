"""defect14: an offsets write (``__consumer_offsets``, acks=all) is bounded by
``offsets.commit.timeout.ms`` as a whole, the flush included. The wait for durability had no
timeout (only the ISR's part had one): a commit whose flush did not end (a stuck disk, a job
queued behind a slow one) waited for as long as the flush did, the consumer's OffsetCommit with
it. Failed before (the write was still waiting after 5 s with a 200 ms timeout); it now answers
REQUEST_TIMED_OUT, as Kafka's GroupMetadataManager does when the purgatory times out the
append, and the next write, once the flush ends, succeeds."""

from __future__ import annotations

import asyncio

import pytest

from tidelog.groups.offsets_topic import TOPIC, ConsumerOffsetsTopic
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.fsync import FsyncWorker

from .test_fsync_worker import gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import offsets_partition, run

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")


def test_a_write_whose_flush_does_not_end_times_out_by_the_commit_timeout(tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        partition = offsets_partition(logs, partitions)
        topic = ConsumerOffsetsTopic(lambda: partitions.get((TOPIC, 0)), commit_timeout_ms=5000)
        await topic.open()
        await topic.write([(b"group", b"first")])  # the new directory's first flush: the Python threads
        topic.commit_timeout_ms = 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(KafkaError) as timed_out:
                await asyncio.wait_for(topic.write([(b"group", b"held")]), 5)  # its fsync held at the gate
        finally:
            gate.release(1000)  # the flush ends (the logs' close waits for it)
        assert timed_out.value.error_code == ErrorCode.request_timed_out
        assert loop.time() - started < 2
        topic.commit_timeout_ms = 5000
        await asyncio.wait_for(topic.write([(b"group", b"after")]), 5)
        assert partition.high_watermark == 3

    run(main, tmp_path)

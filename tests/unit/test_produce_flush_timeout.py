"""ptimeout15: a Produce's wait is bounded by its timeout_ms as a whole, the group commit's flush
included. handlers/produce.py's wait for the flush had no timeout (only the high watermark's part
had one): with a stuck disk (an fsync that does not return) an acks=1 or acks=all Produce in the
balanced profile was held until the flush ended, past its timeout. Kafka answers
REQUEST_TIMED_OUT once a Produce's timeout passes (the client retries; an idempotent producer's
retry is answered as a duplicate). Failed before (still waiting after 5 s with a 200 ms timeout);
now answers REQUEST_TIMED_OUT within the timeout, with the records still appended (as in Kafka, a
timed-out produce may have been written), durable once the flush ends.

The flush is held at the C fsync thread's gate (tests/unit/test_fsync_worker.py), over a real
LogManager and real leader partitions."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tidelog.cluster import waiters
from tidelog.cluster.metadata import PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.waiters import wait_for_acks
from tidelog.protocol.errors import ErrorCode
from tidelog.storage.fsync import FsyncWorker

from .storage_helpers import make_batch
from .test_fsync_worker import gate  # noqa: F401 - the fixture: fsyncs held until released
from .test_offsets_topic import NODE, run

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")


def leader(logs, partitions, topic: str) -> Partition:
    partition = partitions[(topic, 0)] = Partition(topic, 0, logs.create(topic, 0), logs, NODE, PartitionConfig())
    partition.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
    return partition


def append(partition: Partition) -> int:
    return partition.append_as_leader(make_batch(), -1).end_offset


@pytest.mark.parametrize("acks", [1, -1])
def test_a_produce_whose_flush_does_not_end_times_out_by_its_timeout(tmp_path, gate, acks, caplog,  # noqa: F811
                                                                      monkeypatch):
    # The balanced group commit's wait takes no timer of its own (waiters.FlushDeadlines answers it).
    monkeypatch.setattr(waiters, "_done_within", None)

    async def main(logs, partitions):
        one, two = leader(logs, partitions, "one"), leader(logs, partitions, "two")
        # One group-commit wait over both logs (_Shared); the job, a syncfs, is the C thread's.
        held = [(one, append(one)), (two, append(two))]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            errors = await asyncio.wait_for(wait_for_acks(held, acks, 0.2, logs), 5)  # its fsync held at the gate
            waited = loop.time() - started
        finally:
            gate.release(1000)  # the flush ends (the logs' close waits for it)
        assert errors == [ErrorCode.request_timed_out] * 2
        assert 0.15 < waited < 2
        assert [p.log.log_end_offset for p, _ in held] == [3, 3]  # appended all the same
        warned = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "tidelog.cluster.waiters"]
        assert len(warned) == 1 and "answered REQUEST_TIMED_OUT" in warned[0].getMessage()
        # The timed-out wait's outcome does not trouble the group commit: once the flush ends the
        # records are durable and acknowledged, and the next Produce is answered in time.
        after = [(one, append(one))]
        assert await asyncio.wait_for(wait_for_acks(after, acks, 5, logs), 5) == [ErrorCode.none]
        assert one.log.durable_offset == 6 and two.log.durable_offset == 3
        assert one.high_watermark == 6 and two.high_watermark == 3

    run(main, tmp_path)


def test_a_short_timeout_is_answered_in_time_behind_a_longer_ones_wait(tmp_path, gate):  # noqa: F811
    """Produces with different timeouts wait on the same stuck flush: each is answered at its own
    deadline, the short one not held until the long one's."""
    async def main(logs, partitions):
        one = leader(logs, partitions, "one")
        # the new log's first flush (its three files): the Python threads
        await asyncio.wait_for(wait_for_acks([(one, append(one))], 1, 5, logs), 5)

        loop = asyncio.get_running_loop()
        try:
            long = asyncio.ensure_future(wait_for_acks([(one, append(one))], 1, 30, logs))
            await asyncio.sleep(0)
            started = loop.time()
            short = await asyncio.wait_for(wait_for_acks([(one, append(one))], 1, 0.2, logs), 5)
            waited = loop.time() - started
            assert not long.done()
        finally:
            gate.release(1000)
        assert short == [ErrorCode.request_timed_out] and 0.15 < waited < 2
        assert await asyncio.wait_for(long, 5) == [ErrorCode.none]  # the flush ended within its 30 s

    run(main, tmp_path)


def test_a_produce_in_the_durable_profile_whose_fsync_does_not_end_times_out(tmp_path, gate):  # noqa: F811
    async def main(logs, partitions):
        one = leader(logs, partitions, "one")
        await asyncio.wait_for(wait_for_acks([(one, append(one))], -1, 5, logs), 5)  # the Python threads

        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            errors = await asyncio.wait_for(wait_for_acks([(one, append(one))], -1, 0.2, logs), 5)
            waited = loop.time() - started
        finally:
            gate.release(1000)
        assert errors == [ErrorCode.request_timed_out] and 0.15 < waited < 2
        assert await asyncio.wait_for(wait_for_acks([(one, append(one))], -1, 5, logs), 5) == [ErrorCode.none]
        assert one.log.durable_offset == 9 and one.high_watermark == 9

    run(main, tmp_path, durability="durable")


@pytest.mark.parametrize("mixed", [False, True], ids=["balanced", "mixed"])
def test_a_timed_out_wait_leaves_the_produce_purgatory(tmp_path, gate, mixed):  # noqa: F811
    """robust16: a wait answered REQUEST_TIMED_OUT stayed registered with the group commit
    (LogManager's balanced waiters: tidelog_produce_purgatory_size) until the stuck flush ended,
    and each retry added one more: retries x partitions, bounded only by the stall. Now a wait
    that times out (or whose request is cancelled: its connection closed) is forgotten at once;
    one still within its timeout stays. ``mixed``: a partition in the durable profile too (the
    balanced part of a gathered wait). Failed before: 2 a retry still registered."""
    async def main(logs, partitions):
        one, two = leader(logs, partitions, "one"), leader(logs, partitions, "two")
        extra = []
        if mixed:
            three = partitions[("three", 0)] = Partition("three", 0, logs.create("three", 0, dataclasses.replace(
                logs.default_config, durability="durable")), logs, NODE, PartitionConfig())
            three.make_leader(PartitionState((NODE,), NODE, 0, (NODE,)))
            extra = [three]
        try:
            for retry in range(5):  # a producer's retries, each timing out on the stuck flush
                held = [(p, append(p)) for p in [one, two, *extra]]
                errors = await asyncio.wait_for(wait_for_acks(held, -1, 0.1, logs), 5)
                assert errors == [ErrorCode.request_timed_out] * len(held)
                assert logs.pending_durability_waits() == 0, retry
            # One still waiting counts; cancelled (its connection closed), it is forgotten too.
            waiting = asyncio.ensure_future(wait_for_acks([(p, append(p)) for p in [one, *extra]], -1, 30, logs))
            await asyncio.sleep(0.05)
            assert logs.pending_durability_waits() == 1
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert logs.pending_durability_waits() == 0
        finally:
            gate.release(1000)
        # the flush ends: everything appended is durable, and the next wait is answered in time
        after = [(one, append(one))]
        assert await asyncio.wait_for(wait_for_acks(after, -1, 5, logs), 5) == [ErrorCode.none]
        assert one.log.durable_offset == one.log.log_end_offset

    run(main, tmp_path)

"""handlers/share_partitions.acknowledge applies a request's partitions side by side (_gathered).
robust16: a non-Kafka error from one partition's acknowledgement (a bug: ShareManager.acknowledge
answers KafkaErrors itself) raised out of the gather while the other partitions' coroutines went
on running with nobody reading their outcome, and the request got no answer for any of them.
Now each partition gets its answer: UNKNOWN_SERVER_ERROR for the one that failed (logged at ERROR
with its traceback), the others their own, every one of them finished when the call returns.

A real ShareManager over the in-memory state log (share_helpers), its state writes held at the
log's gate so the other partitions are still writing when the failure comes; the failure is
injected into one partition's settle step."""

from __future__ import annotations

import asyncio
import logging
import uuid

from tidelog.handlers import share_partitions
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.share_requests import AckPartition, AckTopic
from tidelog.queues.share_partition import AckBatch, AcknowledgeType
from tidelog.queues.state_records import ShareStateKey

from .test_share_manager import Setup

TOPIC = uuid.UUID(int=7)
ACCEPT = AcknowledgeType.ACCEPT


def test_one_partitions_unexpected_error_leaves_the_others_answered_and_finished(caplog):
    async def scenario():
        s = Setup()
        for partition in range(3):
            s.logs.produce(TOPIC, partition, 5)
        await s.manager.initialize("g", {TOPIC: [0, 1, 2]})
        for partition in range(3):
            acquired = await s.manager.acquire(ShareStateKey("g", TOPIC, partition), "a", max_records=5,
                                               max_bytes=1 << 20)
            assert acquired.acquired, partition
        settle = s.manager._settle

        async def failing_settle(key, sp, t):
            if key.partition == 1:
                raise RuntimeError("a bug in partition 1's acknowledgement")
            return await settle(key, sp, t)

        s.manager._settle = failing_settle
        s.state_log.gate = asyncio.Event()  # partitions 0 and 2 are still writing when 1 fails
        topics = [AckTopic(TOPIC, tuple(AckPartition(p, [AckBatch(0, 4, (ACCEPT,))]) for p in range(3)))]
        acking = asyncio.ensure_future(share_partitions.acknowledge(s.manager, "g", "a", topics, False))
        for _ in range(20):
            await asyncio.sleep(0)
        s.state_log.gate.set()
        errors = await asyncio.wait_for(acking, 5)
        assert errors == {(TOPIC, 0): ErrorCode.none, (TOPIC, 1): ErrorCode.unknown_server_error,
                          (TOPIC, 2): ErrorCode.none}
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []  # none left running
        for partition in (0, 2):  # applied and written before the answer
            assert s.store.state(ShareStateKey("g", TOPIC, partition)).start_offset == 5, partition
        failed = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failed) == 1 and failed[0].exc_info is not None
        assert "partition 1's acknowledgement" in str(failed[0].exc_info[1])

    asyncio.run(scenario())

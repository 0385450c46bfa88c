"""defect14: a share-group state write forwarded to the leader of ``__share_group_state`` ends
by ``share.coordinator.write.timeout.ms``, each attempt included. The retry (race13's c68877f)
stopped making new attempts at the deadline, but one attempt waited for the write timeout plus
5 s: a leader that took the request and did not answer (paused, its loop stalled) held the
share request ~5 s past the timeout. Failed before (5.5 s with a 500 ms timeout); now the write
fails COORDINATOR_NOT_AVAILABLE by the deadline.

The leader is a listening socket that takes the connection and the request and never answers,
as a stopped broker's kernel does; the replica manager and the metadata are the two things
StateTopic reads of them (no replica here, the partition's leader and its address)."""

from __future__ import annotations

import asyncio
import types

import pytest

from tidelog.cluster.metadata import BrokerInfo, PartitionState
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import SHARE_GROUP_STATE
from tidelog.queues.share_groups import StateTopic

WRITE_TIMEOUT_MS = 500


def test_a_write_to_a_leader_that_does_not_answer_ends_by_the_write_timeout():
    async def main():
        received: list[bytes] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read(1 << 16))  # the request, never answered
            await reader.read()  # until the writer gives up and closes
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        replicas = types.SimpleNamespace(get=lambda topic, partition: None, channel_security=None)
        metadata = types.SimpleNamespace(partitions={(SHARE_GROUP_STATE, 0): PartitionState.initial([2])},
                                         brokers={2: BrokerInfo(2, "127.0.0.1", port)})
        state_topic = StateTopic(replicas, metadata, 1, WRITE_TIMEOUT_MS)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(KafkaError) as failed:
                await asyncio.wait_for(state_topic.append([(b"key", b"value")]), 10)
            took_s = loop.time() - started
        finally:
            state_topic._close_channel()
            server.close()
            await server.wait_closed()
        assert received and received[0], "the request did not reach the leader"
        assert failed.value.error_code == ErrorCode.coordinator_not_available
        assert took_s < WRITE_TIMEOUT_MS / 1000 + 0.5, f"the write ended {took_s:.2f} s after it began"

    asyncio.run(main())

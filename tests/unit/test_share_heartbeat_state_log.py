"""defect14: ShareGroupHeartbeat answered COORDINATOR_NOT_AVAILABLE with no log line when the
share state could not be read (its catch-up from ``__share_group_state`` failed): a member
retrying for minutes left nothing in the broker's log to say why. Failed before (no record);
now the first failure logs a WARNING naming the cause, its repeats DEBUG, and after a success
the next failure is a WARNING again.

A real broker in this process and a real socket (ShareGroupHeartbeat v1 from a thread); the
injected failing component is the state topic's catch-up (its leader unreachable)."""

from __future__ import annotations

import asyncio
import logging

from kio.schema.share_group_heartbeat.v1.request import ShareGroupHeartbeatRequest

from tidelog.config import BrokerConfig
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.server.broker import Broker
from tests.integration.sasl_requests import KafkaConnection

LOGGER = "tidelog.handlers.share_group_heartbeat"


def heartbeats(bootstrap: str, group: str, count: int) -> list[int]:
    with KafkaConnection(bootstrap) as connection:
        return [connection.request(76, 1, ShareGroupHeartbeatRequest(
            group_id=group, member_id=f"member-{i}", member_epoch=0, rack_id=None,
            subscribed_topic_names=("q",))).error_code for i in range(count)]


def test_a_heartbeat_that_cannot_read_the_share_state_logs_why_once(tmp_path, caplog):
    async def main():
        broker = Broker(BrokerConfig.load(env={}, overrides={"http.port": "-1"}), tmp_path / "data", port=0)
        await broker.start()
        bootstrap = f"127.0.0.1:{broker.port}"
        try:
            assert await asyncio.to_thread(heartbeats, bootstrap, "first", 1) == [ErrorCode.none]  # loads the state

            async def unreachable(store, until=None):
                raise KafkaError(ErrorCode.coordinator_not_available,
                                 "__share_group_state request to broker 2 failed: TimeoutError()")

            state_topic = broker.shares.state_topic
            real_catch_up = state_topic.catch_up
            state_topic.catch_up = unreachable
            with caplog.at_level(logging.DEBUG, logger=LOGGER):
                assert await asyncio.to_thread(heartbeats, bootstrap, "other", 3) == [
                    ErrorCode.coordinator_not_available] * 3
                state_topic.catch_up = real_catch_up
                assert await asyncio.to_thread(heartbeats, bootstrap, "third", 1) == [ErrorCode.none]
                state_topic.catch_up = unreachable
                assert await asyncio.to_thread(heartbeats, bootstrap, "fourth", 1) == [
                    ErrorCode.coordinator_not_available]
        finally:
            await broker.stop()

    asyncio.run(main())
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert [level for level, _ in records] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.WARNING], records
    assert all("coordinator_not_available" in m and "broker 2 failed: TimeoutError" in m for _, m in records), records

"""The HTTP share-group view never lists a deleted topic's partitions, as Kafka's
DescribeShareGroupOffsets does not list a topic that no longer exists.

A topic's share-partition state is removed after DeleteTopics answers (tombstones written to
``__share_group_state`` by the group coordinator, in the background: ~50 ms on an idle machine,
longer when that write is slow). The view read the state store and listed the deleted topic's
partitions (by topic id, the name gone) until then. Here the removal is held still until the
view has been asked, so the window is certain, not a race: a real broker in this process (its
own HTTP and Kafka listeners, asked over real sockets), the removal's coroutine held by an
event the test sets, then run as it is."""

from __future__ import annotations

import asyncio

import aiohttp

from tidelog.config import BrokerConfig
from tidelog.node import make_broker

SETTINGS = {"http.port": "0", "group.initial.rebalance.delay.ms": "100", "log.retention.check.interval.ms": "1000"}


async def _call(session: aiohttp.ClientSession, method: str, url: str, expect: int, **kwargs) -> dict:
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=30), **kwargs) as response:
        body = await response.json()
        assert response.status == expect, (method, url, response.status, body)
        return body


async def _deleted_topic_view(data_dir) -> None:
    broker = make_broker(BrokerConfig.load(env={}, overrides=SETTINGS), data_dir, "127.0.0.1", 0)
    await broker.start()
    try:
        base = f"http://127.0.0.1:{broker.http.port}/api/v1"
        held, removal_asked = asyncio.Event(), asyncio.Event()
        remove_topic_state = broker.shares.remove_topic_state

        async def held_removal(topic, topic_id):
            removal_asked.set()
            await held.wait()
            return await remove_topic_state(topic, topic_id)

        broker.shares.remove_topic_state = held_removal
        async with aiohttp.ClientSession() as http:
            for name, partitions in (("orders", 2), ("kept", 1)):
                await _call(http, "POST", base + "/topics", 201, json={"name": name, "partitions": partitions})
            member = None
            for topic in ("orders", "kept"):  # each receive joins the topic and starts its share-partitions' state
                body = {"topic": topic, "max_records": 1, "timeout_ms": 200, **({"member_id": member} if member else {})}
                member = (await _call(http, "POST", base + "/share-groups/workers/receive", 200, json=body))["member_id"]

            async def listed() -> list[tuple[str, int]]:
                view = await _call(http, "GET", base + "/share-groups/workers", 200)
                return [(p["topic"], p["partition"]) for p in view["partitions"]]

            for _ in range(100):
                if await listed() == [("kept", 0), ("orders", 0), ("orders", 1)]:
                    break
                await asyncio.sleep(0.05)
            assert await listed() == [("kept", 0), ("orders", 0), ("orders", 1)]

            await _call(http, "DELETE", base + "/topics/orders", 200)
            await asyncio.wait_for(removal_asked.wait(), 10)
            assert await listed() == [("kept", 0)]  # the state is still there: held
            listing = await _call(http, "GET", base + "/share-groups", 200)
            assert [g["group_id"] for g in listing["groups"]] == ["workers"]

            held.set()
            removed = 'tidelog_deleted_topic_offsets_total{kind="share"} 2.0'
            for _ in range(200):
                async with http.get(f"http://127.0.0.1:{broker.http.port}/metrics") as response:
                    if removed in (await response.text()).splitlines():
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the deleted topic's two share-partition states were not removed")
            assert await listed() == [("kept", 0)]
    finally:
        await broker.stop()


def test_the_share_group_view_leaves_out_a_deleted_topic_while_its_state_is_being_removed(tmp_path):
    asyncio.run(asyncio.wait_for(_deleted_topic_view(tmp_path / "data"), 120))

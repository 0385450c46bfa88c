"""The HTTP API's share-group routes over the real ShareManager and ShareGroupCoordinator (in-process
state topic and logs): HTTP consumers are members that split records, acknowledge, release (with a
delay), reject and renew by receipt; locks run out and records come back with a higher delivery
count; bad input is INVALID_REQUEST."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tidelog.clock import wall_clock_ms
from tidelog.cluster.metadata import TopicRecord
from tidelog.http.errors import PREFIX, json_errors
from tidelog.http.share_routes import ShareRoutes, parse_receipt, receipt
from tidelog.queues.manager import ShareConfig, ShareManager
from tidelog.protocol.errors import ErrorCode
from tidelog.queues.share_group import ShareGroup, ShareGroupCoordinator, ShareGroupSettings, TopicInfo
from tidelog.queues.share_partition import SharePartitionConfig
from tidelog.queues.state_records import ShareStateKey
from tidelog.queues.state_store import ShareStateStore

from .share_helpers import FakeLogs, FakeStateLog

TOPIC_ID = uuid.UUID(int=42)


class Shares:
    """The broker's share groups (queues/share_groups.py's ShareGroups) composed in-process over
    in-memory logs and state topic: the real ShareManager and membership."""

    def __init__(self, logs: FakeLogs, topics: dict, *, lock_ms: int, limit: int = 5) -> None:
        self.logs = logs
        self.topics = topics
        self.state_log = FakeStateLog()
        self.store = ShareStateStore(self.state_log.append, wall_clock_ms)
        self.config = ShareConfig(SharePartitionConfig(limit, lock_ms, 1000), "earliest")
        self.totals: dict[str, dict[str, int]] = {}
        self.clock_offset_ms = 0  # added to the wall clock: a test moves time forward without waiting
        self.manager = ShareManager(self.store, logs, lambda group: self.config, on_counts=self._count,
                                    clock_ms=lambda: wall_clock_ms() + self.clock_offset_ms)
        self.membership = ShareGroupCoordinator(
            ShareGroupSettings(), initialize=self.manager.initialize,
            on_member_removed=lambda g, m, failed: self.manager.release_member(g, m, count_delivery=failed))
        self.appended = asyncio.Event()

    def manager_or_error(self):
        return self.manager

    async def ensure_loaded(self):
        return self.manager

    loaded = True

    async def catch_up(self):
        pass

    def topics_by_name(self):
        return self.topics

    def topics_info(self):
        return {t.name: TopicInfo(t.topic_id, t.partitions) for t in self.topics.values()}

    def group(self, group_id):
        group = self.membership.groups.get(group_id)
        return group if group is not None else (ShareGroup(group_id) if self.store.keys(group_id) else None)

    def list_groups(self):
        return [g for g in map(self.group, {*self.membership.groups, *(k.group_id for k in self.store.keys())}) if g]

    async def delete_group(self, group_id):
        group = self.group(group_id)
        if group is None:
            return ErrorCode.group_id_not_found
        if group.members:
            return ErrorCode.non_empty_group
        self.membership.groups.pop(group_id, None)
        await self.manager.delete_offsets(group_id, [(k.topic_id, k.partition) for k in self.store.keys(group_id)])
        return ErrorCode.none

    async def wait_for_records(self, group_id, partitions, timeout_s):
        keys = [ShareStateKey(group_id, t, p) for t, p in partitions]
        waits = [asyncio.ensure_future(self.manager.wait(keys, timeout_s)), asyncio.ensure_future(self.appended.wait())]
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    def produce(self, partition: int, count: int) -> None:
        self.logs.produce(TOPIC_ID, partition, count)
        self.appended.set()
        self.appended = asyncio.Event()

    def _count(self, key, counts) -> None:
        totals = self.totals.setdefault(key.group_id, {})
        for name, n in counts.items():
            totals[name] = totals.get(name, 0) + n

    def group_counts(self, group_id):
        return self.totals.get(group_id, {})

    def queue_group_configs(self, group_id):  # issue 14's view: tests/integration/test_queue_features.py
        return {}

    def queue_view(self, key):
        return {"settings": {}, "delayed": None, "available_by_priority": None}


class Harness:
    def __init__(self, partitions: int = 2, lock_ms: int = 30_000, limit: int = 5) -> None:
        self.shares = Shares(FakeLogs(), {"jobs": TopicRecord("jobs", TOPIC_ID, partitions)}, lock_ms=lock_ms, limit=limit)
        self.produce = self.shares.produce
        app = web.Application(middlewares=[json_errors])
        ShareRoutes(lambda: self.shares).add_routes(app.router, PREFIX)
        self.client = TestClient(TestServer(app, host="127.0.0.1"))

    async def post(self, path: str, body: dict, status: int = 200) -> dict:
        response = await self.client.post(PREFIX + path, json=body)
        data = await response.json()
        assert response.status == status, data
        return data

    async def receive(self, member: str | None, **body) -> dict:
        return await self.post("/share-groups/g/receive", {"topic": "jobs", "member_id": member, **body})

    async def get(self, path: str, status: int = 200) -> dict:
        response = await self.client.get(PREFIX + path)
        data = await response.json()
        assert response.status == status, data
        return data


def run(scenario, **kw):
    async def main():
        h = Harness(**kw)
        await h.client.start_server()
        try:
            await scenario(h)
        finally:
            await h.client.close()
            await h.shares.manager.close()
            h.shares.membership.stop_timers()

    asyncio.run(main())


def test_receipts_round_trip_and_bad_ones_are_invalid_requests():
    assert parse_receipt(receipt("a.b-c", 3, 17)) == ("a.b-c", 3, 17)

    async def scenario(h: Harness):
        h.produce(0, 1)
        got = await h.receive("m1")
        for bad in ("jobs/0", "jobs/x/1", "/0/1", 7):
            error = await h.post("/share-groups/g/ack", {"member_id": "m1", "receipts": [bad]}, status=400)
            assert error["error_code"] == "INVALID_REQUEST"
        assert (await h.post("/share-groups/g/ack", {"member_id": "m1", "receipts": [got["records"][0]["receipt"]]})
                )["acknowledged"] == ["jobs/0/0"]

    run(scenario)


def test_members_split_the_records_exactly_once_when_all_acknowledge():
    async def scenario(h: Harness):
        for p in range(2):
            h.produce(p, 30)
        seen: list[str] = []
        members = ["a", "b", "c"]
        for m in members:  # everyone joins before the rest is read
            receipts = [r["receipt"] for r in (await h.receive(m, max_records=1))["records"]]
            await h.post("/share-groups/g/ack", {"member_id": m, "receipts": receipts})
            seen += receipts
        group = await h.get("/share-groups/g")
        assert sorted(m["member_id"] for m in group["members"]) == members
        for _ in range(60):
            for m in members:
                got = await h.receive(m, max_records=7)
                receipts = [r["receipt"] for r in got["records"]]
                if receipts:
                    acked = await h.post("/share-groups/g/ack", {"member_id": m, "receipts": receipts})
                    assert acked["failed"] == [] and sorted(acked["acknowledged"]) == sorted(receipts)
                seen += receipts
            if len(seen) >= 60:
                break
        assert sorted(seen) == sorted(receipt("jobs", p, o) for p in range(2) for o in range(30))
        group = await h.get("/share-groups/g")
        assert group["lag"] == 0 and group["counts"]["acknowledged"] == 60
        assert {p["start_offset"] for p in group["partitions"]} == {30}

    run(scenario)


def test_release_redelivers_with_a_rising_count_and_a_delay_holds_it_back():
    async def scenario(h: Harness):
        h.produce(0, 1)
        first = (await h.receive("m1"))["records"]
        assert [r["delivery_count"] for r in first] == [1]
        await h.post("/share-groups/g/release", {"member_id": "m1", "receipts": [first[0]["receipt"]]})
        second = (await h.receive("m2", timeout_ms=5000))["records"]
        assert [(r["receipt"], r["delivery_count"]) for r in second] == [("jobs/0/0", 2)]
        loop = asyncio.get_running_loop()
        await h.post("/share-groups/g/release", {"member_id": "m2", "receipts": ["jobs/0/0"], "delay_ms": 300})
        started = loop.time()
        assert (await h.receive("m1", timeout_ms=0))["records"] == []
        third = (await h.receive("m1", timeout_ms=10_000))["records"]
        assert loop.time() - started >= 0.25
        assert [(r["receipt"], r["delivery_count"]) for r in third] == [("jobs/0/0", 3)]
        group = await h.get("/share-groups/g")
        assert group["partitions"][0]["delivery_counts"] == {"3": 1}
        assert group["counts"]["released"] == 2

    run(scenario, partitions=1)


def test_lock_expiry_redelivers_and_the_late_ack_fails_alone():
    async def scenario(h: Harness):
        h.produce(0, 2)
        got = (await h.receive("slow", max_records=2))["records"]
        assert len(got) == 2
        # "fast" waits; the slow member's locks run out (300 ms) and the records come to it.
        again = (await h.receive("fast", max_records=2, timeout_ms=10_000))["records"]
        assert [r["delivery_count"] for r in again] == [2, 2]
        late = await h.post("/share-groups/g/ack", {"member_id": "slow", "receipts": [r["receipt"] for r in got]})
        assert late["acknowledged"] == [] and {f["error_code"] for f in late["failed"]} == {"INVALID_RECORD_STATE"}
        # one of the two still held: the other succeeds on its own
        mixed = await h.post("/share-groups/g/ack", {"member_id": "fast", "receipts": ["jobs/0/0", "jobs/0/5"]})
        assert mixed["acknowledged"] == ["jobs/0/0"] and [f["receipt"] for f in mixed["failed"]] == ["jobs/0/5"]
        assert (await h.get("/share-groups/g"))["counts"]["lock_expired"] == 2

    run(scenario, partitions=1, lock_ms=300)


def test_renew_keeps_the_lock():
    async def scenario(h: Harness):
        h.produce(0, 1)
        await h.receive("m1")
        key = ShareStateKey("g", TOPIC_ID, 0)
        for _ in range(3):  # 3 x 20 s past a 30 s lock: only renewing keeps it
            h.shares.clock_offset_ms += 20_000
            renewed = await h.post("/share-groups/g/renew", {"member_id": "m1", "receipts": ["jobs/0/0"]})
            assert renewed["acknowledged"] == ["jobs/0/0"]
            await h.shares.manager.run_timers(key)  # what the lock timer does when it fires
        assert (await h.post("/share-groups/g/ack", {"member_id": "m1", "receipts": ["jobs/0/0"]}))["failed"] == []
        # without renewing, the lock runs out
        h.produce(0, 1)
        await h.receive("m1")
        h.shares.clock_offset_ms += 30_001
        await h.shares.manager.run_timers(key)
        late = await h.post("/share-groups/g/ack", {"member_id": "m1", "receipts": ["jobs/0/1"]})
        assert [f["error_code"] for f in late["failed"]] == ["INVALID_RECORD_STATE"]

    run(scenario, partitions=1)


def test_reject_archives_and_the_limit_archives_too():
    async def scenario(h: Harness):
        h.produce(0, 2)
        got = (await h.receive("m1", max_records=2))["records"]
        await h.post("/share-groups/g/reject", {"member_id": "m1", "receipts": [got[0]["receipt"]]})
        for count in (2, 3):  # the limit is 2: the second release archives
            await h.post("/share-groups/g/release", {"member_id": "m1", "receipts": ["jobs/0/1"]})
            again = (await h.receive("m1"))["records"]
            if count == 3:
                assert again == []
            else:
                assert [(r["offset"], r["delivery_count"]) for r in again] == [(1, count)]
        group = await h.get("/share-groups/g")
        assert group["partitions"][0]["start_offset"] == 2 and group["lag"] == 0
        assert {k: group["counts"][k] for k in ("rejected", "archived", "redelivered")} == \
            {"rejected": 1, "archived": 2, "redelivered": 1}

    run(scenario, partitions=1, limit=2)


def test_leaving_releases_and_an_unknown_member_is_a_conflict():
    async def scenario(h: Harness):
        h.produce(0, 1)
        got = await h.receive(None)
        member = got["member_id"]
        uuid.UUID(member)
        group = await h.get("/share-groups/g")
        assert group["members"][0]["acquired_records"] == 1 and group["members"][0]["client_id"] == "tidelog-http"
        response = await h.client.delete(f"{PREFIX}/share-groups/g/members/{member}")
        assert response.status == 200
        again = (await h.receive("other"))["records"]
        assert [r["delivery_count"] for r in again] == [1]  # a clean leave does not count the delivery
        error = await h.post("/share-groups/g/ack", {"member_id": member, "receipts": ["jobs/0/0"]}, status=409)
        assert error["error_code"] == "UNKNOWN_MEMBER_ID"

    run(scenario, partitions=1)


def test_bad_requests():
    async def scenario(h: Harness):
        assert (await h.post("/share-groups/g/receive", {"topic": "nope"}, status=404))["error_code"] == \
            "UNKNOWN_TOPIC_OR_PARTITION"
        for body in ({}, {"topic": "jobs", "max_records": 0}, {"topic": "jobs", "timeout_ms": 30_001},
                     {"topic": "jobs", "member_id": "has space"}, {"topic": "jobs", "encoding": "hex"}):
            assert (await h.post("/share-groups/g/receive", body, status=400))["error_code"] == "INVALID_REQUEST"
        await h.receive("m1")
        for body in ({"member_id": "m1", "receipts": []}, {"member_id": "m1", "receipts": ["jobs/0/0"], "delay_ms": 5},
                     {"receipts": ["jobs/0/0"]}):
            assert (await h.post("/share-groups/g/ack", body, status=400))["error_code"] == "INVALID_REQUEST"
        assert (await h.get("/share-groups/none", status=404))["error_code"] == "GROUP_ID_NOT_FOUND"
        listed = await h.get("/share-groups")
        assert [(g["group_id"], g["members"], g["topics"]) for g in listed["groups"]] == [("g", 1, ["jobs"])]
        response = await h.client.delete(f"{PREFIX}/share-groups/g")
        assert response.status == 409 and (await response.json())["error_code"] == "NON_EMPTY_GROUP"
        assert (await h.client.delete(f"{PREFIX}/share-groups/g/members/m1")).status == 200
        assert (await h.client.delete(f"{PREFIX}/share-groups/g")).status == 200
        assert (await h.get("/share-groups"))["groups"] == []

    run(scenario, partitions=1)

"""A deleted topic's offsets leave every group (Kafka's onPartitionsDeleted): committed and pending
transactional ones, as tombstones that a reload of ``__consumer_offsets`` agrees with; and the
watch that tells a broker which topics were deleted."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace

from tidelog.groups.coordinator import GroupCoordinator, GroupSettings
from tidelog.groups.topic_deletions import TopicDeletions
from tidelog.protocol.errors import ErrorCode


class TxnLog:
    """A GroupLog in a list with producer ids and markers, replayed as ConsumerOffsetsTopic does: a
    transaction's records at its COMMIT marker, with their own offsets; open ones left aside."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int, object, object]] = []  # (record|marker, producer id, key|committed, value)
        self.gates: list[asyncio.Event] = []  # a write waits on the first, if any, once appended
        self.open_transactions: dict[int, list] = {}

    async def open(self) -> None:
        pass

    async def write(self, records, producer_id=-1, producer_epoch=-1):
        base = len(self.entries)
        self.entries += [("record", producer_id, key, value) for key, value in records]
        if self.gates:
            await self.gates.pop(0).wait()
        else:
            await asyncio.sleep(0)
        return base

    def marker(self, producer_id: int, committed: bool) -> None:
        self.entries.append(("marker", producer_id, committed, None))

    def replay(self):
        self.open_transactions = {}
        for offset, (kind, producer_id, key, value) in enumerate(self.entries):
            if kind == "marker":
                pending = self.open_transactions.pop(producer_id, [])
                if key:
                    yield from pending
            elif producer_id >= 0:
                self.open_transactions.setdefault(producer_id, []).append((offset, key, value))
            else:
                yield offset, key, value


def run(scenario, log: TxnLog):
    async def main():
        coordinator = GroupCoordinator(GroupSettings(), log)
        await coordinator.start()
        try:
            return await asyncio.wait_for(scenario(coordinator), 10)
        finally:
            coordinator.stop()

    return asyncio.run(main())


def offsets(c, group: str) -> dict[tuple[str, int], int]:
    return {(t, p): committed.offset for t, p, committed in c.offsets.fetch_offsets(group, None)}


def test_every_groups_committed_and_pending_offsets_of_the_topic_go_and_a_reload_agrees():
    log = TxnLog()

    async def first(c):
        assert await c.offsets.commit_offsets("g1", -1, "", None, {("t", 0): (5, -1, None), ("t", 1): (6, -1, None),
                                                                   ("u", 0): (7, -1, None)}) == {
            ("t", 0): ErrorCode.none, ("t", 1): ErrorCode.none, ("u", 0): ErrorCode.none}
        await c.offsets.commit_offsets("g2", -1, "", None, {("t", 0): (1, -1, None)})
        await c.offsets.commit_txn_offsets("g3", 7, 0, -1, "", None, {("t", 0): (9, -1, None)})
        await c.offsets.commit_txn_offsets("g1", 8, 0, -1, "", None, {("u", 1): (3, -1, None)})
        assert await c.offsets.remove_topic("t") == (3, 4)
        assert offsets(c, "g1") == {("u", 0): 7} and offsets(c, "g2") == {}
        assert not c.offsets.pending_txn.has_pending("g3") and c.offsets.pending_txn.has_pending("g1", "u", 1)
        log.marker(7, committed=True)  # the transaction commits after its topic was deleted: nothing comes back
        assert c.offsets.complete_txn(7, committed=True) == 0
        log.marker(8, committed=True)
        assert c.offsets.complete_txn(8, committed=True) == 1
        assert offsets(c, "g1") == {("u", 0): 7, ("u", 1): 3} and offsets(c, "g3") == {}
        assert await c.offsets.remove_topic("t") == (0, 0)

    run(first, log)

    async def second(c):
        assert offsets(c, "g1") == {("u", 0): 7, ("u", 1): 3}
        assert offsets(c, "g2") == {} and offsets(c, "g3") == {}
        assert len(c.offsets.pending_txn) == 0

    run(second, log)


def test_a_transaction_still_open_at_the_reload_loses_the_deleted_topics_offsets():
    log = TxnLog()

    async def first(c):
        await c.offsets.commit_txn_offsets("g", 7, 0, -1, "", None, {("t", 0): (9, -1, None), ("u", 0): (4, -1, None)})
        assert await c.offsets.remove_topic("t") == (1, 1)

    run(first, log)

    async def second(c):
        assert not c.offsets.pending_txn.has_pending("g", "t", 0) and c.offsets.pending_txn.has_pending("g", "u", 0)
        log.marker(7, committed=True)
        assert c.offsets.complete_txn(7, committed=True) == 1
        assert offsets(c, "g") == {("u", 0): 4}

    run(second, log)


def test_a_commit_written_before_the_tombstones_stays_deleted_and_one_after_them_stays():
    log = TxnLog()

    async def first(c):
        await c.offsets.commit_offsets("g", -1, "", None, {("t", 0): (1, -1, None)})
        gate = asyncio.Event()
        log.gates.append(gate)
        late = asyncio.ensure_future(c.offsets.commit_offsets("g", -1, "", None, {("t", 0): (2, -1, None)}))
        while len(log.entries) < 2:  # the late commit is appended, its acknowledgement held
            await asyncio.sleep(0)
        assert await c.offsets.remove_topic("t") == (1, 1)
        gate.set()
        assert await late == {("t", 0): ErrorCode.none}
        assert offsets(c, "g") == {}, "the log has the tombstone after that commit"
        # the topic made again: its first commit stays
        await c.offsets.commit_offsets("g", -1, "", None, {("t", 0): (3, -1, None)})
        assert offsets(c, "g") == {("t", 0): 3}

    run(first, log)
    run(lambda c: _assert(offsets(c, "g") == {("t", 0): 3}), log)


async def _assert(condition: bool) -> None:
    assert condition


def test_a_deletion_told_while_loading_waits_for_the_load_and_is_logged(caplog):
    log = TxnLog()
    run(lambda c: c.offsets.commit_offsets("g", -1, "", None, {("t", 0): (1, -1, None)}), log)
    counted: list[int] = []

    async def main():
        c = GroupCoordinator(GroupSettings(), log)
        c.on_topic_deleted("t", counted.append)
        await c.start()
        try:
            while offsets(c, "g"):
                await asyncio.sleep(0.01)
        finally:
            c.stop()

    caplog.set_level("INFO", logger="tidelog.groups.coordinator")
    asyncio.run(asyncio.wait_for(main(), 10))
    assert counted == [1]
    assert "topic t deleted: removed the committed offsets of 1 groups (1 partitions)" in caplog.text


@dataclass(frozen=True)
class Topic:
    name: str
    topic_id: uuid.UUID
    partitions: int = 1
    configs: tuple = ()


class Store:
    def __init__(self, *topics: Topic) -> None:
        self.topics = {t.name: t for t in topics}
        self.listeners = []

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)

    def notify(self, kind, key) -> None:
        for listener in self.listeners:
            listener(kind, key)


def test_the_watch_tells_each_deleted_topic_once_with_its_last_record():
    a, b = Topic("a", uuid.uuid4()), Topic("b", uuid.uuid4())
    store = Store(a, b)
    deleted: list[Topic] = []
    TopicDeletions(store, deleted.append)
    store.topics["a"] = replace(a, partitions=3)  # grown: not a deletion
    store.notify("topic", "a")
    store.topics["c"] = c = Topic("c", uuid.uuid4())
    store.notify("topic", "c")
    assert deleted == []
    del store.topics["a"]
    store.notify("topic", "a")
    store.notify("topic", "a")
    assert deleted == [replace(a, partitions=3)]
    store.topics["b"] = again = Topic("b", uuid.uuid4())  # deleted and made again between two looks
    store.notify("topic", "b")
    assert deleted[-1] == b
    del store.topics["b"], store.topics["c"]  # a reload after the watch fell behind says "controller"
    store.notify("controller", None)
    assert deleted[:2] == [replace(a, partitions=3), b] and sorted(deleted[2:], key=lambda t: t.name) == [again, c]


def test_a_group_left_without_offsets_goes_at_the_next_expiry_check_and_others_stay():
    log = TxnLog()

    async def scenario(c):
        await c.offsets.commit_offsets("only-t", -1, "", None, {("t", 0): (1, -1, None)})
        await c.offsets.commit_offsets("also-u", -1, "", None, {("t", 0): (1, -1, None), ("u", 0): (2, -1, None)})
        assert await c.offsets.remove_topic("t") == (2, 2)
        assert c.registry.known("only-t")  # empty with no offsets, until the expiry check (as in Kafka)
        assert await c.expiry.expire_offsets() == 0
        assert not c.registry.known("only-t") and c.registry.known("also-u")
        assert offsets(c, "also-u") == {("u", 0): 2}

    run(scenario, log)

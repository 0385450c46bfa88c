"""The transaction coordinator over in-process collaborators: a __transaction_state that records (or
fails) appends, and partition leaders that run the real partition side (storage/producer_txn.py).

Covers what clients see (InitProducerId epochs and fencing, Add*, EndTxn retries, the error codes
and their old-version mapping), markers and their retries, timeouts, expiry, loading and failover."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from tidelog.config import BrokerConfig
from tidelog.protocol.control_records import EndTxnMarker
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import build_batch, iter_records, parse_batch_header
from tidelog.storage.log import LogConfig, PartitionLog
from tidelog.storage.producer_txn import ProducerTransactions
from tidelog.txn import log_records
from tidelog.txn.coordinator import TransactionConfig, TransactionCoordinator, client_error, verification_error
from tidelog.txn.markers import NO_LEADER, UNKNOWN_LEADER, MarkerEntry, TransactionMarkerChannel
from tidelog.txn.state import MAX_PRODUCER_EPOCH, TopicPartition, TransactionState

S = TransactionState
E = ErrorCode
A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
OFFSETS = TopicPartition("__consumer_offsets", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


class StateLog:
    """__transaction_state in memory: every append kept per partition, failures and holds on demand."""

    def __init__(self) -> None:
        self.records: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        self.failures: list[ErrorCode] = []
        self.gate: asyncio.Event | None = None
        self.appends = 0

    async def append(self, partition: int, records, timeout_ms: int) -> None:
        self.appends += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise KafkaError(self.failures.pop(0), "injected")
        self.records[partition].extend(records)

    def states(self, partition: int = 0) -> list[str]:
        return [log_records.decode_value(v).state.kafka_name if v is not None else "tombstone"
                for _, v in self.records[partition]]


class Partitions:
    """Partition leaders on brokers 1..3 running the real partition side; the MarkerSender."""

    def __init__(self) -> None:
        self.leaders: dict[TopicPartition, int] = {A0: 1, A1: 2, B0: 3, OFFSETS: 1}
        self.state: dict[TopicPartition, ProducerTransactions] = defaultdict(ProducerTransactions)
        self.end: dict[TopicPartition, int] = defaultdict(int)
        self.markers: dict[TopicPartition, list[tuple[int, int, bool, int]]] = defaultdict(list)
        self.unreachable: set[int] = set()
        self.errors: dict[TopicPartition, list[ErrorCode]] = defaultdict(list)
        self.requests: list[tuple[int, int]] = []  # (broker, markers in the request)
        self.gate: asyncio.Event | None = None

    def leader_of(self, tp: TopicPartition):
        return self.leaders.get(tp, NO_LEADER)

    def produce(self, tp: TopicPartition, producer_id: int, epoch: int, transactional: bool = True) -> None:
        """A produce as the partition leader would take it (raises KafkaError when refused)."""
        batch = build_batch([(None, b"v", [])], timestamp_ms=1, producer_id=producer_id, producer_epoch=epoch,
                            base_sequence=0, is_transactional=transactional)
        info = parse_batch_header(batch)
        self.state[tp].check_data(info)
        self.state[tp].on_data(info, self.end[tp])
        self.end[tp] += 1

    def lso(self, tp: TopicPartition) -> int:
        return self.state[tp].last_stable_offset(high_watermark=self.end[tp])

    async def send(self, broker_id: int, markers: list[MarkerEntry]):
        self.requests.append((broker_id, len(markers)))
        if self.gate is not None:
            await self.gate.wait()
        if broker_id in self.unreachable:
            raise ConnectionRefusedError(f"broker {broker_id} is down")
        result = {}
        for entry in markers:
            for tp in entry.partitions:
                if self.errors[tp]:
                    result[(entry.producer_id, tp)] = self.errors[tp].pop(0)
                    continue
                if self.leaders.get(tp) != broker_id:
                    result[(entry.producer_id, tp)] = E.not_leader_or_follower
                    continue
                marker = EndTxnMarker(entry.committed, entry.coordinator_epoch)
                state = self.state[tp]
                try:
                    state.check_marker(entry.producer_id, entry.producer_epoch, marker)
                except KafkaError as e:
                    result[(entry.producer_id, tp)] = e.error_code
                    continue
                completed = state.on_marker(entry.producer_id, entry.producer_epoch, marker, self.end[tp])
                if completed is not None:
                    state.complete(completed, high_watermark=self.end[tp] + 1)
                self.markers[tp].append((entry.producer_id, entry.producer_epoch, entry.committed, entry.coordinator_epoch))
                self.end[tp] += 1
                result[(entry.producer_id, tp)] = E.none
        return result


class Ids:
    def __init__(self) -> None:
        self.next = 1000

    async def __call__(self) -> int:
        self.next += 1
        return self.next


def make(config: TransactionConfig | None = None, partitions: Partitions | None = None, log: StateLog | None = None,
         clock: Clock | None = None):
    config = config or TransactionConfig(state_log_num_partitions=1, transaction_max_timeout_ms=60_000)
    partitions = partitions or Partitions()
    log = log or StateLog()
    clock = clock or Clock()
    coordinator = TransactionCoordinator(config, log.append, Ids(),
                                         TransactionMarkerChannel(partitions, retry_backoff_ms=1, max_retry_backoff_ms=4),
                                         clock)
    return coordinator, partitions, log, clock


async def elected(coordinator, epoch: int = 0, records=()):
    await coordinator.on_election(0, epoch, list(records))
    coordinator.active = True
    return coordinator


async def settle(coordinator) -> None:
    """Wait for every marker write and completion in flight."""
    while coordinator._marker_tasks:
        await asyncio.gather(*list(coordinator._marker_tasks.values()), return_exceptions=True)


async def with_producer(transactional_id: str = "tx"):
    """A coordinator leading partition 0 and one producer initialised on it."""
    coordinator, parts, log, clock = make()
    await elected(coordinator)
    pid = (await coordinator.init_producer_id(transactional_id, 30_000)).producer_id
    return coordinator, parts, log, clock, pid


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


# ---- a transaction, end to end --------------------------------------------------------------

def test_commit_walks_the_states_writes_markers_everywhere_and_frees_the_lso():
    async def main():
        coordinator, parts, log, _ = make()
        await elected(coordinator)
        init = await coordinator.init_producer_id("tx", 30_000)
        assert (init.error, init.producer_id, init.producer_epoch) == (E.none, 1001, 0)
        pid = init.producer_id
        assert await coordinator.add_partitions("tx", pid, 0, [A0, A1]) is E.none
        assert await coordinator.add_partitions("tx", pid, 0, [A0]) is E.none, "already in: answered at once"
        assert await coordinator.add_offsets("tx", pid, 0, offsets_partition=0) is E.none
        for tp in (A0, A1, OFFSETS):
            parts.produce(tp, pid, 0)
        assert parts.lso(A0) == 0 and parts.lso(A1) == 0
        appends = log.appends
        assert await coordinator.end_txn("tx", pid, 0, committed=True) is E.none
        await settle(coordinator)
        assert log.appends == appends + 2, "PrepareCommit, then CompleteCommit"
        assert log.states() == ["Empty", "Ongoing", "Ongoing", "PrepareCommit", "CompleteCommit"]
        for tp in (A0, A1, OFFSETS):
            assert parts.markers[tp] == [(pid, 0, True, 0)]
            assert parts.lso(tp) == parts.end[tp]
        described = coordinator.describe("tx")
        assert (described.state, described.topics, described.producer_epoch) == ("CompleteCommit", {}, 0)
        assert await coordinator.end_txn("tx", pid, 0, committed=True) is E.none, "a retried EndTxn"
        assert await coordinator.end_txn("tx", pid, 0, committed=False) is E.invalid_txn_state
        assert await coordinator.add_partitions("tx", pid, 0, [B0]) is E.none, "the next transaction"
        assert coordinator.describe("tx").txn_start_timestamp_ms > 0
    run(main())


def test_abort_writes_abort_markers_and_the_requests_batch_per_broker():
    async def main():
        coordinator, parts, log, _ = make()
        await elected(coordinator)
        pids = []
        for name in ("t1", "t2", "t3"):
            pid = (await coordinator.init_producer_id(name, 30_000)).producer_id
            await coordinator.add_partitions(name, pid, 0, [A0])
            parts.produce(A0, pid, 0)
            pids.append(pid)
        parts.gate = asyncio.Event()
        for name, pid in zip(("t1", "t2", "t3"), pids):
            assert await coordinator.end_txn(name, pid, 0, committed=False) is E.none
        await asyncio.sleep(0)
        parts.gate.set()
        await settle(coordinator)
        assert sorted(p for p, *_ in parts.markers[A0]) == pids
        assert all(not committed for _, _, committed, _ in parts.markers[A0])
        assert parts.requests == [(1, 3)], "the three transactions' markers share one request"
        assert parts.lso(A0) == parts.end[A0]
        assert [coordinator.describe(n).state for n in ("t1", "t2", "t3")] == ["CompleteAbort"] * 3
    run(main())


# ---- InitProducerId ----------------------------------------------------------------------------

def test_init_producer_id_validation():
    async def main():
        coordinator, _, _, _ = make()
        assert (await coordinator.init_producer_id("tx", 1000)).error is E.not_coordinator
        await elected(coordinator)
        assert (await coordinator.init_producer_id("", 1000)).error is E.invalid_request
        assert (await coordinator.init_producer_id("tx", 0)).error is E.invalid_transaction_timeout
        assert (await coordinator.init_producer_id("tx", 60_001)).error is E.invalid_transaction_timeout
        assert (await coordinator.init_producer_id("tx", 1000, producer_id=5)).error is E.invalid_request
        idempotent = await coordinator.init_producer_id(None, 0)
        assert idempotent.error is E.none and idempotent.producer_epoch == 0
        assert (await coordinator.init_producer_id("tx", 60_000)).error is E.none
    run(main())


def test_a_new_producer_fences_the_old_one_and_its_open_transaction():
    async def main():
        coordinator, parts, log, _ = make()
        await elected(coordinator)
        old = await coordinator.init_producer_id("tx", 30_000)
        pid = old.producer_id
        await coordinator.add_partitions("tx", pid, 0, [A0, B0])
        parts.produce(A0, pid, 0)
        new = await coordinator.init_producer_id("tx", 30_000)
        assert new.error is E.concurrent_transactions, "the open transaction is being aborted first"
        await settle(coordinator)
        assert parts.markers[A0] == [(pid, 1, False, 0)], "aborted with the bumped epoch"
        assert log.states()[-2:] == ["PrepareAbort", "CompleteAbort"]
        retried = await coordinator.init_producer_id("tx", 30_000)
        assert (retried.error, retried.producer_id, retried.producer_epoch) == (E.none, pid, 2)
        # the zombie: its data, its EndTxn and its AddPartitions are all refused
        with pytest.raises(KafkaError) as e:
            parts.produce(A0, pid, 0)
        assert e.value.error_code is E.invalid_producer_epoch
        assert await coordinator.end_txn("tx", pid, 0, committed=True) is E.producer_fenced
        assert client_error(E.producer_fenced, 26, 1) is E.invalid_producer_epoch
        assert client_error(E.producer_fenced, 26, 2) is E.producer_fenced
        assert client_error(E.producer_fenced, 22, 3) is E.invalid_producer_epoch
        assert client_error(E.producer_fenced, 24, 1) is E.invalid_producer_epoch
        assert client_error(E.producer_fenced, 25, 2) is E.producer_fenced
        assert await coordinator.add_partitions("tx", pid, 0, [A0]) is E.producer_fenced
        assert await coordinator.add_partitions("tx", pid + 1, 2, [A0]) is E.invalid_producer_id_mapping
        parts.produce(A0, pid, 2)
    run(main())


def test_kip_360_retries_with_producer_id_and_epoch():
    async def main():
        coordinator, _, _, _ = make()
        await elected(coordinator)
        first = await coordinator.init_producer_id("tx", 30_000)
        bumped = await coordinator.init_producer_id("tx", 30_000, first.producer_id, 0)
        assert (bumped.error, bumped.producer_epoch) == (E.none, 1)
        again = await coordinator.init_producer_id("tx", 30_000, first.producer_id, 0)
        assert (again.error, again.producer_epoch) == (E.none, 1), "a retry of the bump it did not hear about"
        assert (await coordinator.init_producer_id("tx", 30_000, first.producer_id + 7, 1)).error is E.producer_fenced
    run(main())


def test_exhausted_epochs_move_to_a_new_producer_id():
    async def main():
        coordinator, _, _, _ = make()
        await elected(coordinator)
        first = await coordinator.init_producer_id("tx", 30_000)
        coordinator.state_manager.partitions[0].transactions["tx"].producer_epoch = MAX_PRODUCER_EPOCH - 1
        rotated = await coordinator.init_producer_id("tx", 30_000)
        assert rotated.error is E.none and rotated.producer_id != first.producer_id and rotated.producer_epoch == 0
    run(main())


# ---- concurrency and append failures -------------------------------------------------------------

def test_requests_during_a_write_get_concurrent_transactions():
    async def main():
        coordinator, _, log, _, pid = await with_producer()
        log.gate = asyncio.Event()
        adding = asyncio.ensure_future(coordinator.add_partitions("tx", pid, 0, [A0]))
        await asyncio.sleep(0)
        assert await coordinator.add_partitions("tx", pid, 0, [A1]) is E.concurrent_transactions
        assert (await coordinator.init_producer_id("tx", 30_000)).error is E.concurrent_transactions
        log.gate.set()
        assert await adding is E.none
    run(main())


@pytest.mark.parametrize("append_error, answered", [
    (E.not_enough_replicas, E.coordinator_not_available), (E.request_timed_out, E.coordinator_not_available),
    (E.not_leader_or_follower, E.not_coordinator), (E.kafka_storage_error, E.not_coordinator),
    (E.message_too_large, E.unknown_server_error)])
def test_failed_writes_are_mapped_and_leave_the_state_unchanged(append_error, answered):
    async def main():
        coordinator, _, log, _, pid = await with_producer()
        log.failures.append(append_error)
        assert await coordinator.add_partitions("tx", pid, 0, [A0]) is answered
        assert coordinator.describe("tx").state == "Empty"
        assert await coordinator.add_partitions("tx", pid, 0, [A0]) is E.none
    run(main())


def test_a_failed_fence_is_not_bumped_twice():
    async def main():
        coordinator, parts, log, _, pid = await with_producer()
        await coordinator.add_partitions("tx", pid, 0, [A0])
        log.failures.append(E.not_enough_replicas)
        assert (await coordinator.init_producer_id("tx", 30_000)).error is E.coordinator_not_available
        assert coordinator.state_manager.partitions[0].transactions["tx"].has_failed_epoch_fence
        assert (await coordinator.init_producer_id("tx", 30_000)).error is E.concurrent_transactions
        await settle(coordinator)
        assert parts.markers[A0] == [(pid, 1, False, 0)], "epoch 1, not 2: the failed fence's epoch is reused"
        assert (await coordinator.init_producer_id("tx", 30_000)).producer_epoch == 2
    run(main())


def test_verification_of_a_producers_first_batch_kip_890_part_1():
    async def main():
        coordinator, parts, log, _ = make()
        assert coordinator.verify_partitions("tx", 1, 0, [A0]) == {A0: E.not_coordinator}
        await elected(coordinator)
        assert coordinator.verify_partitions("tx", 1, 0, [A0]) == {A0: E.invalid_producer_id_mapping}
        pid = (await coordinator.init_producer_id("tx", 30_000)).producer_id
        await coordinator.add_partitions("tx", pid, 0, [A0])
        assert coordinator.verify_partitions("tx", pid, 0, [A0, A1]) == {A0: E.none, A1: E.transaction_abortable}
        assert coordinator.verify_partitions("tx", pid, 1, [A0]) == {A0: E.producer_fenced}
        assert coordinator.verify_partitions("", pid, 0, [A0]) == {A0: E.invalid_request}
        parts.gate = asyncio.Event()
        await coordinator.end_txn("tx", pid, 0, committed=True)
        assert coordinator.verify_partitions("tx", pid, 0, [A0]) == {A0: E.concurrent_transactions}
        parts.gate.set()
        await settle(coordinator)
        assert verification_error(E.transaction_abortable, 9) is E.invalid_txn_state
        assert verification_error(E.transaction_abortable, 11) is E.transaction_abortable
        assert verification_error(E.producer_fenced, 11) is E.invalid_producer_epoch
        assert verification_error(E.concurrent_transactions, 9) is E.not_enough_replicas
    run(main())


# ---- EndTxn errors --------------------------------------------------------------------------------

def test_end_txn_errors():
    async def main():
        coordinator, parts, log, _ = make()
        await elected(coordinator)
        assert await coordinator.end_txn("nobody", 1, 0, True) is E.invalid_producer_id_mapping
        pid = (await coordinator.init_producer_id("tx", 30_000)).producer_id
        assert await coordinator.end_txn("tx", pid, 0, True) is E.invalid_txn_state, "nothing to end"
        assert await coordinator.end_txn("", pid, 0, True) is E.invalid_request
        await coordinator.add_partitions("tx", pid, 0, [A0])
        assert await coordinator.end_txn("tx", pid + 1, 0, True) is E.invalid_producer_id_mapping
        assert await coordinator.end_txn("tx", pid, 1, True) is E.producer_fenced
        parts.gate = asyncio.Event()  # markers held: the transaction sits in PrepareCommit
        assert await coordinator.end_txn("tx", pid, 0, True) is E.none
        assert await coordinator.end_txn("tx", pid, 0, True) is E.concurrent_transactions
        assert await coordinator.end_txn("tx", pid, 0, False) is E.concurrent_transactions, "pending completion"
        assert await coordinator.add_partitions("tx", pid, 0, [A1]) is E.concurrent_transactions
        parts.gate.set()
        await settle(coordinator)
        assert await coordinator.end_txn("tx", pid, 0, False) is E.invalid_txn_state
    run(main())


# ---- markers: retries until every leader wrote them --------------------------------------------------

def test_markers_are_retried_through_leader_moves_unreachable_brokers_and_errors():
    async def main():
        coordinator, parts, log, _, pid = await with_producer()
        await coordinator.add_partitions("tx", pid, 0, [A0, A1, B0])
        parts.leaders[A1] = UNKNOWN_LEADER  # mid-election
        parts.unreachable.add(3)  # B0's leader is down
        parts.errors[A0] = [E.not_enough_replicas, E.request_timed_out]
        assert await coordinator.end_txn("tx", pid, 0, committed=True) is E.none
        while not parts.markers[A0] or coordinator.markers.retries < 3:
            await asyncio.sleep(0.001)
        assert coordinator.describe("tx").state == "PrepareCommit"
        assert coordinator.describe("tx").topics == {"a": [1], "b": [0]}, "A0 got its marker after two retries"
        parts.leaders[A1] = 2
        parts.leaders[B0] = 1  # B0 moved to a live broker
        await settle(coordinator)
        assert coordinator.describe("tx").state == "CompleteCommit"
        assert all(parts.markers[tp] == [(pid, 0, True, 0)] for tp in (A0, A1, B0))
        assert coordinator.markers.retries > 0
    run(main())


def test_a_deleted_partition_is_skipped_and_a_fenced_marker_ends_the_sending():
    async def main():
        coordinator, parts, log, _, pid = await with_producer()
        await coordinator.add_partitions("tx", pid, 0, [A0, A1])
        del parts.leaders[A1]
        await coordinator.end_txn("tx", pid, 0, committed=True)
        await settle(coordinator)
        assert coordinator.describe("tx").state == "CompleteCommit" and not parts.markers[A1]

        pid2 = (await coordinator.init_producer_id("tx2", 30_000)).producer_id
        await coordinator.add_partitions("tx2", pid2, 0, [A0])
        parts.errors[A0] = [E.transaction_coordinator_fenced]
        await coordinator.end_txn("tx2", pid2, 0, committed=True)
        await settle(coordinator)
        assert coordinator.describe("tx2").state == "PrepareCommit", "left to the newer coordinator"
    run(main())


# ---- timeouts and expiry ---------------------------------------------------------------------------

def test_a_hung_transaction_is_aborted_after_its_timeout_and_its_producer_fenced():
    async def main():
        coordinator, parts, log, clock = make()
        await elected(coordinator)
        pid = (await coordinator.init_producer_id("tx", 5_000)).producer_id
        await coordinator.add_partitions("tx", pid, 0, [A0])
        parts.produce(A0, pid, 0)
        clock.now += 5_000
        await coordinator.abort_timed_out_transactions()
        assert coordinator.describe("tx").state == "Ongoing", "not past its timeout yet"
        clock.now += 1
        await coordinator.abort_timed_out_transactions()
        await settle(coordinator)
        assert coordinator.describe("tx").state == "CompleteAbort" and coordinator.timed_out_aborts == 1
        assert parts.markers[A0] == [(pid, 1, False, 0)] and parts.lso(A0) == parts.end[A0]
        assert await coordinator.add_partitions("tx", pid, 0, [A0]) is E.producer_fenced
        assert await coordinator.end_txn("tx", pid, 0, committed=True) is E.producer_fenced
    run(main())


def test_idle_ids_expire_with_a_tombstone():
    async def main():
        config = TransactionConfig(state_log_num_partitions=1, transactional_id_expiration_ms=10_000)
        coordinator, parts, log, clock = make(config)
        await elected(coordinator)
        await coordinator.init_producer_id("idle", 1000)
        pid = (await coordinator.init_producer_id("busy", 1000)).producer_id
        await coordinator.add_partitions("busy", pid, 0, [A0])
        clock.now += 10_000
        await coordinator.state_manager.remove_expired_transactional_ids()
        assert log.records[0][-1] == (log_records.encode_key("idle"), None)
        assert coordinator.describe("idle").error is E.transactional_id_not_found
        assert coordinator.describe("busy").state == "Ongoing", "an open transaction never expires"
        assert coordinator.state_manager.expired_ids == 1
        again = await coordinator.init_producer_id("idle", 1000)
        assert again.producer_epoch == 0 and again.producer_id not in (pid,)
    run(main())


def test_timers_run_on_their_intervals():
    async def main():
        config = TransactionConfig(state_log_num_partitions=1, abort_timed_out_transaction_cleanup_interval_ms=5,
                                   remove_expired_transaction_cleanup_interval_ms=5, transactional_id_expiration_ms=1)
        coordinator, parts, log, clock = make(config)
        await coordinator.on_election(0, 0, [])
        coordinator.start()
        pid = (await coordinator.init_producer_id("tx", 100)).producer_id
        await coordinator.add_partitions("tx", pid, 0, [A0])
        clock.now += 1000
        while coordinator.describe("tx").error is E.none:  # aborted, then expired
            await asyncio.sleep(0.005)
            clock.now += 10
        assert coordinator.timed_out_aborts == 1 and coordinator.state_manager.expired_ids == 1
        await coordinator.stop()
        assert coordinator.describe("tx").error is E.coordinator_not_available
    run(main())


# ---- loading, failover --------------------------------------------------------------------------------

def test_requests_wait_for_the_load_and_a_new_coordinator_resumes_prepared_transactions():
    async def main():
        parts = Partitions()
        first, _, log, clock = make(partitions=parts)
        await elected(first, epoch=3)
        pid = (await first.init_producer_id("tx", 30_000)).producer_id
        await first.add_partitions("tx", pid, 0, [A0, A1])
        parts.produce(A0, pid, 0)
        parts.unreachable.add(2)  # A1's marker cannot be written yet
        assert await first.end_txn("tx", pid, 0, committed=True) is E.none
        while not parts.markers[A0]:
            await asyncio.sleep(0.001)
        first.on_resignation(0, 3)  # the coordinator moves
        assert (await first.init_producer_id("tx", 30_000)).error is E.not_coordinator
        assert not first._marker_tasks
        parts.unreachable.clear()

        second, _, _, _ = make(partitions=parts, log=log, clock=clock)
        loading = asyncio.Event()

        async def records():
            await loading.wait()
            for record in log.records[0]:
                yield record

        load = asyncio.ensure_future(second.on_election(0, 4, records()))
        await asyncio.sleep(0)
        second.active = True
        assert (await second.init_producer_id("tx", 30_000)).error is E.coordinator_load_in_progress
        assert second.describe("tx").error is E.coordinator_load_in_progress
        assert second.list_transactions().error is E.coordinator_load_in_progress
        loading.set()
        await load
        await settle(second)
        assert second.describe("tx").state == "CompleteCommit"
        assert parts.markers[A1] == [(pid, 0, True, 4)], "sent again by the new coordinator, with its epoch"
        assert parts.lso(A0) == parts.end[A0]
    run(main())


def test_an_ongoing_transaction_survives_failover_and_can_be_committed():
    async def main():
        parts = Partitions()
        first, _, log, clock = make(partitions=parts)
        await elected(first)
        pid = (await first.init_producer_id("tx", 30_000)).producer_id
        await first.add_partitions("tx", pid, 0, [A0])
        first.on_resignation(0)
        second, _, _, _ = make(partitions=parts, log=log, clock=clock)
        await elected(second, epoch=1, records=log.records[0])
        assert second.describe("tx").state == "Ongoing"
        assert await second.add_partitions("tx", pid, 0, [A1]) is E.none
        assert await second.end_txn("tx", pid, 0, committed=True) is E.none
        await settle(second)
        assert parts.markers[A0] == parts.markers[A1] == [(pid, 0, True, 1)]
    run(main())


def test_a_write_that_lands_after_the_coordinator_moved_is_not_applied():
    async def main():
        coordinator, _, log, _, pid = await with_producer()
        log.gate = asyncio.Event()
        adding = asyncio.ensure_future(coordinator.add_partitions("tx", pid, 0, [A0]))
        await asyncio.sleep(0)
        coordinator.on_resignation(0)
        await coordinator.on_election(0, 1, list(log.records[0]))
        log.gate.set()
        assert await adding is E.not_coordinator
        assert coordinator.describe("tx").state == "Empty"
    run(main())


def test_load_from_a_real_log_skips_unreadable_records_and_applies_tombstones(tmp_path):
    async def main():
        state_log = PartitionLog.open(tmp_path / "__transaction_state-0", "__transaction_state", 0, LogConfig(),
                                      recover=False)

        async def append(partition, records, timeout_ms):
            batch = bytearray(build_batch([(k, v, []) for k, v in records], timestamp_ms=1))
            state_log.append(memoryview(batch), parse_batch_header(batch))

        parts = Partitions()
        coordinator = TransactionCoordinator(TransactionConfig(state_log_num_partitions=1), append, Ids(),
                                             TransactionMarkerChannel(parts), Clock())
        await elected(coordinator)
        for name in ("a", "b", "c"):
            pid = (await coordinator.init_producer_id(name, 30_000)).producer_id
            await coordinator.add_partitions(name, pid, 0, [A0])
        await append(0, [(log_records.encode_key("b"), None), (b"\x00\x09junk", b"x"),
                         (log_records.encode_key("zz"), b"\x00\x05broken")], 0)

        def records():
            data = state_log.read(0, 1 << 20, True)
            return [(r.key, r.value) for r in iter_records(data)]

        reloaded = TransactionCoordinator(TransactionConfig(state_log_num_partitions=1), append, Ids(),
                                          TransactionMarkerChannel(parts), Clock())
        await elected(reloaded, epoch=1, records=records())
        assert sorted(tid for tid, _, _ in reloaded.list_transactions().transactions) == ["a", "c"]
        assert reloaded.describe("a").topics == {"a": [0]}
    run(main())


# ---- admin ------------------------------------------------------------------------------------------

def test_describe_and_list_with_kafkas_filters():
    async def main():
        coordinator, parts, log, clock = make()
        assert coordinator.list_transactions().error is E.coordinator_not_available
        await elected(coordinator)
        p1 = (await coordinator.init_producer_id("one", 30_000)).producer_id
        p2 = (await coordinator.init_producer_id("two", 30_000)).producer_id
        await coordinator.add_partitions("two", p2, 0, [A0, B0, A1])
        clock.now += 100
        everything = coordinator.list_transactions()
        assert sorted(everything.transactions) == [("one", p1, "Empty"), ("two", p2, "Ongoing")]
        assert coordinator.list_transactions(["Ongoing", "Nonsense"]) == (E.none, ["Nonsense"], [("two", p2, "Ongoing")])
        assert coordinator.list_transactions(producer_id_filters=[p1]).transactions == [("one", p1, "Empty")]
        assert coordinator.list_transactions(["Ongoing"], duration_filter_ms=100).transactions == []
        assert coordinator.list_transactions(["Ongoing"], duration_filter_ms=99).transactions == [("two", p2, "Ongoing")]
        described = coordinator.describe("two")
        assert described == ("two", E.none, "Ongoing", 30_000, clock.now - 100, p2, 0, {"a": [0, 1], "b": [0]})
        assert coordinator.describe("nobody").error is E.transactional_id_not_found
        assert coordinator.describe("").error is E.invalid_request
        assert coordinator.stats()["transactions"]["Ongoing"] == 1
    run(main())


def test_settings_default_to_kafkas():
    config = TransactionConfig.from_broker_config(BrokerConfig.load(env={}))
    assert config == TransactionConfig()
    assert (config.transaction_max_timeout_ms, config.transactional_id_expiration_ms, config.state_log_num_partitions,
            config.abort_timed_out_transaction_cleanup_interval_ms,
            config.remove_expired_transaction_cleanup_interval_ms) == (900_000, 604_800_000, 50, 10_000, 3_600_000)
    broker = BrokerConfig.load(env={})
    assert (broker["transaction.state.log.replication.factor"], broker["transaction.state.log.min.isr"],
            broker["transaction.state.log.segment.bytes"], broker["transaction.state.log.load.buffer.size"]) == (
        3, 2, 104857600, 5242880)

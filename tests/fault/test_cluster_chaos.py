"""Chaos: 3 brokers and etcd (real processes) under an idempotent acks=all producer and a
committing consumer group, through rounds of random faults:

- kill-leader: SIGKILL the leader of a random partition, restart it once leadership moved;
- kill-follower: SIGKILL a follower of a random partition, restart it a moment later;
- pause: SIGSTOP a random broker for longer than its session timeout, then SIGCONT;
- torn-tail: SIGKILL a random broker, cut the tail of its active segments mid-batch (a write
  the disk never finished), restart it (recovery);
- fsync-failure: restart a random broker with ``TIDELOG_FAULTS`` failing its segment fsyncs
  (EIO): its log directory goes offline, its leaderships and ISR places move to the others;
  then it restarts without the fault (recovery) and rejoins.

After every round the cluster must heal (every partition led, every ISR whole) and the producer
must make progress. At the end every acknowledged record is in the log exactly once, at its
offset, in order, and no offset the group committed is past a record the group did not see.

``CHAOS_ROUNDS`` (default 10, the CI run: under a minute) sets the number of rounds,
``CHAOS_SEED`` the seed and ``CHAOS_FAULTS`` (comma-separated) the faults to
draw from; they are printed, with every round's fault, so a failure can be replayed:
``CHAOS_SEED=... CHAOS_ROUNDS=... ./scripts/test -k chaos -s``. ``CHAOS_DEBUG`` (librdkafka
``debug`` contexts, e.g. ``msg,eos,protocol``) turns on the producer's debug log, written by
librdkafka to stderr (run with ``-s 2>file``); ``CHAOS_READER_DEBUG`` (default ``cgrp``, e.g.
``cgrp,consumer,protocol``, empty for none) the group reader's; a failure's report also says
what the reader's thread was doing (polling, or in a synchronous commit and for how long) and
when it last read a record.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tidelog.protocol.records import BATCH_HEADER_SIZE, parse_batch_header

pytestmark = pytest.mark.slow

TOPIC = "chaos"
PARTITIONS = 3
GROUP = "chaos-group"
SESSION_TIMEOUT_MS = 2000  # the brokers' etcd lease (tests/clusterproc.py)
MAX_IN_FLIGHT = 2000  # records produced but not yet acknowledged or failed
FAULTS = ("kill-leader", "kill-follower", "pause", "torn-tail", "fsync-failure")
HEAL_S = 60
# The reader's librdkafka debug contexts, on by default (a few hundred lines a run, on stderr,
# shown with a failure): its group stuck twice at load 18-23 and only this says why.
READER_DEBUG = os.environ.get("CHAOS_READER_DEBUG", "cgrp")
PROGRESS_RECORDS = 200


class Writer(threading.Thread):
    """An idempotent acks=all producer: numbered records round-robin over the partitions, at
    most MAX_IN_FLIGHT unacknowledged; every acknowledgement noted with its offset."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True, name="chaos-writer")
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "message.timeout.ms": 300000, "retry.backoff.ms": 50,
                                  "retry.backoff.max.ms": 500, "topic.metadata.refresh.interval.ms": 1000,
                                  **({"debug": os.environ["CHAOS_DEBUG"]} if os.environ.get("CHAOS_DEBUG") else {})})
        self.acked: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}  # (offset, n)
        self.failed: list[str] = []
        self.produced = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def delivered(self, err, msg) -> None:
        with self._lock:
            if err is None:
                self.acked[msg.partition()].append((msg.offset(), int(msg.value())))
            else:
                self.failed.append(f"{msg.partition()}:{int(msg.value())}: {err}")

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.acked.values())

    def run(self) -> None:
        while not self.stop.is_set():
            if self.produced - self.count() - len(self.failed) >= MAX_IN_FLIGHT:
                self.producer.poll(0.05)
                continue
            try:
                self.producer.produce(TOPIC, value=b"%d" % self.produced, partition=self.produced % PARTITIONS,
                                      on_delivery=self.delivered)
                self.produced += 1
            except BufferError:
                pass
            self.producer.poll(0.001)
        self.producer.flush(300)


class GroupReader(threading.Thread):
    """A consumer group member that commits what it has seen every few hundred records."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True, name="chaos-reader")
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False, "session.timeout.ms": 6000, "max.poll.interval.ms": 300000,
                                  "topic.metadata.refresh.interval.ms": 1000,
                                  **({"debug": READER_DEBUG} if READER_DEBUG else {})})
        self.seen: dict[int, dict[int, int]] = {p: {} for p in range(PARTITIONS)}  # offset -> n
        self.conflicts: list[str] = []  # one offset seen with two values: a log rewritten under us
        self.commit_errors = collections.Counter()
        self.stop = threading.Event()
        self.exited = threading.Event()
        # What the thread does, for a failure's report: librdkafka rejoins after a lost assignment
        # only once its commits in flight are answered (unassign waits for them), and a
        # synchronous commit keeps this thread from poll(), which serves the revocation.
        self.commit_started: float | None = None  # monotonic, while in commit()
        self.commits = 0
        self.last_read = time.monotonic()
        self.last_error: str | None = None  # the last error poll() returned

    def count(self) -> int:
        return sum(len(v) for v in self.seen.values())

    def state(self) -> str:
        now = time.monotonic()
        doing = (f"in a synchronous commit for {now - self.commit_started:.1f} s" if self.commit_started is not None
                 else "polling")
        return (f"reader: {doing}, {self.commits} commits, last record read {now - self.last_read:.1f} s ago, "
                f"last poll error {self.last_error}, commit errors {dict(self.commit_errors)}")

    def commit(self) -> None:
        self.commit_started = time.monotonic()
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as e:
            self.commit_errors[e.args[0].name()] += 1  # the coordinator is moving: the next commit covers it
        finally:
            self.commit_started = None
            self.commits += 1

    def run(self) -> None:
        self.consumer.subscribe([TOPIC])
        uncommitted = 0
        try:
            while not self.stop.is_set():
                message = self.consumer.poll(0.2)
                if message is None:
                    continue
                if message.error():
                    self.last_error = message.error().str()
                    continue
                self.last_read = time.monotonic()
                n, offset, partition = int(message.value()), message.offset(), message.partition()
                previous = self.seen[partition].setdefault(offset, n)
                if previous != n:
                    self.conflicts.append(f"partition {partition} offset {offset}: saw {previous}, then {n}")
                uncommitted += 1
                if uncommitted >= 300:
                    self.commit()
                    uncommitted = 0
            self.commit()
        finally:
            self.exited.set()


def partitions(admin: AdminClient, topic: str = TOPIC):
    try:
        return admin.list_topics(topic, timeout=5).topics[topic].partitions
    except KafkaException:
        return {}


def healed(cluster: Cluster, admin: AdminClient) -> bool:
    """Every broker up and registered, every partition (ours and the offsets topic) led with a
    whole ISR."""
    if not all(b.alive for b in cluster.brokers.values()):
        return False
    try:
        if len(admin.list_topics(timeout=5).brokers) != len(cluster.brokers):
            return False
    except KafkaException:
        return False
    for topic in (TOPIC, "__consumer_offsets"):
        found = partitions(admin, topic)
        if not found or not all(p.leader > 0 and len(p.isrs) == len(p.replicas) for p in found.values()):
            return False
    return True


def cut_tails(data_dir, rng: random.Random) -> list[str]:
    """Cut each partition's active segment inside its last batch (where a torn write ends)."""
    cuts = []
    for partition_dir in sorted(data_dir.glob(f"{TOPIC}-*")):
        segments = sorted(partition_dir.glob("*.log"))
        if not segments:
            continue
        path = segments[-1]
        data = path.read_bytes()
        last, pos = None, 0
        while pos + BATCH_HEADER_SIZE <= len(data):
            info = parse_batch_header(data, pos)
            if info.batch_length <= 0 or pos + info.size > len(data):
                break
            last, pos = (pos, info), pos + info.size
        if last is None:
            continue
        start, info = last
        cut = start + rng.randrange(1, info.size)
        os.truncate(path, cut)
        cuts.append(f"{partition_dir.name} at byte {cut} (batch at offset {info.base_offset})")
    return cuts


class Chaos:
    def __init__(self, cluster: Cluster, admin: AdminClient, rng: random.Random) -> None:
        self.cluster, self.admin, self.rng = cluster, admin, rng

    def leader_of(self, partition: int) -> int:
        return wait_until(lambda: partitions(self.admin).get(partition) and partitions(self.admin)[partition].leader > 0
                          and partitions(self.admin)[partition].leader, HEAL_S, interval_s=0.1, message="a leader")

    def kill_leader(self) -> str:
        partition = self.rng.randrange(PARTITIONS)
        leader = self.leader_of(partition)
        self.cluster.brokers[leader].kill()
        wait_until(lambda: partitions(self.admin).get(partition) and partitions(self.admin)[partition].leader not in (leader, -1),
                   HEAL_S, interval_s=0.1, message=f"a new leader for partition {partition}")
        self.cluster.brokers[leader].restart()
        return f"broker {leader} (leader of partition {partition})"

    def kill_follower(self) -> str:
        partition = self.rng.randrange(PARTITIONS)
        leader = self.leader_of(partition)
        follower = self.rng.choice([b for b in self.cluster.brokers if b != leader])
        self.cluster.brokers[follower].kill()
        time.sleep(self.rng.uniform(0.2, 3.0))  # the fault's length: before or after its lease lapses
        self.cluster.brokers[follower].restart()
        return f"broker {follower} (follower of partition {partition})"

    def pause(self) -> str:
        broker = self.rng.choice(list(self.cluster.brokers))
        self.cluster.brokers[broker].pause()
        time.sleep(SESSION_TIMEOUT_MS / 1000 + self.rng.uniform(0.5, 2.0))  # the fault: past its lease
        self.cluster.brokers[broker].resume()
        return f"broker {broker}"

    def torn_tail(self) -> str:
        broker = self.rng.choice(list(self.cluster.brokers))
        self.cluster.brokers[broker].kill()
        cuts = cut_tails(self.cluster.brokers[broker].data_dir, self.rng)
        self.cluster.brokers[broker].restart()
        return f"broker {broker}: {'; '.join(cuts) or 'nothing to cut'}"

    def fsync_failure(self) -> str:
        broker_id = self.rng.choice(list(self.cluster.brokers))
        broker = self.cluster.brokers[broker_id]
        offline_before = broker.log_path.read_text(errors="replace").count("is OFFLINE")
        broker.stop()  # clean, so the next start runs no recovery (whose fsyncs would fail)
        broker.env = {"TIDELOG_FAULTS": "fsync.segment:EIO:0.2"}
        try:
            broker.restart()
            wait_until(lambda: broker.log_path.read_text(errors="replace").count("is OFFLINE") > offline_before, HEAL_S,
                       interval_s=0.1, message=f"broker {broker_id}'s log directory offline")
            wait_until(lambda: all(p.leader != broker_id and broker_id not in p.isrs for p in partitions(self.admin).values()),
                       HEAL_S, interval_s=0.1, message=f"leadership and ISRs leaving broker {broker_id}")
        finally:
            broker.kill()
            broker.env = {}
        broker.restart()
        return f"broker {broker_id}: log directory offline after an injected fsync EIO, then restarted"


ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "10"))


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, {"leader.imbalance.check.interval.seconds": "5", "offsets.commit.timeout.ms": "2000"}).start()
    yield cluster
    cluster.stop()  # also when the test fails or times out


@pytest.mark.timeout(120 + 30 * ROUNDS)  # a round takes 3-8 s; its waits are bounded by HEAL_S
def test_acknowledged_records_and_commits_survive_random_faults(cluster):
    rounds = ROUNDS
    seed = int(os.environ.get("CHAOS_SEED", str(random.randrange(1 << 32))))
    kinds = os.environ.get("CHAOS_FAULTS", ",".join(FAULTS)).split(",")
    assert set(kinds) <= set(FAULTS), f"CHAOS_FAULTS: known faults are {', '.join(FAULTS)}"
    rng = random.Random(seed)
    print(f"\nchaos: seed {seed}, {rounds} rounds (replay: CHAOS_SEED={seed} CHAOS_ROUNDS={rounds} "
          f"CHAOS_FAULTS={','.join(kinds)})")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    writer = reader = None
    faults = collections.Counter()
    try:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(10)
        wait_until(lambda: healed(cluster, admin), HEAL_S, interval_s=0.2, message="the topic led with whole ISRs")
        writer, reader = Writer(cluster.bootstrap), GroupReader(cluster.bootstrap)
        writer.start()
        reader.start()
        wait_until(lambda: writer.count() >= PROGRESS_RECORDS, HEAL_S, message="records acknowledged before the faults")
        # The schedule is drawn up front: each round's fault, and a seed for its targets and
        # lengths (which also depend on the cluster's state, e.g. who leads), so a replay
        # meets the same faults in the same order.
        schedule = [(rng.choice(kinds), rng.getrandbits(64)) for _ in range(rounds)]
        for round_number, (fault, round_seed) in enumerate(schedule, 1):
            chaos = Chaos(cluster, admin, random.Random(round_seed))
            started = time.monotonic()
            target = getattr(chaos, fault.replace("-", "_"))()
            faults[fault] += 1
            before = writer.count()
            wait_until(lambda: healed(cluster, admin), HEAL_S, interval_s=0.2, message=f"round {round_number}: healing")
            wait_until(lambda: writer.count() >= before + PROGRESS_RECORDS, HEAL_S,
                       message=f"round {round_number}: the producer making progress")
            print(f"round {round_number}: {fault} {target}; healed, {writer.count()} acknowledged "
                  f"({time.monotonic() - started:.1f} s)")
        writer.stop.set()
        writer.join(330)
        acked = writer.count()
        wait_until(lambda: reader.count() >= acked, 120, interval_s=0.2, message="the group reading every acknowledged record")
        reader.stop.set()
        reader.exited.wait(30)
    except BaseException:
        print(f"chaos: seed {seed}, failed after faults {dict(faults)}")
        if writer is not None and reader is not None:
            print(f"acknowledged per partition {[len(writer.acked[p]) for p in range(PARTITIONS)]}, read by the group "
                  f"{[len(reader.seen[p]) for p in range(PARTITIONS)]} (last offsets "
                  f"{[max(reader.seen[p], default=None) for p in range(PARTITIONS)]}); {reader.state()}")
        print(cluster.logs())
        raise
    finally:
        for thread in (writer, reader):
            if thread is not None:
                thread.stop.set()
        if reader is not None and reader.exited.wait(30):
            reader.consumer.close()
    check(cluster, writer, reader, seed, rounds, faults)


def read_partition(bootstrap: str, partition: int) -> dict[int, int]:
    """Every record of a partition up to its high watermark: offset -> n."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-checker", "enable.auto.commit": False})
    try:
        # A leader just elected answers OFFSET_NOT_AVAILABLE (retriable) until its high
        # watermark reaches its epoch's start, as Kafka does: ask again, as a client would.
        low, high = wait_until(lambda: _watermarks(consumer, partition), 60, interval_s=0.2,
                               message=f"partition {partition}'s watermarks")
        consumer.assign([TopicPartition(TOPIC, partition, low)])
        log: dict[int, int] = {}
        last = low - 1
        deadline = time.monotonic() + 120
        while last < high - 1 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            log[message.offset()] = int(message.value())
            last = max(last, message.offset())
        assert last >= high - 1, f"partition {partition}: read to {last} of [{low}, {high}) in 120 s"
        return log
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, partition: int) -> tuple[int, int] | None:
    try:
        return consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
    except KafkaException as e:
        if e.args[0].retriable() or e.args[0].code() in _MOVING:
            return None
        raise


# Answers a client asks again after (Kafka's retriable errors of a moving leadership).
_MOVING = {KafkaError.OFFSET_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}


def check(cluster: Cluster, writer: Writer, reader: GroupReader, seed: int, rounds: int, faults) -> None:
    assert not writer.failed, f"records not acknowledged: {writer.failed[:5]}"
    assert not reader.conflicts, reader.conflicts[:5]
    committed_consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": GROUP})
    try:
        committed = {tp.partition: tp.offset for tp in committed_consumer.committed(
            [TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)}
    finally:
        committed_consumer.close()
    lost = no_offset = 0
    for partition in range(PARTITIONS):
        log = read_partition(cluster.bootstrap, partition)
        values = [log[offset] for offset in sorted(log)]
        assert len(values) == len(set(values)), f"partition {partition}: duplicates"
        assert values == sorted(values), f"partition {partition}: out of order"
        # librdkafka acknowledges an idempotent producer's records without an offset (None) when a
        # later batch of the partition succeeded first (its implicit ack: the broker accepts a
        # sequence only after the ones before it): such a record must be in the log, at an offset
        # the client was never told.
        in_log = set(values)
        missing = [(offset, n) for offset, n in writer.acked[partition]
                   if (log.get(offset) != n if offset is not None else n not in in_log)]
        no_offset += sum(offset is None for offset, _ in writer.acked[partition])
        lost += len(missing)
        assert not missing, f"partition {partition}: acknowledged records lost or moved: {missing[:5]}"
        unseen = [offset for offset in sorted(log) if offset < committed[partition]
                  and reader.seen[partition].get(offset) != log[offset]]
        assert not unseen, f"partition {partition}: committed {committed[partition]} past records the group did not see: {unseen[:5]}"
    acked = writer.count()
    print(f"chaos: seed {seed}, rounds {rounds}, faults {dict(sorted(faults.items()))}, records acknowledged {acked}, "
          f"consumed by the group {reader.count()}, commits refused {dict(reader.commit_errors)}, "
          f"acknowledged without an offset {no_offset}, lost: {lost}")

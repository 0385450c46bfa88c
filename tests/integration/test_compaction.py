"""Log compaction through real clients: the latest value per key, tombstones, offsets and order,
idempotent producers across a cleaning, compact,delete, keyless records refused, and the
configs that drive it (confluent-kafka, kafka-python, aiokafka)."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
import requests
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic, ResourceType
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KPTopicPartition
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families

from tests.brokerproc import wait_until
from tests.integration.clients import CLIENTS, produce

TIMEOUT_S = 20
CLEANER_SETTINGS = {"log.cleaner.backoff.ms": "100"}
COMPACTED = {"cleanup.policy": "compact", "segment.bytes": "2000", "min.cleanable.dirty.ratio": "0.01"}


@pytest.fixture
def broker(broker_factory):
    return broker_factory(CLEANER_SETTINGS)


def create(broker, name: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=configs)], request_timeout=TIMEOUT_S)[name].result(TIMEOUT_S)


def metric(broker, name: str, **labels) -> float | None:
    text = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def wait_until_cleaned(broker, topic: str) -> None:
    """Until the cleaner has cleaned everything it may of ``topic`` (written to beforehand)."""
    wait_until(lambda: metric(broker, "tidelog_log_cleaner_dirty_ratio", topic=topic, partition="0") == 0,
               timeout_s=TIMEOUT_S, interval_s=0.1, message=f"the log cleaner to clean {topic}")
    assert metric(broker, "tidelog_log_cleaner_runs_total", result="cleaned") >= 1


def read_to(client: str, bootstrap: str, topic: str, last_offset: int, timeout_s: float = TIMEOUT_S) -> list[tuple]:
    """(offset, key, value) of every record from the log start through ``last_offset``, read with ``client``."""
    deadline = time.monotonic() + timeout_s
    out: list[tuple] = []
    if client == "confluent":
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-read", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition(topic, 0, 0)])
        try:
            while (not out or out[-1][0] < last_offset) and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    out.append((msg.offset(), msg.key(), msg.value()))
        finally:
            consumer.close()
    elif client == "kafka-python":
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest")
        consumer.assign([KPTopicPartition(topic, 0)])
        consumer.seek(KPTopicPartition(topic, 0), 0)
        try:
            while (not out or out[-1][0] < last_offset) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    out += [(r.offset, r.key, r.value) for r in records]
        finally:
            consumer.close()
    else:
        out = asyncio.run(_read_aiokafka(bootstrap, topic, last_offset, deadline))
    assert out and out[-1][0] >= last_offset, f"{client} read up to {out[-1][0] if out else None}, not {last_offset}"
    return out


async def _read_aiokafka(bootstrap: str, topic: str, last_offset: int, deadline: float) -> list[tuple]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AIOTopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list[tuple] = []
    try:
        consumer.assign([AIOTopicPartition(topic, 0)])
        consumer.seek(AIOTopicPartition(topic, 0), 0)
        while (not out or out[-1][0] < last_offset) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [(r.offset, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return out


def produced_log(client: str, bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]],
                 per_call: int = 20, timestamp_ms: int | None = None) -> dict[int, tuple]:
    """Produce (key, value) records, ``per_call`` at a time (so that batches are small and
    segments roll); return offset -> (key, value)."""
    produced = {}
    for start in range(0, len(records), per_call):
        chunk = records[start: start + per_call]
        offsets = produce(client, bootstrap, topic, [(k, v, [], timestamp_ms) for k, v in chunk])
        produced.update(zip(offsets, chunk))
    return produced


def assert_valid_compaction(read: list[tuple], produced: dict[int, tuple]) -> None:
    """What a consumer reads is the produced log with superseded records taken out: each record
    where it was produced, in order, and every key's latest value still there."""
    offsets = [offset for offset, _, _ in read]
    assert offsets == sorted(set(offsets)), "offsets in order, each once"
    for offset, key, value in read:
        assert produced[offset] == (key, value), f"offset {offset} changed"
    latest = {}
    for offset in sorted(produced):
        latest[produced[offset][0]] = offset
    assert set(latest.values()) <= set(offsets), "a key's latest record is gone"


@pytest.mark.parametrize("producer", CLIENTS)
def test_latest_value_per_key_with_offsets_and_order_kept(broker, producer):
    topic = f"compacted-{producer}"
    create(broker, topic, COMPACTED)
    produced = produced_log(producer, broker.bootstrap, topic, [(b"key-%d" % (i % 7), b"value-%d-" % i + b"v" * 60) for i in range(300)])
    wait_until_cleaned(broker, topic)
    last = max(produced)
    for consumer in CLIENTS:
        read = read_to(consumer, broker.bootstrap, topic, last)
        assert_valid_compaction(read, produced)
        assert len(read) < 150, f"{consumer} read {len(read)} of 300: nothing was compacted"


def test_tombstones_are_visible_within_delete_retention_and_gone_after(broker):
    topic = "tombstones"
    # The tombstone must still be there when the first read comes after the cleaning: 3 s was
    # shorter than a kafka-python read takes at load 20 (failed once so); 10 s is not.
    create(broker, topic, {**COMPACTED, "delete.retention.ms": "10000"})
    produced = produced_log("confluent", broker.bootstrap, topic,
                            [(b"doomed", b"alive"), (b"doomed", None)] + [(b"filler-%d" % (i % 3), b"x" * 40) for i in range(60)])
    wait_until_cleaned(broker, topic)
    read = read_to("kafka-python", broker.bootstrap, topic, max(produced))
    assert (1, b"doomed", None) in read and (0, b"doomed", b"alive") not in read  # the tombstone shows the delete
    assert_valid_compaction(read, produced)
    # the cleaner comes back for the tombstone once its delete horizon (10 s after that cleaning) passed
    wait_until(lambda: not any(key == b"doomed" for _, key, _ in read_to("aiokafka", broker.bootstrap, topic, max(produced))),
               timeout_s=TIMEOUT_S, interval_s=0.5, message="the tombstone to go")
    assert not any(key == b"doomed" for _, key, _ in read_to("confluent", broker.bootstrap, topic, max(produced)))


def test_compact_delete_applies_retention_and_compaction(broker):
    topic = "compact-delete"
    create(broker, topic, {**COMPACTED, "cleanup.policy": "compact,delete", "retention.ms": "3600000"})
    three_hours_ago = int(time.time() * 1000) - 3 * 3600_000
    # Old records with keys of their own, which compaction alone would keep; each produce call's
    # batch outgrows segment.bytes, so old and new records never share a segment (nor a cleaned group).
    produced = produced_log("confluent", broker.bootstrap, topic, [(b"old-%d" % i, b"o" * 120) for i in range(80)],
                            timestamp_ms=three_hours_ago)
    produced.update(produced_log("confluent", broker.bootstrap, topic, [(b"new-%d" % (i % 5), b"n%d-" % i + b"n" * 120)
                                                                         for i in range(160)]))
    wait_until(lambda: read_to("kafka-python", broker.bootstrap, topic, max(produced))[0][1].startswith(b"new"),
               timeout_s=TIMEOUT_S, interval_s=0.5, message="retention to delete the old segments")
    wait_until_cleaned(broker, topic)
    read = read_to("confluent", broker.bootstrap, topic, max(produced))
    assert not any(key.startswith(b"old") for _, key, _ in read)
    offsets_read = [offset for offset, _, _ in read]
    assert all(produced[offset] == (key, value) for offset, key, value in read) and offsets_read == sorted(offsets_read)
    assert len(read) < 120


def test_idempotent_producer_state_survives_a_cleaning_and_a_crash(broker):
    """The batch holding a producer's last sequence stays (emptied) when its records are
    superseded; after a crash the state rebuilt from the log lets the producer go on."""
    topic = "idempotent"
    create(broker, topic, COMPACTED)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 0,
                         "acks": "all"})
    errors = []

    def send(key: bytes, value: bytes) -> None:
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=lambda err, msg: err and errors.append(err))
        assert producer.flush(TIMEOUT_S) == 0

    for i in range(5):
        send(b"unique-%d" % i, b"kept")
    send(b"shared", b"superseded")  # the idempotent producer's last batch ...
    produce("kafka-python", broker.bootstrap, topic, [(b"tail", b"t", [], None)])  # (not its segment's last batch)
    produced_log("kafka-python", broker.bootstrap, topic, [(b"shared", b"x" * 60)] * 60)  # ... superseded
    wait_until_cleaned(broker, topic)
    broker.kill()
    broker.restart()
    send(b"after-crash", b"accepted")  # sequence 6 follows 5, which only the emptied batch remembers
    assert not errors, errors
    # librdkafka would recover from OUT_OF_ORDER_SEQUENCE_NUMBER with a new epoch: the broker's log tells
    assert "expected" not in broker.log().split("listening on")[-1], "the rebuilt state lost the last sequence"
    producer.flush(TIMEOUT_S)
    read = read_to("confluent", broker.bootstrap, topic, 67)
    assert read[-1][1:] == (b"after-crash", b"accepted")
    assert [key for _, key, _ in read[:5]] == [b"unique-%d" % i for i in range(5)]


def test_records_without_a_key_are_refused_on_compacted_topics(broker):
    topic = "keyed-only"
    create(broker, topic, COMPACTED)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "retries": 0})
    reports = []
    producer.produce(topic, value=b"no key", partition=0, on_delivery=lambda err, msg: reports.append(err))
    producer.flush(TIMEOUT_S)
    assert reports[0] is not None and reports[0].name() == "INVALID_RECORD"
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0)
    with pytest.raises(Exception) as info:
        kp.send(topic, value=b"no key", partition=0).get(timeout=TIMEOUT_S)
    assert "InvalidRecord" in type(info.value).__name__ or "INVALID_RECORD" in str(info.value).upper()
    kp.close(5)
    assert produce("aiokafka", broker.bootstrap, topic, [(b"k", b"keyed", [], None)]) == [0]
    assert "cannot accept message without key" in broker.log()


def test_every_kafka_4_topic_config_is_described_with_its_default_and_synonyms(broker):
    from tests.unit.test_topic_configs import KAFKA_4_TOPIC_CONFIGS

    create(broker, "described", {"file.delete.delay.ms": "1000", "segment.jitter.ms": "500"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, "described")
    configs = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    assert KAFKA_4_TOPIC_CONFIGS <= set(configs)
    delay = configs["file.delete.delay.ms"]
    assert (delay.value, delay.source) == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert [(s.name, s.value) for s in delay.synonyms.values()] == [("file.delete.delay.ms", "1000"),
                                                                     ("log.segment.delete.delay.ms", "60000")]
    ratio = configs["min.cleanable.dirty.ratio"]
    assert (ratio.value, ratio.source) == ("0.5", ConfigSource.DEFAULT_CONFIG.value)
    assert [s.name for s in ratio.synonyms.values()] == ["log.cleaner.min.cleanable.ratio"]
    assert configs["remote.storage.enable"].value == "false"
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        result = kp.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "described")], include_synonyms=True,
                                     config_filter="all")
        entries = result["topic"]["described"]
        assert KAFKA_4_TOPIC_CONFIGS <= set(entries)
        assert (entries["segment.jitter.ms"]["value"], entries["segment.jitter.ms"]["config_type"]) == ("500", "LONG")
        assert entries["min.cleanable.dirty.ratio"]["config_type"] == "DOUBLE"
        assert [s["name"] for s in entries["delete.retention.ms"]["synonyms"]] == ["log.cleaner.delete.retention.ms"]
        assert entries["leader.replication.throttled.replicas"]["config_source"] == "DEFAULT_CONFIG"
    finally:
        kp.close()


def test_cleanup_policy_may_be_set_empty_and_tiered_storage_is_refused(broker):
    create(broker, "keep-all", {})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, "keep-all", incremental_configs=[
        ConfigEntry("cleanup.policy", "", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("file.delete.delay.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    configs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "keep-all")], request_timeout=TIMEOUT_S)
    described = list(configs.values())[0].result(TIMEOUT_S)
    assert described["cleanup.policy"].value == "" and described["file.delete.delay.ms"].value == "0"
    refused = ConfigResource(ResourceType.TOPIC, "keep-all", incremental_configs=[
        ConfigEntry("remote.storage.enable", "true", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as info:
        admin.incremental_alter_configs([refused], request_timeout=TIMEOUT_S)[refused].result(TIMEOUT_S)
    assert info.value.args[0].name() == "INVALID_CONFIG"


def test_the_offsets_topic_stays_bounded_under_a_commit_storm(broker_factory):
    segment_bytes = 65536
    broker = broker_factory({**CLEANER_SETTINGS, "offsets.topic.segment.bytes": str(segment_bytes)})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("stormy", 40, 1)], request_timeout=TIMEOUT_S)["stormy"].result(TIMEOUT_S)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "storm", "enable.auto.commit": False})
    commits = 300
    for i in range(commits):  # 12,000 records, about 1 MB, into __consumer_offsets
        consumer.commit(offsets=[TopicPartition("stormy", p, i + 1) for p in range(40)], asynchronous=False)
    offsets_dir = broker.data_dir / "__consumer_offsets-0"

    def size() -> int:
        return sum(path.stat().st_size for path in offsets_dir.glob("*.log"))

    wait_until_cleaned(broker, "__consumer_offsets")
    assert size() < 3 * segment_bytes, f"{size()} bytes for 40 committed offsets"
    consumer.close()
    broker.stop()
    broker.restart()
    loaded = [line for line in broker.log().splitlines() if "records from __consumer_offsets" in line][-1]
    replayed = int(loaded.split(" groups and ")[1].split()[0])
    assert replayed < commits * 40 / 4, loaded  # a start replays the compacted log, not every commit
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "storm"})
    committed = check.committed([TopicPartition("stormy", p) for p in range(40)], timeout=TIMEOUT_S)
    assert {tp.offset for tp in committed} == {commits}
    check.close()


def logged_at(log: str, text: str) -> float:
    """When the first line of ``log`` with ``text`` was written (its asctime, in seconds)."""
    line = next(line for line in log.splitlines() if text in line)
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_a_clean_shutdown_abandons_a_cleaning_in_progress(broker_factory):
    broker = broker_factory({**CLEANER_SETTINGS, "log.cleaner.io.max.bytes.per.second": "20000"})
    topic = "slow-cleaning"
    create(broker, topic, {**COMPACTED, "cleanup.policy": "delete"})
    produced = produced_log("confluent", broker.bootstrap, topic, [(b"key-%d" % (i % 50), b"v" * 200) for i in range(600)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # now compact it all in one cleaning
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    wait_until(lambda: f"{topic}-0: cleaning offsets" in broker.log(), timeout_s=TIMEOUT_S, message="a cleaning")
    started = time.monotonic()  # ~130 KB to read at 20 KB/s: the cleaning would last several seconds
    assert broker.stop() == 0
    assert time.monotonic() - started < 15, "the broker process did not exit promptly"
    log = broker.log()
    abandoned = f"{topic}-0: cleaning abandoned: the broker is stopping"  # logged as the cleaner's close begins
    assert abandoned in log and "Traceback" not in log
    # The broker's shutdown from its cleaner's close on, from its log (the wall time above adds the
    # interpreter's exit, over a second at load 10): it waits neither for the throttled cleaning nor
    # for a cleaner worker still starting (a spawned interpreter importing Tidelog, 1-3.5 s at load).
    # Not from "shutting down:": the steps before the cleaner's (listeners, groups, share groups)
    # took 0.29 of 0.50 s at load 17, and have nothing to do with the cleaner.
    assert logged_at(log, "shutdown complete") - logged_at(log, abandoned) < 0.75, \
        "the shutdown waited for the throttled cleaning or a starting cleaner worker"
    assert not list((broker.data_dir / f"{topic}-0").glob("*.cleaned"))
    broker.restart()
    assert_valid_compaction(read_to("kafka-python", broker.bootstrap, topic, max(produced)), produced)


def test_describe_shows_the_log_cleaners_state(broker):
    """`tidelog topics describe --http` and the HTTP API's topic JSON show where the cleaner got to
    (last cleaned offset), the dirty ratio and the cleanable bytes of a compacted topic's partitions;
    null for a topic that is not compacted. A bad --http URL is one line naming it."""
    from tests.integration.test_cli import fails, ok, ok_json

    create(broker, "cleaned", COMPACTED)
    create(broker, "plain", {})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for batch in range(10):  # a flush each: batches over several segments
        for i in range(30):
            producer.produce("cleaned", key=b"k%d" % (i % 5), value=b"v%d-%d" % (batch, i), partition=0)
        assert producer.flush(TIMEOUT_S) == 0
    http = f"http://127.0.0.1:{broker.metrics_port}"

    def cleaner() -> dict:
        return requests.get(f"{http}/api/v1/topics/cleaned", timeout=10).json()["partitions"][0]["cleaner"]

    wait_until(lambda: cleaner()["runs"] >= 1 and cleaner()["dirty_ratio"] == 0, timeout_s=TIMEOUT_S, interval_s=0.1,
               message="a cleaning of the whole cleanable section")
    state = cleaner()
    assert state["replica"] == 1 and state["runs"] >= 1 and state["last_error"] is None
    assert 0 < state["last_cleaned_offset"] <= state["first_uncleanable_offset"] <= 300
    assert state["dirty_ratio"] == 0 and state["cleanable_bytes"] == 0 and state["min_cleanable_dirty_ratio"] == 0.01
    assert requests.get(f"{http}/api/v1/topics/plain", timeout=10).json()["partitions"][0]["cleaner"] is None

    described = ok_json("topics", "describe", "cleaned", "--http", http, broker=broker)
    assert described["compacted"] is True
    cli_state = described["partitions"][0]["cleaner"]
    assert cli_state["last_cleaned_offset"] == state["last_cleaned_offset"] and cli_state["dirty_ratio"] == 0
    assert ok_json("topics", "describe", "plain", "--http", http, broker=broker)["partitions"][0]["cleaner"] is None
    plain = ok("topics", "describe", "cleaned", "--http", http, broker=broker)
    assert "LAST_CLEANED_OFFSET" in plain and f"\t{state['last_cleaned_offset']}\t" in plain
    assert "--http" in fails("topics", "describe", "cleaned", "--http", "http://127.0.0.1:1", broker=broker)


def peak_rss_mib(pid: int) -> float:
    """VmHWM, the high-water mark of the process's resident memory since it started."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def test_the_broker_and_its_cleaner_worker_start_small_in_any_working_directory(broker_factory, tmp_path, monkeypatch):
    """A broker started where nothing was cached before (a fresh working directory, as a service
    manager or the benchmarks start it) peaks near its idle size, the log cleaner on and its worker
    process after a cleaning too. (kio registers a hypothesis strategy per type when hypothesis is
    importable; in a directory without hypothesis's `.hypothesis` cache that built its unicode
    tables at every start: ~1.3 s of CPU and a 238 MiB peak, for the broker and for each worker.)"""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    broker = broker_factory(CLEANER_SETTINGS)
    assert peak_rss_mib(broker.proc.pid) < 120, "the broker's start peaked far above its idle size"
    topic = "compacted-small"
    create(broker, topic, COMPACTED)
    produced_log("confluent", broker.bootstrap, topic, [(b"key-%d" % (i % 7), b"v" * 60) for i in range(300)])
    wait_until_cleaned(broker, topic)
    workers = [int(pid) for pid in open(f"/proc/{broker.proc.pid}/task/{broker.proc.pid}/children").read().split()]
    assert workers, "no cleaner worker process"
    peaks = {pid: peak_rss_mib(pid) for pid in workers}
    assert peak_rss_mib(broker.proc.pid) < 120 and max(peaks.values()) < 120, (peak_rss_mib(broker.proc.pid), peaks)
    assert not (workdir / ".hypothesis").exists(), "a broker process wrote hypothesis's cache into its working directory"

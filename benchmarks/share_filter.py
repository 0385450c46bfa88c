"""What a share group's filter (``tidelog.filter``, issue 14) costs the broker: the same log taken
by a share group without a filter and with one, the broker's CPU seconds per log record compared.

One broker, one topic of one partition, ``--records`` records of ``--record-bytes`` bytes, each
with a header ``type`` cycling over four values (the worst case for the share-partition: every
record of a matching type is alone between filtered-out ones) and, with ``--trace``, a unique
``traceparent`` header. Then, for each filter, a new share group starting at the earliest record
takes the whole log with one confluent-kafka ShareConsumer (implicit acknowledgement) until it
has every record the filter lets through; the broker's CPU seconds over that phase divided by
the log's records is the cost per record (also split into user and system time, and the CPU of the
broker's threads other than the event loop's: executors' fsyncs and checkpoints). The filters
(``--filters``): ``header`` and ``optional-header`` take the one-header path, ``timestamp`` and
``key`` the CEL subset judged a batch at a time (queues/filters.py), ``outside-subset`` CEL itself,
all keeping the same records. Before it, not measured, the same filter in another
group takes a 2,000-record topic: the broker's first filter loads the CEL package and its first
evaluations are slow (about a second, once per process: not a cost per record).
``--profile DIR`` samples the broker with py-spy during each phase (raw stacks and a summary).

``--in-process`` measures the share manager alone instead (``manager_cost``: no broker, no
network, no client): the same log in batches of 500, acquired 500 records at a time the way
ShareFetch does (its response encoded too) and every acquired range accepted, the process's CPU
seconds per log record, with what was loaded before frozen out of the garbage collector's
reach as the broker's (gc.freeze once it serves). benchmarks/micro.py times it too.
``--tidelog-ref REF`` runs that commit's Tidelog instead of the working tree (the broker, or the
share manager in a process of its own): old/new A/B runs.

    python -m benchmarks.share_filter --records 100000
    python -m benchmarks.share_filter --records 100000 --in-process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import tempfile
import time
import uuid
from bisect import bisect_right
from itertools import islice, repeat, starmap
from operator import itemgetter
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from benchmarks.peers import Tidelog

TYPES = (b"order", b"refund", b"audit", b"ping")
WARM_UP_RECORDS = 2000
FILTERS = {
    "unfiltered": "",
    "header": 'headers["type"] == b"order"',
    "optional-header": '"type" in headers && headers["type"] == b"order"',
    # Not the one-header path: a filter reading the timestamp, or the key (the records have none),
    # keeping the same records: in the subset queues/filters.py judges a batch at a time.
    "timestamp": 'timestamp > 0 && headers["type"] == b"order"',
    "key": 'key == null && headers["type"] == b"order"',
    # Outside that subset (an arithmetic operator): CEL a distinct (header, timestamp) of a batch.
    "outside-subset": 'timestamp % 1 == 0 && headers["type"] == b"order"',
}


def produce(bootstrap: str, topic: str, records: int, record_bytes: int, trace: bool) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 2000,
                            "compression.type": "none"})
    value = b"x" * record_bytes
    for n in range(records):
        while True:
            try:
                headers = {"type": TYPES[n % len(TYPES)]}
                if trace:
                    headers["traceparent"] = b"00-%032x-%016x-01" % (n, n)
                producer.produce(topic, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("produce did not finish")


def configure(bootstrap: str, expression: str) -> str:
    """A new share group starting at the earliest record, with the filter: its name. (Outside the
    measured phase: the broker's first filter loads the CEL package, ~0.6 s once per process.)"""
    group = f"bench-filter-{uuid.uuid4().hex[:8]}"
    configs = [ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)]
    if expression:
        configs.append(ConfigEntry("tidelog.filter", expression, incremental_operation=AlterConfigOpType.SET))
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=configs)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.incremental_alter_configs([resource])[resource].result(30)
    return group


def thread_cpu(pid: int) -> dict[int, tuple[int, int]]:
    """(user, system) clock ticks of each thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(task.name)] = (int(fields[11]), int(fields[12]))
    return out


def cpu_split(pid: int, before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict:
    """The broker's CPU seconds between two ``thread_cpu`` readings: user and system time, and what
    threads other than the event loop's (the main thread: the executors' fsyncs and checkpoints) used."""
    from benchmarks.procs import CLOCK_TICKS

    used = {tid: (user - before.get(tid, (0, 0))[0], system - before.get(tid, (0, 0))[1])
            for tid, (user, system) in after.items()}
    return {"broker_user_s": round(sum(u for u, _ in used.values()) / CLOCK_TICKS, 2),
            "broker_system_s": round(sum(s for _, s in used.values()) / CLOCK_TICKS, 2),
            "broker_other_threads_s": round(sum(u + s for tid, (u, s) in used.items() if tid != pid) / CLOCK_TICKS, 2)}


def consume(bootstrap: str, topic: str, group: str, expected: int, timeout_s: float) -> dict:
    consumer = ck.ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, "error_cb": lambda err: None})
    received = 0
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([topic])
        while received < expected and time.monotonic() < deadline:
            received += sum(1 for m in consumer.poll(0.1) if m.error() is None)
    finally:
        consumer.close()
    return {"received": received, "expected": expected}


_ACK_BATCH = struct.Struct(">qqbbb")  # first, last, one type (compact array of 1), ACCEPT, no tagged fields


def _columns(acquired) -> tuple[list[int], list[int]]:
    """The first and last offsets of the acquired ranges (read from the columns where the share
    manager gives them so: the consumer's part makes no object a range for either side)."""
    if hasattr(acquired, "firsts"):
        return acquired.firsts, acquired.lasts
    return list(map(itemgetter(0), acquired)), list(map(itemgetter(1), acquired))


def _acknowledge_request(topic: uuid.UUID, acquired) -> bytes:
    """A ShareAcknowledge v1 request body accepting every acquired range, as a consumer sends it."""
    head = b"\x06bench\x02m" + struct.pack(">i", 1) + b"\x02" + topic.bytes + b"\x02" + struct.pack(">i", 0)
    batches = b"".join(starmap(_ACK_BATCH.pack, zip(*_columns(acquired), repeat(2), repeat(1), repeat(0))))
    count, varint = len(acquired) + 1, bytearray()
    while count >= 0x80:  # (the batches' compact array length, an unsigned varint)
        varint.append(count & 0x7F | 0x80)
        count >>= 7
    varint.append(count)
    return head + varint + batches + b"\x00\x00\x00"


class _Log:
    """One partition's log in memory, read as PartitionLog.read reads (whole batches)."""

    def __init__(self, batches: list[tuple[int, int, bytes]]) -> None:
        self.batches = batches  # (base offset, last offset, batch), in offset order
        self.lasts = [last for _, last, _ in batches]

    def log_start_offset(self, topic_id, partition):
        return 0

    def high_watermark(self, topic_id, partition):
        return self.batches[-1][1] + 1 if self.batches else 0

    last_stable_offset = high_watermark

    def leader_epoch(self, topic_id, partition):
        return -1

    def aborted_transactions(self, topic_id, partition, fetch_offset, upper_bound_offset):
        return ()

    def offset_for_timestamp(self, topic_id, partition, timestamp_ms):
        return None

    def read(self, topic_id, partition, offset, max_bytes, max_offset):
        out = bytearray()
        # (from the batch holding offset, found by a binary search: a walk from the first batch
        # at every read was a fifth of the in-process samples, a cost the broker's log has not)
        for base, last, data in islice(self.batches, bisect_right(self.lasts, offset - 1), None):
            if base >= max_offset:
                break
            if out and len(out) + len(data) > max_bytes:
                break
            out += data
        return bytes(out)


def _kio_response(topic, result) -> bytes:
    import datetime

    from tidelog.protocol.apis import build, response_module
    from tidelog.protocol.errors import ErrorCode
    from tidelog.server.connection import encode_response

    module = response_module(78, 2)
    partition = build(module.PartitionData, partition_index=0, error_code=ErrorCode.none, error_message=None,
                      acknowledge_error_code=0, acknowledge_error_message=None,
                      current_leader=build(module.LeaderIdAndEpoch, leader_id=-1, leader_epoch=-1),
                      records=b"".join(result.records), acquired_records=tuple(
                          module.AcquiredRecords(first_offset=a.first_offset, last_offset=a.last_offset,
                                                 delivery_count=a.delivery_count) for a in result.acquired))
    return encode_response(build(
        module.ShareFetchResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, error_message=None,
        acquisition_lock_timeout=datetime.timedelta(0), node_endpoints=(),
        responses=(build(module.ShareFetchableTopicResponse, topic_id=topic, partitions=(partition,)),)))


def manager_cost(records: int = 100_000, expression: str = "", *, record_bytes: int = 100,
                 batch_records: int = 500, max_records: int = 500, profile: Path | None = None,
                 stats: dict | None = None) -> float:
    """CPU microseconds per log record of a share manager taking the whole log (see the module
    docstring); ``profile``: a cProfile dump of the consume there; ``stats`` gets the garbage
    collector's share (``gc_us_per_log_record``, wall time inside collections)."""
    import cProfile
    import gc
    import uuid as uuid_

    from tidelog.config import BrokerConfig
    from tidelog.protocol.records import build_batch
    try:
        from tidelog.protocol.share_fetch import SharePartitionData, encode_share_fetch_response
    except ImportError:  # an older src/ (--src): its response through kio, as its handler did
        encode_share_fetch_response = SharePartitionData = None
    try:
        from tidelog.protocol.share_requests import decode_share_acknowledge_request as decode_acknowledge
    except ImportError:  # an older src/: the acknowledgements as the handler's kio decoder gave them
        decode_acknowledge = None
    from tidelog.queues.acks import AckBatch, AcknowledgeType
    from tidelog.queues.manager import ShareConfig, ShareManager
    from tidelog.queues.queue_features import QueueFeatures
    from tidelog.queues.state_records import ShareStateKey
    from tidelog.queues.state_store import ShareStateStore

    topic = uuid_.UUID(int=5)
    key = ShareStateKey("bench", topic, 0)
    value = b"x" * record_bytes
    batches = []
    for base in range(0, records, batch_records):
        count = min(batch_records, records - base)
        batches.append((base, base + count - 1, build_batch(
            [(None, value, [("type", TYPES[(base + i) % len(TYPES)])]) for i in range(count)],
            base_offset=base, timestamp_ms=1_700_000_000_000)))
    group_configs = {"share.auto.offset.reset": "earliest"}
    if expression:
        group_configs["tidelog.filter"] = expression
    broker_config = BrokerConfig.load(env={})
    state_log: list = []

    async def append(state_records):
        state_log.extend(state_records)
        return len(state_log) - len(state_records)

    async def consume() -> int:
        store = ShareStateStore(append, lambda: 1_700_000_000_000)
        features = QueueFeatures(broker_config, lambda k: ({}, group_configs))
        # (the read's bound by the look-ahead, as the broker's, where the code measured has it)
        bound = {"lookahead": features.lookahead_records} if hasattr(features, "lookahead_records") else {}
        manager = ShareManager(store, _Log(batches), lambda g: ShareConfig.resolve(broker_config, group_configs),
                               policies=features.policy, clock_ms=lambda: 1_700_000_000_000, **bound)
        received = 0
        try:
            while True:
                result = await manager.acquire(key, "m", max_records=max_records, max_bytes=1 << 20)
                if not result.acquired:
                    return received
                if encode_share_fetch_response is not None:
                    encode_share_fetch_response([(topic, [SharePartitionData(0, records=result.records,
                                                                             acquired=result.acquired)])])
                else:
                    _kio_response(topic, result)
                client_started = time.process_time()  # (the consumer's part: not the share manager's)
                firsts, lasts = _columns(result.acquired)
                received += sum(lasts) - sum(firsts) + len(firsts)
                if decode_acknowledge is None:
                    acks = [AckBatch(a.first_offset, a.last_offset, (AcknowledgeType.ACCEPT,))
                            for a in result.acquired]
                else:
                    request = _acknowledge_request(topic, result.acquired)
                client[0] += time.process_time() - client_started
                if decode_acknowledge is not None:  # read as the broker reads a consumer's ShareAcknowledge
                    acks = decode_acknowledge(request, 0, 1).topics[0].partitions[0].acknowledgement_batches
                await manager.acknowledge(key, "m", acks)
        finally:
            await manager.close()

    collecting = [0.0, 0.0]  # started at, total
    client = [0.0]  # CPU seconds of the consumer's part (counting, encoding its acknowledgements)

    def on_gc(phase, info):
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    if records > 4000:  # first the lazy imports and kio's generated code, outside the measurement
        manager_cost(2000, expression, record_bytes=record_bytes, batch_records=batch_records, max_records=max_records)
    profiler = cProfile.Profile() if profile else None
    gc.collect()
    gc.freeze()  # as the broker does once it serves (what was loaded is not walked by every full collection)
    gc.callbacks.append(on_gc)
    start = time.process_time()
    try:
        if profiler:
            profiler.enable()
        received = asyncio.run(consume())
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        seconds = time.process_time() - start - client[0]
    finally:
        gc.callbacks.remove(on_gc)
        gc.unfreeze()
    if stats is not None:
        stats["gc_us_per_log_record"] = round(collecting[1] * 1e6 / records, 2)
    expected = records if not expression else len(range(0, records, len(TYPES)))
    if received != expected:
        raise RuntimeError(f"received {received} records, expected {expected}")
    return seconds * 1e6 / records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--filters", default=",".join(FILTERS))
    parser.add_argument("--trace", action="store_true", help="a traceparent header on every record too (unique)")
    parser.add_argument("--durability", default="throughput", help="log.durability.profile of the broker")
    parser.add_argument("--profile", type=Path, help="directory for py-spy's samples of each phase")
    parser.add_argument("--src", type=Path, help="run the broker from this src/ (a worktree of another commit, "
                                                 "to compare before and after on the same machine)")
    parser.add_argument("--tidelog-ref", help="run Tidelog from this commit's src/ (git archive, its C extension "
                                              "built) instead of the working tree: old/new A/B runs")
    parser.add_argument("--in-process", action="store_true", help="the share manager alone (manager_cost)")
    args = parser.parse_args(argv)
    if args.records > 1_000_000:
        parser.error("--records: at most 1,000,000 (a bounded load)")
    if args.tidelog_ref:
        with tempfile.TemporaryDirectory(prefix="tidelog-share-filter-ref-") as into:
            Tidelog.use_ref(args.tidelog_ref, Path(into))
            if not args.in_process:
                args.src = Tidelog.src_dir
                return _run(args)
            # The share manager of that commit: this module in a process whose tidelog is its src/.
            import os
            import subprocess
            import sys
            rest, given = [], list(argv if argv is not None else sys.argv[1:])
            while given:
                arg = given.pop(0)
                if arg == "--tidelog-ref":
                    given.pop(0)
                elif not arg.startswith("--tidelog-ref="):
                    rest.append(arg)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Tidelog.src_dir),
                                                                  str(Path(__file__).resolve().parent.parent)])}
            subprocess.run([sys.executable, "-m", "benchmarks.share_filter", *rest], env=env, check=True)
            return
    _run(args)


def _run(args) -> None:
    if args.in_process:
        for name in args.filters.split(","):
            profile = args.profile / f"{name}.pstats" if args.profile else None
            if profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            stats: dict = {}
            us = manager_cost(args.records, FILTERS[name], record_bytes=args.record_bytes, profile=profile,
                              stats=stats)
            print(json.dumps({"filter": name, "in_process_us_per_log_record": round(us, 2), **stats}), flush=True)
        return
    target = Tidelog(args.durability)
    if args.src:
        target.src_dir = args.src.resolve()
    with tempfile.TemporaryDirectory(prefix="tidelog-share-filter-") as workdir:
        server = target.start(Path(workdir))
        try:
            bootstrap = target.bootstrap
            topic = "filtered"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
            produce(bootstrap, topic, args.records, args.record_bytes, args.trace)
            admin.create_topics([NewTopic("warm-up", 1, 1)])["warm-up"].result(30)
            produce(bootstrap, "warm-up", WARM_UP_RECORDS, args.record_bytes, args.trace)
            rows = []
            for name in args.filters.split(","):
                expression = FILTERS[name]
                expected = args.records if not expression else len(range(0, args.records, len(TYPES)))
                # Not measured: the broker's first filter loads the CEL package (~0.6 s) and its first
                # evaluations are slow (Python's ABC caches, ~0.4 s): once per process, not per record.
                consume(bootstrap, "warm-up", configure(bootstrap, expression),
                        WARM_UP_RECORDS if not expression else len(range(0, WARM_UP_RECORDS, len(TYPES))), args.timeout)
                group = configure(bootstrap, expression)

                def phase():
                    return consume(bootstrap, topic, group, expected, args.timeout)

                cpu0 = server.cpu_seconds()
                threads0 = thread_cpu(server.pid)
                start = time.perf_counter()
                if args.profile:
                    from benchmarks import profile
                    args.profile.mkdir(parents=True, exist_ok=True)
                    raw = args.profile / f"{name}.raw"
                    seconds, result = profile.record(server.pid, raw, phase)
                    (args.profile / f"{name}.json").write_text(json.dumps(profile.summarise(raw, seconds, 25), indent=1))
                else:
                    result = phase()
                seconds = time.perf_counter() - start
                cpu = server.cpu_seconds() - cpu0
                rows.append({"filter": name, **result, "seconds": round(seconds, 2), "broker_cpu_s": round(cpu, 2),
                             "broker_us_per_log_record": round(cpu * 1e6 / args.records, 2),
                             **cpu_split(server.pid, threads0, thread_cpu(server.pid))})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

"""Produce (key 0).

Behaviour: each partition's records must be exactly one RecordBatch v2 (as Kafka requires for
v3+); it is validated as Kafka's LogValidator does (sizes, magic, CRC-32C, offset delta, record
count, ``max.message.bytes``, then every record walked in place, a compressed batch
decompressed into a bounded buffer to walk it) and appended as sent, its offsets assigned in
place. acks=0 gets no response; acks=1 and acks=-1 are answered once every appended
partition is durable under the topic's durability profile (on a single node the ISR is this
broker, so acks=1 and acks=-1 wait for the same thing). On CreateTime topics every record's
timestamp must lie within ``message.timestamp.before.max.ms`` / ``message.timestamp.after.max.ms``
of now (INVALID_TIMESTAMP with one record error per record, as Kafka answers), and a header
whose maxTimestamp is not its records' largest is corrected. Topics with
``message.timestamp.type=LogAppendTime`` get the broker's time stamped into the batch (a batch a
producer marked LogAppendTime is INVALID_TIMESTAMP there); topics whose ``compression.type``
names a codec (not ``producer``) get batches in another codec recompressed. A compacted topic
(``cleanup.policy`` with compact) refuses records without a key (INVALID_RECORD, as Kafka).
Versions: 0-12 advertised; 0-2 answered with UNSUPPORTED_VERSION as Kafka 4 does.
Errors: UNSUPPORTED_VERSION, INVALID_REQUIRED_ACKS, UNSUPPORTED_COMPRESSION_TYPE (zstd before v7), UNKNOWN_TOPIC_OR_PARTITION,
CORRUPT_MESSAGE (framing, CRC, a payload its codec cannot decompress), INVALID_RECORD (a malformed
record, as Kafka; a record without a key on a compacted topic), INVALID_TIMESTAMP, MESSAGE_TOO_LARGE, UNSUPPORTED_FOR_MESSAGE_FORMAT,
OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING (a client's producer id
of 2^62 or more: the delay movers' range, docs/queues.md), INVALID_TXN_STATE, KAFKA_STORAGE_ERROR,
TRANSACTIONAL_ID_AUTHORIZATION_FAILED (a transactional batch without the request's transactional id),
TOPIC_AUTHORIZATION_FAILED (no WRITE on the topic).
Transactions: a transactional batch opens the producer's transaction in the partition (its
coordinator, here or on another broker, is asked first whether the partition was added: KIP-890
part 1, ``transaction.partition.verification.enable``; the connection's later Produce requests
append after it: ``_append_in_turn``); it stays
invisible to read_committed consumers until its COMMIT marker.
Idempotence: a batch with a producer id is checked against that producer's last five batches
on the partition; a retried duplicate is answered with the offset it got the first time. A
producer without state on the partition (new, expired, or its batches deleted) may start at any
sequence (KIP-360), see storage/producer_state.py.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tidelog.cluster.waiters import wait_for_acks
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.produce import PartitionResult, decode_produce_request, encode_produce_response
from tidelog.protocol.records import BATCH_HEADER_SIZE, InvalidBatch, parse_batch_header
from tidelog.queues.delay_topics import MOVER_CLIENT_ID
from tidelog.security.acl import AclOperation, ResourceType
from tidelog.txn.coordinator import verification_error
from tidelog.txn.state import TopicPartition

if TYPE_CHECKING:
    from tidelog.cluster.partition import AppendResult, Partition
    from tidelog.cluster.replica_manager import ReplicaManager
    from tidelog.metrics import BrokerMetrics

logger = logging.getLogger(__name__)

API_KEY = 0
OLDEST_SUPPORTED_VERSION = 3
ZSTD = 4
ZSTD_MIN_PRODUCE_VERSION = 7
_ATTRIBUTES_LOW = 22  # the low byte of a batch's attributes
_TRANSACTIONAL_BIT = 0x10


def _transaction_checks(ctx: RequestContext, transactional_id: str | None, batches: list[tuple[str, int, object]]
                        ) -> tuple[dict[tuple[str, int], KafkaError], dict[tuple[int, int], list[TopicPartition]]]:
    """The transactional batches of a request (topic, partition, records): each needs the
    request's transactional id, and before a producer's first batch of a transaction in a
    partition led here, its coordinator must have the partition in the transaction (KIP-890 part
    1). The error of each batch refused now, and what to ask the coordinator (``_ask``): (producer
    id, epoch) -> partitions."""
    errors: dict[tuple[str, int], KafkaError] = {}
    asking: dict[tuple[int, int], list[TopicPartition]] = {}
    if transactional_id is None:
        for topic, index, _ in batches:
            errors[(topic, index)] = KafkaError(ErrorCode.transactional_id_authorization_failed,
                                                "a transactional batch in a Produce request without a transactional id")
        return errors, asking
    for topic, index, records in batches:
        partition = ctx.replicas.get(topic, index)
        if partition is None or not partition.leading:
            continue  # append() answers it
        try:
            info = parse_batch_header(records)
        except InvalidBatch:
            continue  # append() refuses it
        if partition.transactions.open_transaction(info.producer_id) is None:
            asking.setdefault((info.producer_id, info.producer_epoch), []).append(TopicPartition(topic, index))
    return errors, asking


async def _ask(ctx: RequestContext, transactional_id: str, asking: dict[tuple[int, int], list[TopicPartition]]
               ) -> dict[tuple[str, int], KafkaError]:
    """Ask the transaction coordinator, wherever it is (one question a producer for all its
    partitions of the request), whether it holds the partitions; the error of each it does not."""
    errors: dict[tuple[str, int], KafkaError] = {}
    for (producer_id, producer_epoch), partitions in asking.items():
        answers = await ctx.transactions.verify(transactional_id, producer_id, producer_epoch, partitions)
        for tp, error in answers.items():
            if error is not ErrorCode.none:
                errors[(tp.topic, tp.partition)] = KafkaError(
                    verification_error(error, ctx.api_version),
                    f"transaction of {transactional_id} (producer {producer_id} epoch {producer_epoch}) does not hold "
                    f"{tp.topic}-{tp.partition}: {error.name}")
    return errors


async def _append_in_turn(ctx: RequestContext, request, refused: dict[tuple[str, int], KafkaError],
                          asking: dict[tuple[int, int], list[TopicPartition]]):
    """``_append_request`` once the coordinator has answered ``asking`` and every Produce read
    before this one on the connection has appended (``ctx.append_order``: its requests append in
    the order they were read, as a Kafka broker serialises a connection's requests, while the
    questions of several requests and connections are out at once)."""
    order = ctx.append_order
    if order is None:  # no connection: a handler called directly
        if asking:
            refused.update(await _ask(ctx, request.transactional_id, asking))
        return _append_request(ctx, request, refused)
    before, place = order.line_up()
    try:
        if asking:
            refused.update(await _ask(ctx, request.transactional_id, asking))
        await order.turn(before)
        return _append_request(ctx, request, refused)
    finally:
        order.done(place)


_PRODUCER_ID_AT = 43  # a batch header's producer id (8 bytes, big-endian)


def _movers_producer_id(ctx: RequestContext, records) -> int | None:
    """A batch's producer id at or above 2^62 (storage/producer_state.BROKER_PRODUCER_IDS: the delay
    movers', never allocated) from anyone but a mover (its client id, and CLUSTER_ACTION where ACLs
    are on): refused with INVALID_PRODUCER_ID_MAPPING, as it could pass for a mover's next batch."""
    if records is None or len(records) < BATCH_HEADER_SIZE or records[_PRODUCER_ID_AT] & 0xC0 != 0x40:
        return None
    if (ctx.header.client_id or "").startswith(MOVER_CLIENT_ID) and \
            ctx.access.authorize(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER):
        return None
    return int.from_bytes(records[_PRODUCER_ID_AT:_PRODUCER_ID_AT + 8], "big")


def _is_zstd(records) -> bool:
    return records is not None and len(records) >= BATCH_HEADER_SIZE and parse_batch_header(records).compression == ZSTD


def _everywhere(request, error_code: ErrorCode) -> list[tuple[str, list[PartitionResult]]]:
    """``error_code`` for every partition of ``request``."""
    return [(t.name, [PartitionResult(p.index, error_code) for p in t.partitions]) for t in request.topics]


@handles(API_KEY, raw=True)
async def handle(ctx: RequestContext, body: memoryview) -> list[bytes] | None:
    started = time.perf_counter()
    if ctx.held_by is not None:  # in arrival order: the waits end in the order they began
        while (hold := ctx.held_by()) is not None:
            await hold
    version = ctx.header.api_version  # not the property: a call less on every Produce
    request = decode_produce_request(body, version)
    if version < OLDEST_SUPPORTED_VERSION:
        logger.info("refusing Produce v%d from %s: Kafka 4 supports v3+", version, ctx.peer)
        return encode_produce_response(version, _everywhere(request, ErrorCode.unsupported_version))
    if request.acks not in (-1, 0, 1):
        logger.info("refusing Produce with acks=%d from %s", request.acks, ctx.peer)
        return encode_produce_response(version, _everywhere(request, ErrorCode.invalid_required_acks))

    transactional = []  # (topic, partition, records) of the transactional batches: one pass, no call a batch
    for t in request.topics:
        for p in t.partitions:
            records = p.records
            if records is not None and len(records) >= BATCH_HEADER_SIZE and records[_ATTRIBUTES_LOW] & _TRANSACTIONAL_BIT:
                transactional.append((t.name, p.index, records))
    if transactional and not (
            request.transactional_id is not None
            and ctx.access.authorize(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id)):
        return encode_produce_response(version, _everywhere(request, ErrorCode.transactional_id_authorization_failed))

    if transactional:
        refused, asking = _transaction_checks(ctx, request.transactional_id, transactional)
    else:
        refused, asking = {}, None
    order = ctx.append_order
    if asking or (order is not None and order.last is not None):  # waits before it appends: in line
        results, appended = await _append_in_turn(ctx, request, refused, asking)
    else:  # appends now, before its first await: in arrival order
        results, appended = _append_request(ctx, request, refused)
    if request.acks == 0:
        return None
    if appended:
        try:
            errors = await wait_for_acks([(leader, end) for _, _, leader, end in appended], request.acks,
                                         request.timeout_ms / 1000, ctx.replicas.logs)
        except KafkaError as e:  # StorageError: an fsync failed; or a partition was deleted meanwhile
            if e.error_code == ErrorCode.kafka_storage_error:
                logger.error("durability wait failed for a produce from %s: %s", ctx.peer, e)
            else:
                logger.info("produce from %s answered %s: %s", ctx.peer, e.error_code.name, e)
            results = _everywhere(request, e.error_code)
        else:
            for (t, p, _, _), error in zip(appended, errors):
                if error != ErrorCode.none:
                    results[t][1][p] = PartitionResult(results[t][1][p].index, error, error_message=error.name)
                    ctx.metrics.produce_errors.labels(error.name).inc()  # REQUEST_TIMED_OUT: the flush or ISR late
    ctx.metrics.produce_latency.observe((), time.perf_counter() - started)  # metrics.observe_produce inline
    return encode_produce_response(version, results)


def _append_request(ctx: RequestContext, request, refused: dict[tuple[str, int], KafkaError]):
    """Append each partition's batch of ``request`` (``refused``: the errors of those refused
    already), before any await: (results by topic, [(topic position, partition position,
    partition, end offset)] of those appended). Then the holds of an acks=all Produce, and the
    frame goes back to the pool."""
    version = ctx.header.api_version
    replicas, metrics = ctx.replicas, ctx.metrics
    results: list[tuple[str, list[PartitionResult]]] = []
    appended = []  # (topic position, partition position, partition, end offset)
    new_result = tuple.__new__  # a PartitionResult without its Python __new__: one a partition
    for topic in request.topics:
        record = ctx.metadata.topics.get(topic.name)
        writable = ctx.access.authorize(AclOperation.WRITE, ResourceType.TOPIC, topic.name)
        topic_results = []
        size_bytes = record_count = 0  # the topic's appends, counted in the metrics once
        for partition in topic.partitions:
            if not writable:
                topic_results.append(PartitionResult(partition.index, ErrorCode.topic_authorization_failed))
                continue
            if record is None or not 0 <= partition.index < record.partitions:
                topic_results.append(PartitionResult(partition.index, ErrorCode.unknown_topic_or_partition))
                continue
            appending = False  # an error from the append itself is counted in produce_errors (as append() counts)
            try:
                if version < ZSTD_MIN_PRODUCE_VERSION and _is_zstd(partition.records):
                    raise InvalidBatch(ErrorCode.unsupported_compression_type, "zstd needs Produce v7 or later")
                if refused and (topic.name, partition.index) in refused:
                    raise refused[(topic.name, partition.index)]
                records = partition.records
                if records is not None and len(records) >= BATCH_HEADER_SIZE and records[_PRODUCER_ID_AT] & 0xC0 == 0x40 \
                        and (producer_id := _movers_producer_id(ctx, records)) is not None:
                    metrics.produce_errors.labels(ErrorCode.invalid_producer_id_mapping.name).inc()
                    raise InvalidBatch(ErrorCode.invalid_producer_id_mapping, f"producer id {producer_id} is in the "
                                       f"range of the broker's delay movers (2^62 and above), never allocated to clients")
                appending = True  # append() inline (a call less a partition)
                leader = replicas.leader(topic.name, partition.index)
                result = leader.append_as_leader(partition.records, request.acks)
            except (InvalidBatch, KafkaError) as e:
                if appending:
                    metrics.produce_errors.labels(e.error_code.name).inc()
                # Bad input (a batch Kafka would refuse) is a WARNING; a state answer (not the
                # leader, an unknown partition, a fenced producer) is routine.
                logger.log(logging.WARNING if isinstance(e, InvalidBatch) else logging.INFO,
                           "produce to %s-%d from %s rejected: %s: %s", topic.name, partition.index, ctx.peer,
                           e.error_code.name.upper(), e)
                topic_results.append(PartitionResult(partition.index, e.error_code, error_message=str(e),
                                                     record_errors=getattr(e, "record_errors", ())))
                continue
            appended.append((len(results), len(topic_results), leader, result.end_offset))
            topic_results.append(new_result(PartitionResult, (partition.index, ErrorCode.none, result.base_offset,
                                                              result.log_append_time, result.log_start_offset, None, ())))
            size_bytes += result.size_bytes
            record_count += result.record_count
        if record_count:  # metrics.count_produced inline (two calls less a request)
            labels = (topic.name,)
            metrics.produced_bytes.inc(labels, size_bytes)
            metrics.produced_records.inc(labels, record_count)
        results.append((topic.name, topic_results))

    # acks=all in a cluster: the connection reads nothing more while a partition is too far
    # above its high watermark (replica.backlog.max.bytes), and Produce requests read wait above.
    if request.acks == -1 and appended and ctx.hold_reading is not None:
        for hold in replicas.backlog_holds([leader for _, _, leader, _ in appended]):
            ctx.hold_reading(hold)
    # The batches are in the log and nothing reads the records' bytes from here on (only topic
    # names and partition indexes): the frame goes back to the pool now, not after the wait.
    if ctx.release_frame is not None:
        ctx.release_frame()
    return results, appended


def append(replicas: "ReplicaManager", metrics: "BrokerMetrics", topic: str, partition: int, records,
           required_acks: int, counted: bool = True) -> "tuple[Partition, AppendResult]":
    """Append one client batch to ``topic``-``partition`` as its leader (Partition.append_as_leader:
    validation, idempotence, the leader epoch) and count it in the produce metrics (unless
    ``counted`` is False: the Produce handler counts a topic's batches of a request at once). The
    caller waits for the acknowledgement (``wait_for_acks``). Raises InvalidBatch or
    KafkaError, counted in ``tidelog_produce_errors``. Used by the HTTP API too."""
    try:
        leader = replicas.leader(topic, partition)
        result = leader.append_as_leader(records, required_acks)
    except (InvalidBatch, KafkaError) as e:
        metrics.produce_errors.labels(e.error_code.name).inc()
        raise
    if counted:
        metrics.count_produced(topic, result.size_bytes, result.record_count)
    return leader, result

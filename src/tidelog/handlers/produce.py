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
OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, KAFKA_STORAGE_ERROR.
Idempotence: a batch with a producer id is checked against that producer's last five batches
on the partition; a retried duplicate is answered with the offset it got the first time. A
producer without state on the partition (new, expired, or its batches deleted) may start at any
sequence (KIP-360), see storage/producer_state.py.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.batch_filter import null_key_indexes, records_body
from tidelog.protocol.compression import COMPRESSION_CODECS
from tidelog.protocol.produce import PartitionResult, decode_produce_request, encode_produce_response
from tidelog.protocol.records import (
    BATCH_HEADER_SIZE,
    InvalidBatch,
    apply_create_time,
    parse_batch_header,
    recompress_batch,
    set_log_append_time,
    set_partition_leader_epoch,
    validate_batches,
)

logger = logging.getLogger(__name__)

API_KEY = 0
OLDEST_SUPPORTED_VERSION = 3
ZSTD = 4
ZSTD_MIN_PRODUCE_VERSION = 7


def _is_zstd(records) -> bool:
    return records is not None and len(records) >= BATCH_HEADER_SIZE and parse_batch_header(records).compression == ZSTD


@handles(API_KEY, raw=True)
async def handle(ctx: RequestContext, body: memoryview) -> list[bytes] | None:
    started = time.perf_counter()
    version = ctx.api_version
    request = decode_produce_request(body, version)
    broker = ctx.broker

    def everywhere(error_code: ErrorCode) -> list[tuple[str, list[PartitionResult]]]:
        return [(t.name, [PartitionResult(p.index, error_code) for p in t.partitions]) for t in request.topics]

    if version < OLDEST_SUPPORTED_VERSION:
        logger.info("refusing Produce v%d from %s: Kafka 4 supports v3+", version, ctx.peer)
        return encode_produce_response(version, everywhere(ErrorCode.unsupported_version))
    if request.acks not in (-1, 0, 1):
        logger.info("refusing Produce with acks=%d from %s", request.acks, ctx.peer)
        return encode_produce_response(version, everywhere(ErrorCode.invalid_required_acks))

    results: list[tuple[str, list[PartitionResult]]] = []
    durable_waits = []
    replication = broker.replication  # None on a single node
    replication_waits = []  # cluster, acks=all: (topic position, partition position, topic, partition, end offset)
    for topic in request.topics:
        record = broker.metadata.topics.get(topic.name)
        topic_results = []
        for partition in topic.partitions:
            if record is None or not 0 <= partition.index < record.partitions:
                topic_results.append(PartitionResult(partition.index, ErrorCode.unknown_topic_or_partition))
                continue
            try:
                if version < ZSTD_MIN_PRODUCE_VERSION and _is_zstd(partition.records):
                    raise InvalidBatch(ErrorCode.unsupported_compression_type, "zstd needs Produce v7 or later")
                if replication is not None and request.acks == -1:
                    error = replication.leader_error(topic.name, partition.index) or replication.check_min_isr(topic.name, partition.index)
                    if error is not None:
                        raise KafkaError(error, f"{topic.name}-{partition.index}: {error.name}")
                log, base_offset, append_time, info = append_batch(broker, topic.name, partition.index, partition.records)
            except (InvalidBatch, KafkaError) as e:
                # Bad input (a batch Kafka would refuse) is a WARNING; a state answer (not the
                # leader, an unknown partition, a fenced producer) is routine.
                logger.log(logging.WARNING if isinstance(e, InvalidBatch) else logging.INFO,
                           "produce to %s-%d from %s rejected: %s: %s", topic.name, partition.index, ctx.peer,
                           e.error_code.name.upper(), e)
                topic_results.append(PartitionResult(partition.index, e.error_code, error_message=str(e),
                                                     record_errors=getattr(e, "record_errors", ())))
                continue
            if request.acks != 0:
                durable_waits.append((log, base_offset + info.last_offset_delta + 1))
            if replication is not None and request.acks == -1:
                replication_waits.append((len(results), len(topic_results), topic.name, partition.index,
                                          base_offset + info.last_offset_delta + 1))
            topic_results.append(PartitionResult(partition.index, ErrorCode.none, base_offset, append_time, log.log_start_offset))
        results.append((topic.name, topic_results))

    if request.acks == 0:
        return None
    if durable_waits:
        try:
            await broker.logs.wait_durable_many(durable_waits)
        except KafkaError as e:  # StorageError: an fsync failed; or a partition was deleted meanwhile
            if e.error_code == ErrorCode.kafka_storage_error:
                logger.error("durability wait failed for a produce from %s: %s", ctx.peer, e)
            else:
                logger.info("produce from %s answered %s: %s", ctx.peer, e.error_code.name, e)
            results = everywhere(e.error_code)
    if replication_waits:
        timeout_s = request.timeout_ms / 1000
        errors = await asyncio.gather(*(replication.wait_for_isr(name, index, end, timeout_s)
                                        for _, _, name, index, end in replication_waits))
        for (t, p, *_), error in zip(replication_waits, errors):
            if error != ErrorCode.none and results[t][1][p].error_code == ErrorCode.none:
                results[t][1][p] = PartitionResult(results[t][1][p].index, error, error_message=error.name)
    broker.metrics.produce_latency.observe(time.perf_counter() - started)
    return encode_produce_response(version, results)


def refuse_null_keys(records, info, topic: str, partition: int) -> None:
    """A compacted topic keeps the latest record per key: one without a key is INVALID_RECORD,
    with an error per such record (Kafka's LogValidator.validateKey)."""
    indexes = null_key_indexes(records_body(records, info), info.record_count)
    if indexes:
        message = f"Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
        raise InvalidBatch(ErrorCode.invalid_record, message, tuple((index, message) for index in indexes))


def append_batch(broker, topic: str, partition: int, records) -> tuple:
    """Validate one RecordBatch v2 for ``topic``-``partition`` and append it, as Produce does.

    ``records`` must be writable (offsets and LogAppendTime are stamped in place). Checks the
    topic's ``max.message.bytes``, applies ``message.timestamp.type``, dedups idempotent
    retries, counts the produce metrics and wakes waiting fetches. The caller waits for
    durability (``broker.logs.wait_durable(log, base_offset + info.last_offset_delta + 1)``).
    Returns ``(log, base_offset, append_time, info)``; raises InvalidBatch or KafkaError (the
    partition must exist; counted in ``tidelog_produce_errors``). Used by the HTTP API too.
    """
    log = broker.partition_log(topic, partition)
    try:
        replication = broker.replication
        if replication is not None:
            error = replication.leader_error(topic, partition)
            if error is not None:
                raise KafkaError(error, f"broker {broker.node_id} does not lead {topic}-{partition}")
        if log is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{partition} is not hosted here")
        if records is None:
            raise InvalidBatch(ErrorCode.invalid_record, "null records")
        (batch,) = validate_batches(records, broker.topic_value(topic, "max.message.bytes"))
        info = batch.info
        if "compact" in broker.topic_value(topic, "cleanup.policy").split(","):
            refuse_null_keys(records, info, topic, partition)
        now_ms = int(time.time() * 1000)
        log_append_time = broker.topic_value(topic, "message.timestamp.type") == "LogAppendTime"
        if not log_append_time:
            info = apply_create_time(records, batch, now_ms, broker.topic_value(topic, "message.timestamp.before.max.ms"),
                                     broker.topic_value(topic, "message.timestamp.after.max.ms"))
        elif info.timestamp_type == 1:
            raise InvalidBatch(ErrorCode.invalid_timestamp, "Invalid timestamp type in the batch: producers should not "
                               "set the timestamp type to LogAppendTime", ((0, "Producer should not set timestamp type to LogAppendTime."),))
        topic_codec = broker.topic_value(topic, "compression.type")
        if topic_codec != "producer" and COMPRESSION_CODECS[topic_codec] != info.compression:
            records = memoryview(recompress_batch(records, info, COMPRESSION_CODECS[topic_codec]))
            info = parse_batch_header(records)
        append_time = -1
        if log_append_time:
            append_time = now_ms
            info = set_log_append_time(records, info, append_time)
        if info.is_transactional:
            raise KafkaError(ErrorCode.invalid_txn_state, "transactional batches are not supported yet")
        producer_state = broker.producer_state(log)
        base_offset = producer_state.check(info)
        if base_offset is not None:
            logger.info("duplicate batch from producer %d to %s-%d answered with its offset %d",
                        info.producer_id, topic, partition, base_offset)
        else:
            if replication is not None:
                info = set_partition_leader_epoch(records, info, replication.leader_epoch(topic, partition))
            base_offset = log.append(records, info)
            producer_state.update(info, base_offset, now_ms)
            if replication is not None:
                replication.on_local_append(topic, partition)
    except (InvalidBatch, KafkaError) as e:
        broker.metrics.produce_errors.labels(e.error_code.name).inc()
        raise
    metrics = broker.metrics
    metrics.topic_counter(metrics.produced_bytes, "bytes", topic).inc(len(records))
    metrics.topic_counter(metrics.produced_records, "records", topic).inc(info.record_count)
    broker.notify_append(topic, partition)
    return log, base_offset, append_time, info

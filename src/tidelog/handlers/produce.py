"""Produce (key 0).

Behaviour: each partition's records must be exactly one RecordBatch v2 (as Kafka requires for
v3+); it is validated (sizes, magic, CRC-32C, offset delta, record count,
``max.message.bytes``) and appended as sent, its offsets assigned in place. Nothing is
decompressed. acks=0 gets no response; acks=1 and acks=-1 are answered once every appended
partition is durable under the topic's durability profile (on a single node the ISR is this
broker, so acks=1 and acks=-1 wait for the same thing). Topics with
``message.timestamp.type=LogAppendTime`` get the broker's time stamped into the batch.
Versions: 0-12 advertised; 0-2 answered with UNSUPPORTED_VERSION as Kafka 4 does.
Errors: UNSUPPORTED_VERSION, INVALID_REQUIRED_ACKS, UNKNOWN_TOPIC_OR_PARTITION,
CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE, UNSUPPORTED_FOR_MESSAGE_FORMAT,
OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, KAFKA_STORAGE_ERROR.
Idempotence: a batch with a producer id is checked against that producer's last five batches
on the partition; a retried duplicate is answered with the offset it got the first time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.produce import PartitionResult, decode_produce_request, encode_produce_response
from tidelog.protocol.records import InvalidBatch, set_log_append_time, validate_batches

logger = logging.getLogger(__name__)

API_KEY = 0
OLDEST_SUPPORTED_VERSION = 3


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
    for topic in request.topics:
        record = broker.metadata.topics.get(topic.name)
        topic_results = []
        for partition in topic.partitions:
            if record is None or not 0 <= partition.index < record.partitions:
                topic_results.append(PartitionResult(partition.index, ErrorCode.unknown_topic_or_partition))
                continue
            log = broker.partition_log(topic.name, partition.index)
            try:
                if partition.records is None:
                    raise InvalidBatch(ErrorCode.invalid_record, "null records")
                info = validate_batches(partition.records, broker.topic_value(topic.name, "max.message.bytes"))[0]
                append_time = -1
                if broker.topic_value(topic.name, "message.timestamp.type") == "LogAppendTime":
                    append_time = int(time.time() * 1000)
                    set_log_append_time(partition.records, append_time)
                if info.is_transactional:
                    raise KafkaError(ErrorCode.invalid_txn_state, "transactional batches are not supported yet")
                producer_state = broker.producer_state(log)
                base_offset = producer_state.check(info)
                if base_offset is not None:
                    logger.info("duplicate batch from producer %d to %s-%d answered with its offset %d",
                                info.producer_id, topic.name, partition.index, base_offset)
                else:
                    base_offset = log.append(partition.records, info)
                    producer_state.update(info, base_offset)
            except (InvalidBatch, KafkaError) as e:
                logger.info("produce to %s-%d from %s rejected: %s", topic.name, partition.index, ctx.peer, e)
                broker.metrics.produce_errors.labels(e.error_code.name).inc()
                topic_results.append(PartitionResult(partition.index, e.error_code, error_message=str(e)))
                continue
            metrics = broker.metrics
            metrics.topic_counter(metrics.produced_bytes, "bytes", topic.name).inc(len(partition.records))
            metrics.topic_counter(metrics.produced_records, "records", topic.name).inc(info.record_count)
            broker.notify_append(topic.name, partition.index)
            if request.acks != 0:
                durable_waits.append(broker.logs.wait_durable(log, base_offset + info.last_offset_delta + 1))
            topic_results.append(PartitionResult(partition.index, ErrorCode.none, base_offset, append_time, log.log_start_offset))
        results.append((topic.name, topic_results))

    if request.acks == 0:
        return None
    if durable_waits:
        outcomes = await asyncio.gather(*durable_waits, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            logger.error("durability wait failed for a produce from %s: %s", ctx.peer, failed[0])
            results = everywhere(ErrorCode.kafka_storage_error)
    broker.metrics.produce_latency.observe(time.perf_counter() - started)
    return encode_produce_response(version, results)

"""The HTTP API's records: ``POST /topics/{topic}/records`` (produce) and
``GET /topics/{topic}/partitions/{partition}/records`` (consume from an offset or a timestamp).

Produce: a missing topic is created as a Kafka producer's Metadata request would create it.
Records with a ``partition`` go there, keyed ones to Kafka's murmur2 partition of their key,
keyless ones of one request to one partition (the next request to the next). Each partition's
records become one batch, appended through ``handlers.produce.append`` (the Produce path:
same validation, metrics, fetch wake-up) and acknowledged once durable under the topic's
profile (in a cluster: once the in-sync replicas have them, as Produce acks=all); partitions
another broker leads are produced there (peers.py). One answer per record: its partition and
offset, or its error.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from tidelog.handlers.produce import append
from tidelog.http.cluster_view import ClusterView
from tidelog.http.codec import json_to_bytes, json_to_headers, partition_for_key
from tidelog.http.errors import bad_request, kafka_error_response
from tidelog.http.params import DEFAULT_LIMIT, MAX_LIMIT, MAX_TIMEOUT_MS, int_param, json_body
from tidelog.http.peers import PeerClient
from tidelog.http.record_reader import RecordReader
from tidelog.protocol.errors import ErrorCode, InvalidBatch, KafkaError
from tidelog.protocol.records import build_batch, parse_batch_header

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["RecordRoutes"]

logger = logging.getLogger(__name__)

MAX_RECORDS_PER_REQUEST = 10_000
PRODUCE_TIMEOUT_S = 30  # cluster: the longest a produce waits for the ISR (a Kafka producer's request.timeout.ms)


class RecordRoutes:
    """Produce and consume."""

    def __init__(self, broker: "Broker", view: ClusterView, peers: PeerClient, reader: RecordReader) -> None:
        self.broker = broker
        self.view = view
        self.peers = peers
        self.reader = reader
        self._round_robin: dict[str, itertools.count] = {}

    def _choose_partition(self, topic: str, partitions: int, record: dict, key: bytes | None, sticky: dict) -> int:
        if "partition" in record and record["partition"] is not None:
            partition = record["partition"]
            if not isinstance(partition, int) or isinstance(partition, bool):
                raise bad_request("partition must be an integer")
            if not 0 <= partition < partitions:
                raise KafkaError(ErrorCode.unknown_topic_or_partition,
                                 f"topic {topic!r} has partitions 0..{partitions - 1}, not {partition}")
            return partition
        if key is not None:
            return partition_for_key(key, partitions)
        # Keyless records of one request go to one partition, the next request to the next.
        if "keyless" not in sticky:
            counter = self._round_robin.setdefault(topic, itertools.count())
            sticky["keyless"] = next(counter) % partitions
        return sticky["keyless"]

    async def produce(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        # A missing topic is created as a Kafka producer's Metadata request would create it.
        record = self.broker.metadata.topics.get(request.match_info["topic"]) or await self.broker.topics.auto_create_topic(request.match_info["topic"])
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {request.match_info['topic']!r} does not exist "
                             "(and auto.create.topics.enable is false)")
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise bad_request("records must be a non-empty list")
        if len(records) > MAX_RECORDS_PER_REQUEST:
            raise bad_request(f"at most {MAX_RECORDS_PER_REQUEST} records per request")
        by_partition: dict[int, list[tuple[int, tuple]]] = {}
        sticky: dict = {}
        for index, item in enumerate(records):
            if not isinstance(item, dict):
                raise bad_request("each record must be an object")
            key = json_to_bytes(item, "key")
            value = json_to_bytes(item, "value")
            headers = json_to_headers(item.get("headers"))
            timestamp = item.get("timestamp")
            if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0):
                raise bad_request("timestamp must be a non-negative integer (ms since the epoch)")
            partition = self._choose_partition(record.name, record.partitions, item, key, sticky)
            by_partition.setdefault(partition, []).append((index, (key, value, headers, timestamp)))

        results: list[dict | None] = [None] * len(records)
        errors: list[KafkaError | InvalidBatch] = []
        broker = self.broker
        appended = []  # (leader Partition, end offset, items): acknowledged as Produce acks=all is
        forwarded: dict[int, dict[int, tuple[list, bytearray]]] = {}  # leader -> partition -> (items, batch)
        live = self.view.live_brokers()

        def reject(partition: int, items: list, error: KafkaError | InvalidBatch) -> None:
            errors.append(error)
            for index, _ in items:
                results[index] = {"partition": partition, "offset": -1, "error_code": error.error_code.name.upper(),
                                  "message": str(error)}

        for partition, items in sorted(by_partition.items()):
            batch = bytearray(build_batch([r for _, r in items]))
            leader = self.view.partition_state(record.name, partition, live)["leader"]
            if leader is not None and leader != broker.node_id:  # another broker leads it: produce there
                forwarded.setdefault(leader, {})[partition] = (items, batch)
                continue
            try:
                leader_partition, result = append(broker.replicas, broker.metrics, record.name, partition, batch, -1)
            except (KafkaError, InvalidBatch) as e:
                logger.info("HTTP produce to %s-%d rejected: %s", record.name, partition, e)
                reject(partition, items, e)
                continue
            appended.append((leader_partition, result.end_offset, items))
            for delta, (index, r) in enumerate(items):
                timestamp = (result.log_append_time if result.log_append_time >= 0
                             else r[3] if r[3] is not None else result.max_timestamp)
                results[index] = {"partition": partition, "offset": result.base_offset + delta, "timestamp": timestamp}
        if appended:
            try:
                outcomes = await broker.replicas.wait_for_acks([(p, end) for p, end, _ in appended], -1, PRODUCE_TIMEOUT_S)
            except KafkaError as e:
                logger.error("durability wait failed for an HTTP produce: %s", e)
                raise KafkaError(ErrorCode.kafka_storage_error, f"the records may not be durable: {e}") from None
            for (leader_partition, _, items), error in zip(appended, outcomes):
                partition = leader_partition.index
                if error != ErrorCode.none:
                    logger.info("HTTP produce to %s-%d not acknowledged: %s", record.name, partition, error.name)
                    reject(partition, items, KafkaError(error, f"{record.name}-{partition}: {error.name}"))
        if forwarded:
            await asyncio.gather(*(self._produce_at(leader, record.name, batches, results, reject)
                                   for leader, batches in forwarded.items()))
        if errors and len(errors) == len(by_partition):
            return kafka_error_response(errors[0])
        return web.json_response({"topic": record.name, "offsets": results})

    async def _produce_at(self, leader: int, topic: str, batches: dict[int, tuple[list, bytearray]], results: list, reject) -> None:
        """Partitions another broker leads: their batches are produced there, acks=all."""
        try:
            appended = await self.peers.produce(leader, topic, {p: bytes(batch) for p, (_, batch) in batches.items()},
                                                PRODUCE_TIMEOUT_S * 1000)
        except KafkaError as e:
            logger.info("HTTP produce to %s at broker %d failed: %s", topic, leader, e)
            for partition, (items, _) in batches.items():
                reject(partition, items, e)
            return
        for partition, (items, batch) in batches.items():
            answer = appended.get(partition)
            if answer is None or answer.error_code != ErrorCode.none:
                error = answer.error_code if answer is not None else ErrorCode.unknown_server_error
                message = (answer.message if answer is not None else None) or f"{topic}-{partition} at broker {leader}: {error.name}"
                logger.info("HTTP produce to %s-%d at broker %d rejected: %s", topic, partition, leader, message)
                reject(partition, items, KafkaError(error, message))
                continue
            max_timestamp = parse_batch_header(memoryview(batch), 0).max_timestamp
            for delta, (index, r) in enumerate(items):
                timestamp = answer.log_append_time_ms if answer.log_append_time_ms >= 0 else (r[3] if r[3] is not None else max_timestamp)
                results[index] = {"partition": partition, "offset": answer.base_offset + delta, "timestamp": timestamp}

    async def consume(self, request: web.Request) -> web.Response:
        record = self.view.topic(request.match_info["topic"])
        try:
            partition = int(request.match_info["partition"])
        except ValueError:
            raise bad_request("partition must be an integer") from None
        limit = int_param(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        timeout_ms = int_param(request, "timeout_ms", 0, minimum=0, maximum=MAX_TIMEOUT_MS)
        timestamp = int_param(request, "timestamp", None, minimum=0)
        offset = int_param(request, "offset", None, minimum=0)
        encoding = request.query.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise bad_request("encoding must be auto or base64")
        if offset is not None and timestamp is not None:
            raise bad_request("give offset or timestamp, not both")
        self.view.leader(record, partition)
        if timestamp is not None:
            offset = await self.reader.offset_for_timestamp(record, partition, timestamp)
        if offset is None:
            offset = (await self.reader.offsets(record, partition))[0]
        records, next_offset, log_start_offset, high_watermark = await self.reader.read_records(
            record, partition, offset, limit, encoding == "base64", timeout_ms)
        return web.json_response({
            "topic": record.name, "partition": partition, "log_start_offset": log_start_offset,
            "high_watermark": high_watermark, "next_offset": next_offset, "records": records,
        })

"""The HTTP API under ``/api/v1``: topics, records and consumer groups as JSON, for curl and the console.

It runs in the broker's event loop and works on the broker's own objects: topic admin through
``Broker.check_new_topic`` / ``create_topic`` / ``delete_topic`` (the CreateTopics rules),
records appended through ``handlers.produce.append_batch`` (the Produce path: same
validation, metrics, fetch wake-up) and acknowledged once durable under the topic's profile
(in a cluster: once the in-sync replicas have them, as Produce acks=all), records read from the
partition logs (in a cluster: below the high watermark), groups from the GroupCoordinator. Errors are
``{"error_code": NAME, "message": ...}`` with the HTTP status of ``_STATUS`` (Kafka error
names, upper case, or BAD_REQUEST / NOT_FOUND / METHOD_NOT_ALLOWED / INTERNAL_ERROR).

Consuming through a group is stateless: ``POST /groups/{id}/fetch`` reads each partition of a
topic from the group's committed offset (or ``auto_offset_reset`` where it has none) and, with
``commit`` (the default), commits the new positions before answering, as an ``assign()``
consumer does (generation -1, no member id): so it works only while the group has no active
members (else 409 REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER_ID). Commit-before-answer is
at-most-once; for at-least-once pass ``commit: false`` and commit with ``POST /groups/{id}/offsets``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from tidelog import __version__
from tidelog.config import topic_config_def, validate_topic_configs
from tidelog.handlers.describe_configs import DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, topic_config_views
from tidelog.handlers.produce import append_batch
from tidelog.http.codec import bytes_to_json, json_to_bytes, json_to_headers, partition_for_key
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, InvalidBatch, build_batch, iter_records, parse_batch_header

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_TIMEOUT_MS = 30_000
MAX_READ_BYTES = 4 * 1024 * 1024
MAX_RECORDS_PER_REQUEST = 10_000
PRODUCE_TIMEOUT_S = 30  # cluster: the longest a produce waits for the ISR (a Kafka producer's request.timeout.ms)

_STATUS = {
    ErrorCode.unknown_topic_or_partition: 404,
    ErrorCode.group_id_not_found: 404,
    ErrorCode.topic_already_exists: 409,
    ErrorCode.non_empty_group: 409,
    ErrorCode.rebalance_in_progress: 409,
    ErrorCode.unknown_member_id: 409,
    ErrorCode.illegal_generation: 409,
    ErrorCode.fenced_member_epoch: 409,
    ErrorCode.stale_member_epoch: 409,
    ErrorCode.message_too_large: 413,
    ErrorCode.record_list_too_large: 413,
    ErrorCode.offset_out_of_range: 416,
    ErrorCode.kafka_storage_error: 503,
    ErrorCode.not_enough_replicas: 503,
    ErrorCode.not_enough_replicas_after_append: 503,
    ErrorCode.request_timed_out: 503,
    ErrorCode.coordinator_not_available: 503,
    ErrorCode.coordinator_load_in_progress: 503,
    ErrorCode.unknown_server_error: 500,
}
_CLIENT_ERRORS = 400


def error_response(status: int, error_code: str, message: str) -> web.Response:
    return web.json_response({"error_code": error_code, "message": message}, status=status)


def kafka_error_response(error: KafkaError | InvalidBatch) -> web.Response:
    code = error.error_code
    return error_response(_STATUS.get(code, _CLIENT_ERRORS), code.name.upper(), str(error) or code.name)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error under /api as JSON {error_code, message} with its HTTP status."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except (KafkaError, InvalidBatch) as e:
        return kafka_error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}.get(e.status, "BAD_REQUEST")
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        return error_response(e.status, code, message)
    except Exception:  # noqa: BLE001 - answered as 500, logged with its traceback
        logger.exception("HTTP API %s %s failed", request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "internal error, see the broker log")


def bad_request(message: str) -> KafkaError:
    return KafkaError(ErrorCode.invalid_request, message)


async def json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def int_param(request: web.Request, name: str, default: int | None, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise bad_request(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_request(f"{name} must be at most {maximum}")
    return value


def body_int(body: dict, name: str, default: int | None, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise bad_request(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_request(f"{name} must be at most {maximum}")
    return value


def body_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false")
    return value


class Api:
    """The route handlers; one instance per HTTP server, bound to its broker."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._round_robin: dict[str, itertools.count] = {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(PREFIX + "/cluster", self.cluster)
        r.add_get(PREFIX + "/topics", self.list_topics)
        r.add_post(PREFIX + "/topics", self.create_topic)
        r.add_get(PREFIX + "/topics/{topic}", self.describe_topic)
        r.add_delete(PREFIX + "/topics/{topic}", self.delete_topic)
        r.add_put(PREFIX + "/topics/{topic}/configs", self.alter_topic_configs)
        r.add_post(PREFIX + "/topics/{topic}/records", self.produce)
        r.add_get(PREFIX + "/topics/{topic}/partitions/{partition}/records", self.consume)
        r.add_get(PREFIX + "/groups", self.list_groups)
        r.add_get(PREFIX + "/groups/{group}", self.describe_group)
        r.add_delete(PREFIX + "/groups/{group}", self.delete_group)
        r.add_post(PREFIX + "/groups/{group}/offsets", self.commit_offsets)
        r.add_post(PREFIX + "/groups/{group}/fetch", self.group_fetch)

    # --- cluster ---------------------------------------------------------------------------
    async def cluster(self, _request: web.Request) -> web.Response:
        broker = self.broker
        metrics = broker.metrics

        def total(counter) -> float:
            return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))

        topics = broker.metadata.topics
        return web.json_response({
            "cluster_id": broker.cluster_id,
            "controller_id": broker.node_id,
            "version": __version__,
            "brokers": [{"node_id": broker.node_id, "host": broker.advertised_host, "port": broker.port,
                         "http_port": broker.http.port if broker.http is not None else None}],
            "started_at_ms": broker.started_at_ms,
            "uptime_ms": int(time.time() * 1000) - broker.started_at_ms,
            "ready": broker.ready,
            "topics": len(topics),
            "partitions": sum(t.partitions for t in topics.values()),
            "under_replicated_partitions": 0,
            "groups": len(broker.groups.list_groups()),
            "connections": len(broker.connections),
            "totals": {
                "produced_bytes": total(metrics.produced_bytes),
                "produced_records": total(metrics.produced_records),
                "fetched_bytes": total(metrics.fetched_bytes),
                "fetched_records": total(metrics.fetched_records),
                "requests": total(metrics.requests),
            },
            "now_ms": int(time.time() * 1000),
        })

    # --- topics ----------------------------------------------------------------------------
    def _topic(self, name: str):
        record = self.broker.metadata.topics.get(name)
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        return record

    def _partition_view(self, name: str, partition: int) -> dict:
        log = self.broker.partition_log(name, partition)
        node = self.broker.node_id
        if log is None:
            return {"partition": partition, "leader": -1, "replicas": [node], "isr": [], "log_start_offset": -1,
                    "log_end_offset": -1, "high_watermark": -1, "size_bytes": 0, "segments": 0, "offline": True}
        return {
            "partition": partition, "leader": node, "replicas": [node], "isr": [node],
            "log_start_offset": log.log_start_offset, "log_end_offset": log.log_end_offset,
            "high_watermark": self._high_watermark(log), "size_bytes": log.size_bytes, "segments": len(log.segments),
            "offline": self.broker.logs.offline,
        }

    def _topic_summary(self, record) -> dict:
        partitions = [self._partition_view(record.name, p) for p in range(record.partitions)]
        return {
            "name": record.name,
            "topic_id": str(record.topic_id),
            "internal": record.name.startswith("__"),
            "partitions": record.partitions,
            "replication_factor": record.replication_factor,
            "size_bytes": sum(p["size_bytes"] for p in partitions),
            "records": sum(max(p["log_end_offset"] - p["log_start_offset"], 0) for p in partitions),
            "configs": dict(record.configs),
        }

    def _topic_detail(self, record) -> dict:
        detail = self._topic_summary(record)
        detail["partitions"] = [self._partition_view(record.name, p) for p in range(record.partitions)]
        detail["partition_count"] = record.partitions
        sources = {DYNAMIC_TOPIC_CONFIG: "topic", STATIC_BROKER_CONFIG: "broker"}
        detail["configs"] = [
            {"name": v.name, "value": v.value, "source": sources.get(v.source, "default"), "documentation": v.documentation}
            for v in topic_config_views(self.broker, record.configs)
        ]
        return detail

    async def list_topics(self, request: web.Request) -> web.Response:
        internal = request.query.get("internal", "true").lower() not in ("false", "0", "no")
        topics = [self._topic_summary(t) for name, t in sorted(self.broker.metadata.topics.items())
                  if internal or not name.startswith("__")]
        return web.json_response({"topics": topics})

    async def describe_topic(self, request: web.Request) -> web.Response:
        return web.json_response(self._topic_detail(self._topic(request.match_info["topic"])))

    async def create_topic(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise bad_request("name (a string) is required")
        partitions = body_int(body, "partitions", -1, minimum=-1)
        replication_factor = body_int(body, "replication_factor", -1, minimum=-1)
        configs = body.get("configs") or {}
        if not isinstance(configs, dict) or not all(isinstance(v, (str, int, float, bool)) for v in configs.values()):
            raise bad_request("configs must be an object of name -> value")
        configs = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in configs.items()}
        broker = self.broker
        normalised = broker.check_new_topic(name, partitions, replication_factor, configs)
        partitions, replication_factor = broker.resolve_topic_defaults(partitions, replication_factor)
        record = await broker.create_topic(name, partitions, replication_factor, normalised)
        return web.json_response(self._topic_detail(record), status=201)

    async def delete_topic(self, request: web.Request) -> web.Response:
        record = self._topic(request.match_info["topic"])
        if record.name.startswith("__"):
            raise KafkaError(ErrorCode.invalid_request, f"internal topic {record.name} cannot be deleted")
        await self.broker.delete_topic(record.name)
        return web.json_response({"deleted": record.name})

    async def alter_topic_configs(self, request: web.Request) -> web.Response:
        """Set (value) or remove (null) topic config overrides; others are kept."""
        record = self._topic(request.match_info["topic"])
        body = await json_body(request)
        changes = body.get("configs")
        if not isinstance(changes, dict) or not all(v is None or isinstance(v, (str, int, float, bool)) for v in changes.values()):
            raise bad_request("configs must be an object of name -> value (null removes the override)")
        new = dict(record.configs)
        for name, value in changes.items():
            topic_config_def(name)  # INVALID_CONFIG for a name that is not a topic config
            if value is None:
                new.pop(name, None)
            else:
                new[name] = str(value).lower() if isinstance(value, bool) else str(value)
        normalised = validate_topic_configs(new)
        await self.broker.set_topic_configs(record.name, normalised)
        return web.json_response(self._topic_detail(self.broker.metadata.topics[record.name]))

    # --- records ---------------------------------------------------------------------------
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
        record = self._topic(request.match_info["topic"])
        body = await json_body(request)
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
        waits = []
        errors: list[KafkaError | InvalidBatch] = []
        broker = self.broker
        replication = broker.replication  # cluster: acknowledged as Produce acks=all is
        replicated = []  # (partition, end offset, items)

        def reject(partition: int, items: list, error: KafkaError | InvalidBatch) -> None:
            errors.append(error)
            for index, _ in items:
                results[index] = {"partition": partition, "offset": -1, "error_code": error.error_code.name.upper(),
                                  "message": str(error)}

        for partition, items in sorted(by_partition.items()):
            batch = bytearray(build_batch([r for _, r in items]))
            try:
                if replication is not None:
                    error = replication.leader_error(record.name, partition) or replication.check_min_isr(record.name, partition)
                    if error is not None:
                        raise KafkaError(error, f"{record.name}-{partition}: {error.name}")
                log, base_offset, append_time, info = append_batch(broker, record.name, partition, batch)
            except (KafkaError, InvalidBatch) as e:
                logger.info("HTTP produce to %s-%d rejected: %s", record.name, partition, e)
                reject(partition, items, e)
                continue
            waits.append(broker.logs.wait_durable(log, base_offset + info.last_offset_delta + 1))
            if replication is not None:
                replicated.append((partition, base_offset + info.last_offset_delta + 1, items))
            for delta, (index, r) in enumerate(items):
                timestamp = append_time if append_time >= 0 else (r[3] if r[3] is not None else info.max_timestamp)
                results[index] = {"partition": partition, "offset": base_offset + delta, "timestamp": timestamp}
        if waits:
            outcomes = await asyncio.gather(*waits, return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                logger.error("durability wait failed for an HTTP produce: %s", failed[0])
                raise KafkaError(ErrorCode.kafka_storage_error, f"the records may not be durable: {failed[0]}")
        if replicated:
            outcomes = await asyncio.gather(*(replication.wait_for_isr(record.name, partition, end_offset, PRODUCE_TIMEOUT_S)
                                              for partition, end_offset, _ in replicated))
            for (partition, _, items), error in zip(replicated, outcomes):
                if error != ErrorCode.none:
                    logger.info("HTTP produce to %s-%d not acknowledged: %s", record.name, partition, error.name)
                    reject(partition, items, KafkaError(error, f"{record.name}-{partition}: {error.name}"))
        if errors and len(errors) == len(by_partition):
            return kafka_error_response(errors[0])
        return web.json_response({"topic": record.name, "offsets": results})

    def _record_json(self, r, timestamp_type: int, force_base64: bool) -> dict:
        key, key_encoding = bytes_to_json(r.key, force_base64)
        value, value_encoding = bytes_to_json(r.value, force_base64)
        headers = []
        for header_key, header_value in r.headers:
            text, encoding = bytes_to_json(header_value, force_base64)
            headers.append({"key": header_key, "value": text, "value_encoding": encoding})
        return {
            "offset": r.offset, "timestamp": r.timestamp,
            "timestamp_type": "LogAppendTime" if timestamp_type == 1 else "CreateTime",
            "key": key, "key_encoding": key_encoding, "value": value, "value_encoding": value_encoding,
            "headers": headers,
        }

    def _high_watermark(self, log) -> int:
        """What readers may see, as Fetch serves (the ISR's in a cluster, the durable end on one node)."""
        return self.broker.high_watermark(log.topic, log.partition)

    def read_records(self, topic: str, partition: int, offset: int, limit: int, force_base64: bool) -> tuple[list[dict], int]:
        """Up to ``limit`` records from ``offset`` (control batches skipped); and the next offset to read."""
        log = self.broker.partition_log(topic, partition)
        out: list[dict] = []
        position = offset
        budget = MAX_READ_BYTES
        while len(out) < limit and budget > 0:
            high_watermark = self._high_watermark(log)
            data = log.read(position, min(budget, 1024 * 1024), min_one_batch=True, max_offset=high_watermark)
            if not data:
                break
            budget -= len(data)
            self.broker.metrics.count_fetched(topic, data)
            view = memoryview(data)
            pos = 0
            while pos + BATCH_HEADER_SIZE <= len(view) and len(out) < limit:
                info = parse_batch_header(view, pos)
                if pos + info.size > len(view):
                    break
                if not info.is_control:
                    for r in iter_records(view[pos : pos + info.size]):
                        if r.offset < position:
                            continue
                        out.append(self._record_json(r, info.timestamp_type, force_base64))
                        position = r.offset + 1
                        if len(out) >= limit:
                            break
                if len(out) < limit:
                    position = max(position, info.last_offset + 1)
                pos += info.size
        return out, position

    async def consume(self, request: web.Request) -> web.Response:
        record = self._topic(request.match_info["topic"])
        try:
            partition = int(request.match_info["partition"])
        except ValueError:
            raise bad_request("partition must be an integer") from None
        if not 0 <= partition < record.partitions:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{record.name} has no partition {partition}")
        log = self.broker.partition_log(record.name, partition)
        if log is None:
            raise KafkaError(ErrorCode.kafka_storage_error, f"{record.name}-{partition} is offline")
        limit = int_param(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        timeout_ms = int_param(request, "timeout_ms", 0, minimum=0, maximum=MAX_TIMEOUT_MS)
        timestamp = int_param(request, "timestamp", None, minimum=0)
        offset = int_param(request, "offset", None, minimum=0)
        encoding = request.query.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise bad_request("encoding must be auto or base64")
        if offset is not None and timestamp is not None:
            raise bad_request("give offset or timestamp, not both")
        if timestamp is not None:
            found = log.offset_for_timestamp(timestamp)
            high_watermark = self._high_watermark(log)
            offset = found[0] if found is not None and found[0] < high_watermark else high_watermark
        if offset is None:
            offset = log.log_start_offset
        if not log.log_start_offset <= offset <= log.log_end_offset:
            raise KafkaError(ErrorCode.offset_out_of_range,
                             f"offset {offset} is outside [{log.log_start_offset}, {log.log_end_offset}] of {record.name}-{partition}")
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            records, next_offset = self.read_records(record.name, partition, offset, limit, encoding == "base64")
            remaining = deadline - time.monotonic()
            if records or remaining <= 0 or record.name not in self.broker.metadata.topics:
                break
            await self.broker.wait_for_append([(record.name, partition)], remaining)
        return web.json_response({
            "topic": record.name, "partition": partition, "log_start_offset": log.log_start_offset,
            "high_watermark": self._high_watermark(log), "next_offset": next_offset, "records": records,
        })

    # --- groups ----------------------------------------------------------------------------
    def _log_end_offset(self, topic: str, partition: int) -> int | None:
        log = self.broker.partition_log(topic, partition)
        return self._high_watermark(log) if log is not None else None  # lag: to what consumers can read

    def _group_offsets(self, group_id: str) -> list[dict]:
        offsets = self.broker.groups.offsets.group_offsets(group_id)
        result = []
        for lag in self.broker.groups.lag(group_id, self._log_end_offset):
            committed = offsets.get((lag.topic, lag.partition))
            result.append({
                "topic": lag.topic, "partition": lag.partition, "committed_offset": lag.committed_offset,
                "log_end_offset": lag.log_end_offset, "lag": lag.lag,
                "metadata": committed.metadata if committed else "",
                "commit_timestamp_ms": committed.commit_timestamp_ms if committed else -1,
            })
        return result

    async def list_groups(self, _request: web.Request) -> web.Response:
        groups = []
        for group_id, protocol_type, state, group_type in sorted(self.broker.groups.list_groups()):
            offsets = self._group_offsets(group_id)
            groups.append({
                "group_id": group_id, "state": state, "protocol_type": protocol_type, "type": group_type,
                "members": self.member_count(group_id),
                "lag": sum(o["lag"] for o in offsets),
                "topics": sorted({o["topic"] for o in offsets}),
            })
        return web.json_response({"groups": groups})

    def member_count(self, group_id: str) -> int:
        """Members of a classic or consumer-protocol (KIP-848) group; 0 for an unknown one."""
        coordinator = self.broker.groups
        consumer_group = coordinator.consumer_groups.get(group_id)
        if consumer_group is not None:
            return len(consumer_group.members)
        description = coordinator.describe_group(group_id)
        return len(description.members) if description is not None else 0

    def _group(self, group_id: str):
        description = self.broker.groups.describe_group(group_id)
        if description is None:
            raise KafkaError(ErrorCode.group_id_not_found, f"group {group_id!r} does not exist")
        return description

    def _consumer_group_detail(self, group) -> dict:
        """A KIP-848 group: members with their current assignment (topic ids resolved to names)."""
        members = []
        for member in group.members.values():
            assignment = []
            for topic_id, partitions in member.assigned.items():
                record = self.broker.topic_by_id(topic_id)
                assignment.append({"topic": record.name if record else str(topic_id), "partitions": sorted(partitions)})
            members.append({
                "member_id": member.member_id, "group_instance_id": member.instance_id, "client_id": member.client_id,
                "client_host": member.client_host, "assignment": sorted(assignment, key=lambda a: a["topic"]),
            })
        offsets = self._group_offsets(group.group_id)
        return {
            "group_id": group.group_id, "type": "consumer", "state": group.state, "protocol_type": "consumer",
            "protocol": group.assignor_name or "", "generation_id": group.group_epoch, "leader_id": None,
            "members": members, "offsets": offsets, "lag": sum(o["lag"] for o in offsets),
        }

    async def describe_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        consumer_group = self.broker.groups.consumer_groups.get(group_id)
        if consumer_group is not None:
            return web.json_response(self._consumer_group_detail(consumer_group))
        description = self._group(group_id)
        group = self.broker.groups.groups.get(group_id)
        members = []
        for m in description.members:
            assignment = parse_consumer_assignment(m.assignment) if description.protocol_type == "consumer" else None
            members.append({
                "member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": [{"topic": t, "partitions": ps} for t, ps in sorted((assignment or {}).items())],
            })
        offsets = self._group_offsets(group_id)
        return web.json_response({
            "group_id": group_id, "type": "classic", "state": description.state, "protocol_type": description.protocol_type,
            "protocol": description.protocol_name,
            "generation_id": group.generation_id if group is not None else -1,
            "leader_id": (group.leader_id or None) if group is not None else None,
            "members": members, "offsets": offsets, "lag": sum(o["lag"] for o in offsets),
        })

    async def delete_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        result = (await self.broker.groups.delete_groups([group_id]))[group_id]
        if result is not ErrorCode.none:
            raise KafkaError(result, {ErrorCode.non_empty_group: f"group {group_id!r} has active members",
                                      ErrorCode.group_id_not_found: f"group {group_id!r} does not exist"}
                             .get(result, result.name))
        return web.json_response({"deleted": group_id})

    async def _commit(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        if not group_id:
            raise KafkaError(ErrorCode.invalid_group_id, "the group id must not be empty")
        results = await self.broker.groups.commit_offsets(
            group_id, -1, "", None, {key: (offset, -1, "") for key, offset in offsets.items()})
        for (topic, partition), error in sorted(results.items()):
            if error is not ErrorCode.none:
                raise KafkaError(error, f"commit of {topic}-{partition} for group {group_id!r} failed: {error.name}"
                                 + (" (the group has active members)" if error in (ErrorCode.unknown_member_id,
                                                                                    ErrorCode.rebalance_in_progress) else ""))

    async def commit_offsets(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        body = await json_body(request)
        items = body.get("offsets")
        if not isinstance(items, list) or not items:
            raise bad_request("offsets must be a non-empty list of {topic, partition, offset}")
        offsets: dict[tuple[str, int], int] = {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
                raise bad_request("each offset needs topic, partition and offset")
            partition = body_int(item, "partition", None, minimum=0)
            offset = body_int(item, "offset", None, minimum=0)
            if partition is None or offset is None:
                raise bad_request("each offset needs topic, partition and offset")
            record = self._topic(item["topic"])
            if partition >= record.partitions:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{record.name} has no partition {partition}")
            offsets[(record.name, partition)] = offset
        await self._commit(group_id, offsets)
        return web.json_response({"group_id": group_id, "offsets": self._group_offsets(group_id)})

    async def group_fetch(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        body = await json_body(request)
        topic = body.get("topic")
        if not isinstance(topic, str):
            raise bad_request("topic (a string) is required")
        record = self._topic(topic)
        partitions = body.get("partitions")
        if partitions is None:
            partitions = list(range(record.partitions))
        if not isinstance(partitions, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in partitions):
            raise bad_request("partitions must be a list of integers")
        for p in partitions:
            if not 0 <= p < record.partitions:
                raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{record.name} has no partition {p}")
        max_records = body_int(body, "max_records", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        timeout_ms = body_int(body, "timeout_ms", 0, minimum=0, maximum=MAX_TIMEOUT_MS)
        commit = body_bool(body, "commit", True)
        reset = body.get("auto_offset_reset", "earliest")
        if reset not in ("earliest", "latest"):
            raise bad_request("auto_offset_reset must be earliest or latest")
        if not group_id:
            raise KafkaError(ErrorCode.invalid_group_id, "the group id must not be empty")
        if commit:
            # Fail before reading if the group's members own its offsets.
            if self.member_count(group_id):
                raise KafkaError(ErrorCode.unknown_member_id,
                                 f"group {group_id!r} has active members; it cannot be consumed over HTTP")
        committed = self.broker.groups.offsets.group_offsets(group_id)
        positions = {}
        for p in partitions:
            log = self.broker.partition_log(record.name, p)
            if log is None:
                raise KafkaError(ErrorCode.kafka_storage_error, f"{record.name}-{p} is offline")
            c = committed.get((record.name, p))
            position = c.offset if c is not None else -1
            if not log.log_start_offset <= position <= log.log_end_offset:
                position = log.log_start_offset if reset == "earliest" else self._high_watermark(log)
            positions[p] = position
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            out = []
            next_positions = dict(positions)
            for p in partitions:
                if len(out) >= max_records:
                    break
                records, next_offset = self.read_records(record.name, p, positions[p], max_records - len(out), False)
                for r in records:
                    r["partition"] = p
                out += records
                next_positions[p] = next_offset
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or record.name not in self.broker.metadata.topics:
                break
            await self.broker.wait_for_append([(record.name, p) for p in partitions], remaining)
        if commit:
            changed = {(record.name, p): o for p, o in next_positions.items() if o != positions[p] or (record.name, p) not in committed}
            if changed:
                await self._commit(group_id, changed)
        return web.json_response({
            "group_id": group_id, "topic": record.name, "committed": commit,
            "positions": [{"partition": p, "offset": next_positions[p]} for p in partitions],
            "records": out,
        })


def parse_consumer_assignment(data: bytes) -> dict[str, list[int]] | None:
    """Topic -> partitions of a ConsumerProtocolAssignment (any version); None if unreadable."""
    import struct

    try:
        if len(data) < 6:
            return {} if not data else None
        pos = 2
        (count,) = struct.unpack_from(">i", data, pos)
        pos += 4
        result: dict[str, list[int]] = {}
        for _ in range(max(count, 0)):
            (length,) = struct.unpack_from(">h", data, pos)
            pos += 2
            topic = bytes(data[pos : pos + length]).decode()
            pos += length
            (n,) = struct.unpack_from(">i", data, pos)
            pos += 4
            result[topic] = list(struct.unpack_from(f">{max(n, 0)}i", data, pos))
            pos += 4 * max(n, 0)
        return result
    except (struct.error, UnicodeDecodeError):
        return None

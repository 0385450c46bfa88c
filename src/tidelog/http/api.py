"""The HTTP API under ``/api/v1``: topics, records and consumer groups as JSON, for curl and the console.

It runs in the broker's event loop and works on the broker's own objects: topic admin through
``Broker.check_new_topic`` / ``create_topic`` / ``delete_topic`` (the CreateTopics rules),
records appended through ``handlers.produce.append_batch`` (the Produce path: same
validation, metrics, fetch wake-up) and acknowledged once durable under the topic's profile
(in a cluster: once the in-sync replicas have them, as Produce acks=all), records read from the
partition logs below the high watermark, groups from the GroupCoordinator. In a cluster every
broker answers alike: leaders, replicas and ISR come from the metadata store, and a partition's
offsets, size and records from its leader (here, or asked over Kafka's protocol: peers.py).
Errors are
``{"error_code": NAME, "message": ...}`` with the HTTP status of ``_STATUS`` (Kafka error
names, upper case, INVALID_REQUEST for a malformed request, or NOT_FOUND / METHOD_NOT_ALLOWED /
REQUEST_TOO_LARGE / INTERNAL_ERROR).

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

import aiohttp
from aiohttp import web

from tidelog import __version__
from tidelog.config import topic_config_def, validate_topic_configs
from tidelog.handlers.describe_configs import DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, topic_config_views
from tidelog.handlers.produce import append_batch
from tidelog.http.codec import TIMESTAMP_TYPES, json_to_bytes, json_to_headers, partition_for_key, record_to_json
from tidelog.http.peers import PeerClient
from tidelog.protocol.consumer_protocol import assignment_partitions
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, InvalidBatch, build_batch, iter_records, parse_batch_header
from tidelog.protocol.topics import CONSUMER_OFFSETS, is_internal

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
    ErrorCode.leader_not_available: 503,
    ErrorCode.not_leader_or_follower: 503,
    ErrorCode.broker_not_available: 503,
    ErrorCode.network_exception: 503,
    ErrorCode.coordinator_not_available: 503,
    ErrorCode.not_coordinator: 503,
    ErrorCode.coordinator_load_in_progress: 503,
    ErrorCode.unknown_server_error: 500,
}
_CLIENT_ERRORS = 400
FORWARDED_HEADER = "X-Tidelog-Forwarded-By"  # a request one broker forwarded to another: never forwarded again
# Errors that are not Kafka's: aiohttp's own (unknown path, method, a body too large) and ours.
HTTP_ERROR_NAMES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}
INTERNAL_ERROR = "INTERNAL_ERROR"


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
        code = HTTP_ERROR_NAMES.get(e.status, "INVALID_REQUEST")
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        return error_response(e.status, code, message)
    except Exception:  # noqa: BLE001 - answered as 500, logged with its traceback
        logger.exception("HTTP API %s %s failed", request.method, request.path)
        return error_response(500, INTERNAL_ERROR, "internal error, see the broker log")


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
        self.peers = PeerClient(broker)
        self._session: aiohttp.ClientSession | None = None  # group routes forwarded to the coordinator
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
        r.add_get(PREFIX + "/groups", self.at_coordinator(self.list_groups))
        r.add_get(PREFIX + "/groups/{group}", self.at_coordinator(self.describe_group))
        r.add_delete(PREFIX + "/groups/{group}", self.at_coordinator(self.delete_group))
        r.add_post(PREFIX + "/groups/{group}/offsets", self.at_coordinator(self.commit_offsets))
        r.add_post(PREFIX + "/groups/{group}/fetch", self.at_coordinator(self.group_fetch))

    async def close(self) -> None:
        self.peers.close()
        if self._session is not None:
            await self._session.close()

    # --- the group coordinator -----------------------------------------------------------------
    def _coordinator_http(self, request: web.Request | None) -> str | None:
        """Where group routes are answered: None for here (a single node, this broker leads
        ``__consumer_offsets`` partition 0, or there are no groups yet), else the coordinator's
        HTTP address."""
        broker = self.broker
        if broker.replication is None:
            return None
        state = broker.metadata.partitions.get((CONSUMER_OFFSETS, 0))
        if state is None:
            return None
        coordinator = state.leader if state.leader in self._live_brokers() else None
        if coordinator is None:
            raise KafkaError(ErrorCode.coordinator_not_available, f"{CONSUMER_OFFSETS}-0 has no live leader: no group coordinator")
        if coordinator == broker.node_id:
            return None
        if request is not None and request.headers.get(FORWARDED_HEADER):
            raise KafkaError(ErrorCode.not_coordinator, f"broker {broker.node_id} does not coordinate the groups (broker {coordinator} does)")
        address = broker.metadata.brokers[coordinator].http
        if address is None:
            raise KafkaError(ErrorCode.not_coordinator, f"broker {coordinator} coordinates the groups and serves no HTTP")
        return address

    def at_coordinator(self, handler):
        """A group route, answered by the group coordinator: forwarded to its HTTP API when that is
        another broker, so that every broker's console shows the groups."""

        async def route(request: web.Request) -> web.Response:
            address = self._coordinator_http(request)
            return await handler(request) if address is None else await self._forward(request, address)

        return route

    async def _forward(self, request: web.Request, address: str) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=MAX_TIMEOUT_MS / 1000 + 10))
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json"), FORWARDED_HEADER: str(self.broker.node_id)}
        try:
            async with self._session.request(request.method, f"http://{address}{request.rel_url}", data=body or None,
                                             headers=headers) as response:
                return web.Response(body=await response.read(), status=response.status, content_type=response.content_type)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise KafkaError(ErrorCode.network_exception,
                             f"the group coordinator's HTTP API at {address} did not answer: {e or type(e).__name__}") from None

    async def _group_count(self) -> int | None:
        """Groups as the coordinator knows them; None when it cannot be asked."""
        try:
            address = self._coordinator_http(None)
        except KafkaError:
            return None
        if address is None:
            return len(self.broker.groups.admin.list_groups())
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=MAX_TIMEOUT_MS / 1000 + 10))
        try:
            async with self._session.get(f"http://{address}{PREFIX}/groups", headers={FORWARDED_HEADER: str(self.broker.node_id)},
                                         timeout=aiohttp.ClientTimeout(total=2)) as response:
                return len((await response.json())["groups"]) if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
            return None

    # --- cluster ---------------------------------------------------------------------------
    def _live_brokers(self) -> dict[int, tuple[str, int, str | None]]:
        """node id -> (host, port, rack) of every live broker, as Metadata lists them."""
        broker = self.broker
        if broker.replication is None:  # a single node: this broker, the only one
            return {broker.node_id: (broker.advertised_host, broker.advertised_port, broker.config["broker.rack"] or None)}
        return {b.node_id: (b.host, b.port, b.rack) for b in broker.metadata.brokers.values()}

    def _http_address(self, node_id: int) -> str | None:
        if node_id == self.broker.node_id:
            return self.broker.http_address
        info = self.broker.metadata.brokers.get(node_id)
        return info.http if info is not None else None

    def _controller_id(self) -> int:
        broker = self.broker
        return broker.node_id if broker.replication is None else broker.metadata.controller_id

    def _partition_state(self, name: str, partition: int, live) -> dict:
        """Leader, replicas, ISR and health of a partition as the metadata store has it (every
        broker has the same store, so every broker's answer is the same)."""
        state = self.broker.metadata.partitions.get((name, partition))
        if state is None:
            return {"partition": partition, "leader": None, "leader_epoch": -1, "replicas": [], "isr": [],
                    "offline_replicas": [], "offline": True, "under_replicated": False}
        leader = state.leader if state.leader in live else None
        return {
            "partition": partition, "leader": leader, "leader_epoch": state.leader_epoch,
            "replicas": list(state.replicas), "isr": list(state.isr),
            "offline_replicas": [r for r in state.replicas if r not in live],
            "offline": leader is None,
            "under_replicated": leader is not None and len(state.isr) < len(state.target_replicas),
        }

    async def cluster(self, _request: web.Request) -> web.Response:
        broker = self.broker
        metrics = broker.metrics

        def total(counter) -> float:
            return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))

        topics = broker.metadata.topics
        live = self._live_brokers()
        controller_id = self._controller_id()
        states = [self._partition_state(t.name, p, live) for t in topics.values() for p in range(t.partitions)]
        return web.json_response({
            "cluster_id": broker.cluster_id,
            "controller_id": controller_id if controller_id in live else None,
            "node_id": broker.node_id,
            "version": __version__,
            "brokers": [{"node_id": node_id, "host": host, "port": port, "rack": rack, "controller": node_id == controller_id,
                         "http_port": broker.http.port if node_id == broker.node_id and broker.http is not None else None,
                         "console": f"http://{http}/" if (http := self._http_address(node_id)) else None}
                        for node_id, (host, port, rack) in sorted(live.items())],
            "started_at_ms": broker.started_at_ms,
            "uptime_ms": int(time.time() * 1000) - broker.started_at_ms,
            "ready": broker.ready,
            "topics": len(topics),
            "partitions": len(states),
            "under_replicated_partitions": sum(s["under_replicated"] for s in states),
            "offline_partitions": sum(s["offline"] for s in states),
            "groups": await self._group_count(),
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

    def _leads(self, topic: str, partition: int) -> bool:
        replication = self.broker.replication
        return replication is None or (topic, partition) in replication.leading

    def _high_watermark(self, log) -> int:
        """What readers may see, as Fetch serves (the ISR's in a cluster, the durable end on one node)."""
        return self.broker.high_watermark(log.topic, log.partition)

    async def _partition_views(self, records: list) -> dict[str, list[dict]]:
        """Every partition of ``records`` with the leader's offsets and size: read here for the
        partitions led here, asked of the leader (one request each kind per leader) for the rest;
        null where the leader is gone or did not answer."""
        live = self._live_brokers()
        views: dict[str, list[dict]] = {}
        remote: dict[int, list[tuple[str, int]]] = {}
        for record in records:
            views[record.name] = []
            for partition in range(record.partitions):
                view = self._partition_state(record.name, partition, live)
                view.update(log_start_offset=None, log_end_offset=None, high_watermark=None, size_bytes=None, segments=None)
                log = self.broker.partition_log(record.name, partition)
                if view["leader"] == self.broker.node_id and (log is None or self.broker.logs.offline):
                    view.update(leader=None, offline=True, under_replicated=False)  # its log directory is gone
                if view["leader"] is not None and self._leads(record.name, partition) and log is not None:
                    view.update(log_start_offset=log.log_start_offset, log_end_offset=log.log_end_offset,
                                high_watermark=self._high_watermark(log), size_bytes=log.size_bytes, segments=len(log.segments))
                elif view["leader"] is not None and view["leader"] != self.broker.node_id:
                    remote.setdefault(view["leader"], []).append((record.name, partition))
                views[record.name].append(view)
        if remote:
            answers = await asyncio.gather(*(self._ask_leader(node_id, keys) for node_id, keys in remote.items()))
            for offsets, sizes in answers:
                for (topic, partition), (log_start, high_watermark) in offsets.items():
                    views[topic][partition].update(log_start_offset=log_start, high_watermark=high_watermark)
                for (topic, partition), size in sizes.items():
                    views[topic][partition]["size_bytes"] = size
        return views

    async def _ask_leader(self, node_id: int, keys: list[tuple[str, int]]):
        """(offsets, sizes) of partitions led by another broker; empty where it does not answer."""
        try:
            return await asyncio.gather(self.peers.offsets(node_id, keys), self.peers.sizes(node_id, keys))
        except KafkaError as e:
            logger.info("HTTP API: broker %d did not give the offsets of %d partitions: %s", node_id, len(keys), e)
            return {}, {}

    def _topic_summary(self, record, partitions: list[dict]) -> dict:
        return {
            "name": record.name,
            "topic_id": str(record.topic_id),
            "internal": is_internal(record.name),
            "partitions": record.partitions,
            "replication_factor": record.replication_factor,
            "size_bytes": sum(p["size_bytes"] or 0 for p in partitions),
            "records": sum(max(p["high_watermark"] - p["log_start_offset"], 0) for p in partitions if p["high_watermark"] is not None),
            "configs": dict(record.configs),
            "offline_partitions": sum(p["offline"] for p in partitions),
            "under_replicated_partitions": sum(p["under_replicated"] for p in partitions),
        }

    async def _topic_detail(self, record) -> dict:
        partitions = (await self._partition_views([record]))[record.name]
        detail = self._topic_summary(record, partitions)
        detail["partitions"] = partitions
        detail["partition_count"] = record.partitions
        sources = {DYNAMIC_TOPIC_CONFIG: "topic", STATIC_BROKER_CONFIG: "broker"}
        detail["configs"] = [
            {"name": v.name, "value": v.value, "source": sources.get(v.source, "default"), "documentation": v.documentation}
            for v in topic_config_views(self.broker, record.configs)
        ]
        return detail

    async def list_topics(self, request: web.Request) -> web.Response:
        internal = request.query.get("internal", "true").lower() not in ("false", "0", "no")
        records = [t for name, t in sorted(self.broker.metadata.topics.items()) if internal or not is_internal(name)]
        views = await self._partition_views(records)
        return web.json_response({"topics": [self._topic_summary(t, views[t.name]) for t in records]})

    async def describe_topic(self, request: web.Request) -> web.Response:
        return web.json_response(await self._topic_detail(self._topic(request.match_info["topic"])))

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
        return web.json_response(await self._topic_detail(record), status=201)

    async def delete_topic(self, request: web.Request) -> web.Response:
        record = self._topic(request.match_info["topic"])
        if is_internal(record.name):
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
        return web.json_response(await self._topic_detail(self.broker.metadata.topics[record.name]))

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
        body = await json_body(request)
        # A missing topic is created as a Kafka producer's Metadata request would create it.
        record = self.broker.metadata.topics.get(request.match_info["topic"]) or await self.broker.auto_create_topic(request.match_info["topic"])
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
        waits = []
        errors: list[KafkaError | InvalidBatch] = []
        broker = self.broker
        replication = broker.replication  # cluster: acknowledged as Produce acks=all is
        replicated = []  # (partition, end offset, items)
        forwarded: dict[int, dict[int, tuple[list, bytearray]]] = {}  # leader -> partition -> (items, batch)
        live = self._live_brokers()

        def reject(partition: int, items: list, error: KafkaError | InvalidBatch) -> None:
            errors.append(error)
            for index, _ in items:
                results[index] = {"partition": partition, "offset": -1, "error_code": error.error_code.name.upper(),
                                  "message": str(error)}

        for partition, items in sorted(by_partition.items()):
            batch = bytearray(build_batch([r for _, r in items]))
            leader = self._partition_state(record.name, partition, live)["leader"] if replication is not None else None
            if leader is not None and leader != broker.node_id:  # another broker leads it: produce there
                forwarded.setdefault(leader, {})[partition] = (items, batch)
                continue
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

    def _record_json(self, r, timestamp_type: int, force_base64: bool) -> dict:
        return record_to_json(r.offset, r.timestamp, TIMESTAMP_TYPES[timestamp_type], r.key, r.value, r.headers, force_base64)

    def _parse_records(self, data: memoryview, position: int, limit: int, out: list[dict], force_base64: bool) -> int:
        """Append the records of ``data`` (whole batches; control batches skipped) at or after
        ``position`` to ``out``, up to ``limit`` in all; return the next offset to read."""
        pos = 0
        while pos + BATCH_HEADER_SIZE <= len(data) and len(out) < limit:
            info = parse_batch_header(data, pos)
            if pos + info.size > len(data):
                break
            if not info.is_control:
                for r in iter_records(data[pos : pos + info.size]):
                    if r.offset < position:
                        continue
                    out.append(self._record_json(r, info.timestamp_type, force_base64))
                    position = r.offset + 1
                    if len(out) >= limit:
                        break
            if len(out) < limit:
                position = max(position, info.last_offset + 1)
            pos += info.size
        return position

    def _leader(self, record, partition: int) -> int:
        """The live leader of a partition; LEADER_NOT_AVAILABLE (503) when it has none."""
        if not 0 <= partition < record.partitions:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{record.name} has no partition {partition}")
        leader = self._partition_state(record.name, partition, self._live_brokers())["leader"]
        if leader == self.broker.node_id and self.broker.logs.offline:
            raise KafkaError(ErrorCode.kafka_storage_error, f"{record.name}-{partition}: the log directory is offline "
                             f"({self.broker.logs.offline_reason})")
        if leader is None or (leader == self.broker.node_id and self.broker.partition_log(record.name, partition) is None):
            raise KafkaError(ErrorCode.leader_not_available, f"{record.name}-{partition} is offline: no live leader")
        return leader

    async def _offsets(self, record, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of a partition, at its leader."""
        leader = self._leader(record, partition)
        if leader == self.broker.node_id:
            log = self.broker.partition_log(record.name, partition)
            return log.log_start_offset, self._high_watermark(log)
        found = (await self.peers.offsets(leader, [(record.name, partition)])).get((record.name, partition))
        if found is None:
            raise KafkaError(ErrorCode.not_leader_or_follower, f"broker {leader} does not lead {record.name}-{partition} (any more)")
        return found

    async def _offset_for_timestamp(self, record, partition: int, timestamp: int) -> int:
        """The first offset whose timestamp is at or after ``timestamp``; the high watermark if none."""
        leader = self._leader(record, partition)
        if leader == self.broker.node_id:
            log = self.broker.partition_log(record.name, partition)
            found = log.offset_for_timestamp(timestamp)
            offset = found[0] if found is not None and found[0] < self._high_watermark(log) else None
        else:
            offset = await self.peers.offset_for_timestamp(leader, record.name, partition, timestamp)
        return offset if offset is not None else (await self._offsets(record, partition))[1]

    async def read_records(self, record, partition: int, offset: int, limit: int, force_base64: bool,
                           timeout_ms: int = 0) -> tuple[list[dict], int, int, int]:
        """Up to ``limit`` records from ``offset`` below the high watermark, read at the leader
        (here or over Kafka's Fetch); waits up to ``timeout_ms`` for a first one. Returns
        (records, next offset to read, log start offset, high watermark)."""
        leader = self._leader(record, partition)
        if leader != self.broker.node_id:
            return await self._read_remote(leader, record.name, partition, offset, limit, force_base64, timeout_ms)
        log = self.broker.partition_log(record.name, partition)
        if not log.log_start_offset <= offset <= self._high_watermark(log):
            raise KafkaError(ErrorCode.offset_out_of_range, f"offset {offset} is outside [{log.log_start_offset}, "
                             f"{self._high_watermark(log)}] of {record.name}-{partition}")
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            out: list[dict] = []
            position = offset
            budget = MAX_READ_BYTES
            while len(out) < limit and budget > 0:
                data = log.read(position, min(budget, 1024 * 1024), min_one_batch=True, max_offset=self._high_watermark(log))
                if not data:
                    break
                budget -= len(data)
                self.broker.metrics.count_fetched(record.name, data)
                next_position = self._parse_records(memoryview(data), position, limit, out, force_base64)
                if next_position == position:
                    break
                position = next_position
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or record.name not in self.broker.metadata.topics:
                return out, position, log.log_start_offset, self._high_watermark(log)
            await self.broker.wait_for_append([(record.name, partition)], remaining)

    async def _read_remote(self, leader: int, topic: str, partition: int, offset: int, limit: int, force_base64: bool,
                           timeout_ms: int) -> tuple[list[dict], int, int, int]:
        out: list[dict] = []
        position = offset
        budget = MAX_READ_BYTES
        wait_ms = timeout_ms
        while True:
            read = await self.peers.fetch(leader, topic, partition, position, min(budget, 1024 * 1024), wait_ms)
            budget -= len(read.records)
            next_position = self._parse_records(memoryview(read.records), position, limit, out, force_base64)
            if len(out) >= limit or budget <= 0 or next_position == position or next_position >= read.high_watermark:
                return out, next_position, read.log_start_offset, read.high_watermark
            position, wait_ms = next_position, 0

    async def consume(self, request: web.Request) -> web.Response:
        record = self._topic(request.match_info["topic"])
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
        self._leader(record, partition)
        if timestamp is not None:
            offset = await self._offset_for_timestamp(record, partition, timestamp)
        if offset is None:
            offset = (await self._offsets(record, partition))[0]
        records, next_offset, log_start_offset, high_watermark = await self.read_records(
            record, partition, offset, limit, encoding == "base64", timeout_ms)
        return web.json_response({
            "topic": record.name, "partition": partition, "log_start_offset": log_start_offset,
            "high_watermark": high_watermark, "next_offset": next_offset, "records": records,
        })

    # --- groups ----------------------------------------------------------------------------
    def _log_end_offset(self, topic: str, partition: int) -> int | None:
        log = self.broker.partition_log(topic, partition)
        return self._high_watermark(log) if log is not None else None  # lag: to what consumers can read

    def _group_offsets(self, group_id: str) -> list[dict]:
        offsets = self.broker.groups.registry.committed.group_offsets(group_id)
        result = []
        for lag in self.broker.groups.offsets.lag(group_id, self._log_end_offset):
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
        for group_id, protocol_type, state, group_type in sorted(self.broker.groups.admin.list_groups()):
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
        consumer_group = coordinator.registry.consumer_groups.get(group_id)
        if consumer_group is not None:
            return len(consumer_group.members)
        description = coordinator.admin.describe_group(group_id)
        return len(description.members) if description is not None else 0

    def _group(self, group_id: str):
        description = self.broker.groups.admin.describe_group(group_id)
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
        consumer_group = self.broker.groups.registry.consumer_groups.get(group_id)
        if consumer_group is not None:
            return web.json_response(self._consumer_group_detail(consumer_group))
        description = self._group(group_id)
        group = self.broker.groups.registry.groups.get(group_id)
        members = []
        for m in description.members:
            assignment = assignment_partitions(m.assignment) if description.protocol_type == "consumer" else None
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
        result = (await self.broker.groups.admin.delete_groups([group_id]))[group_id]
        if result is not ErrorCode.none:
            raise KafkaError(result, {ErrorCode.non_empty_group: f"group {group_id!r} has active members",
                                      ErrorCode.group_id_not_found: f"group {group_id!r} does not exist"}
                             .get(result, result.name))
        return web.json_response({"deleted": group_id})

    async def _commit(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        if not group_id:
            raise KafkaError(ErrorCode.invalid_group_id, "the group id must not be empty")
        results = await self.broker.groups.offsets.commit_offsets(
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
        committed = self.broker.groups.registry.committed.group_offsets(group_id)
        positions = {}
        for p in partitions:
            log_start, high_watermark = await self._offsets(record, p)
            c = committed.get((record.name, p))
            position = c.offset if c is not None else -1
            if not log_start <= position <= high_watermark:
                position = log_start if reset == "earliest" else high_watermark
            positions[p] = position
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            out = []
            next_positions = dict(positions)
            for p in partitions:
                if len(out) >= max_records:
                    break
                records, next_offset, _, _ = await self.read_records(record, p, positions[p], max_records - len(out), False)
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

"""The HTTP API's consumer groups: list, describe, delete, commit offsets, and consume through a group.

Group routes are answered by the group coordinator (the leader of ``__consumer_offsets``
partition 0): forwarded to its HTTP API when that is another broker, so every broker's console
shows the groups (a forwarded request is never forwarded again: NOT_COORDINATOR), over http or
https as this broker's own HTTP listener serves (peer_http.py).

Consuming through a group is stateless: ``POST /groups/{id}/fetch`` reads each partition of a
topic from the group's committed offset (or ``auto_offset_reset`` where it has none) and, with
``commit`` (the default), commits the new positions before answering, as an ``assign()``
consumer does (generation -1, no member id): so it works only while the group has no active
members (else 409 REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER_ID). Commit-before-answer is
at-most-once; for at-least-once pass ``commit: false`` and commit with ``POST /groups/{id}/offsets``.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from tidelog.cluster.partition import wait_for_data
from tidelog.http.cluster_view import ClusterView
from tidelog.http.errors import PREFIX, bad_request
from tidelog.http.params import DEFAULT_LIMIT, MAX_LIMIT, MAX_TIMEOUT_MS, body_bool, body_int, json_body
from tidelog.http.peer_http import PeerHttp
from tidelog.http.record_reader import RecordReader
from tidelog.protocol.consumer_protocol import assignment_partitions
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import CONSUMER_OFFSETS

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["FORWARDED_HEADER", "GroupRoutes"]

FORWARDED_HEADER = "X-Tidelog-Forwarded-By"  # a request one broker forwarded to another: never forwarded again


class GroupRoutes:
    """The group routes, each wrapped by ``at_coordinator``; ``group_count`` serves the cluster view."""

    def __init__(self, broker: "Broker", view: ClusterView, reader: RecordReader, peer_http: PeerHttp) -> None:
        self.broker = broker
        self.view = view
        self.reader = reader
        self.peer_http = peer_http  # routes forwarded to the coordinator

    def _coordinator_http(self, request: web.Request | None) -> str | None:
        """Where group routes are answered: None for here (a single node, this broker leads
        ``__consumer_offsets`` partition 0, or there are no groups yet), else the coordinator's
        HTTP address."""
        broker = self.broker
        state = broker.metadata.partitions.get((CONSUMER_OFFSETS, 0))
        if state is None:
            return None
        coordinator = state.leader if state.leader in self.view.live_brokers() else None
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
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json"), FORWARDED_HEADER: str(self.broker.node_id)}
        if "Authorization" in request.headers:  # the coordinator authenticates and authorises the caller again
            headers["Authorization"] = request.headers["Authorization"]
        try:
            async with self.peer_http.request("groups", request.method, address, str(request.rel_url),
                                              MAX_TIMEOUT_MS / 1000 + 10, data=body or None, headers=headers) as response:
                return web.Response(body=await response.read(), status=response.status, content_type=response.content_type)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise KafkaError(ErrorCode.network_exception,
                             f"the group coordinator's HTTP API at {address} did not answer: {e or type(e).__name__}") from None

    async def group_count(self, authorization: str | None = None) -> int | None:
        """Groups as the coordinator knows them; None when it cannot be asked. ``authorization``:
        the caller's Authorization header, which a secured coordinator checks again."""
        try:
            address = self._coordinator_http(None)
        except KafkaError:
            return None
        if address is None:
            return len(self.broker.groups.admin.list_groups())
        try:
            headers = {FORWARDED_HEADER: str(self.broker.node_id)}
            if authorization is not None:
                headers["Authorization"] = authorization
            async with self.peer_http.request("groups", "GET", address, f"{PREFIX}/groups", 2, headers=headers) as response:
                return len((await response.json())["groups"]) if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
            return None

    def _log_end_offset(self, topic: str, partition: int) -> int | None:
        log = self.broker.partition_log(topic, partition)
        return self.view.high_watermark(log) if log is not None else None  # lag: to what consumers can read

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
                record = self.broker.topics.topic_by_id(topic_id)
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
            record = self.view.topic(item["topic"])
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
        record = self.view.topic(topic)
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
            log_start, high_watermark = await self.reader.offsets(record, p)
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
                records, next_offset, _, _ = await self.reader.read_records(record, p, positions[p], max_records - len(out), False)
                for r in records:
                    r["partition"] = p
                out += records
                next_positions[p] = next_offset
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or record.name not in self.broker.metadata.topics:
                break
            await wait_for_data(self.view.hosted([(record.name, p) for p in partitions]), remaining)
        if commit:
            changed = {(record.name, p): o for p, o in next_positions.items() if o != positions[p] or (record.name, p) not in committed}
            if changed:
                await self._commit(group_id, changed)
        return web.json_response({
            "group_id": group_id, "topic": record.name, "committed": commit,
            "positions": [{"partition": p, "offset": next_positions[p]} for p in partitions],
            "records": out,
        })

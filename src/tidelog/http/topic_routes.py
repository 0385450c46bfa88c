"""The HTTP API's topics: list, describe, create, delete, alter configs.

Topic administration goes through the broker's own rules (``check_new_topic``,
``create_topic``, ``delete_topic``: CreateTopics' validation and defaults); internal topics are
not deleted. A topic's partitions come with their leader's offsets and size: read here for the
partitions led here, asked of the leader (one request each kind per leader) for the rest, null
where the leader is gone or did not answer. Configs are listed as DescribeConfigs lists them.
A delay topic's ``delay`` block (issue 14) is each partition's leader's mover status: this
broker's for the partitions led here, the leader's HTTP API's (GET .../topics/{topic}/delay,
forwarded once) for the rest.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from tidelog.config import topic_config_def, validate_topic_configs
from tidelog.handlers.describe_configs import DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, topic_config_views
from tidelog.http.cluster_view import ClusterView
from tidelog.http.errors import PREFIX, bad_request
from tidelog.http.group_routes import FORWARDED_HEADER
from tidelog.http.params import body_int, json_body
from tidelog.http.peer_http import PeerHttp
from tidelog.http.peers import PeerClient
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import is_internal

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["TopicRoutes"]

logger = logging.getLogger(__name__)


class TopicRoutes:
    """The topic routes; ``partition_views`` also serves the cluster view."""

    def __init__(self, broker: "Broker", view: ClusterView, peers: PeerClient, peer_http: PeerHttp) -> None:
        self.broker = broker
        self.view = view
        self.peers = peers
        self.peer_http = peer_http  # delay status asked of other brokers' HTTP APIs

    async def _partition_views(self, records: list) -> dict[str, list[dict]]:
        """Every partition of ``records`` with the leader's offsets and size: read here for the
        partitions led here, asked of the leader (one request each kind per leader) for the rest;
        null where the leader is gone or did not answer."""
        live = self.view.live_brokers()
        views: dict[str, list[dict]] = {}
        remote: dict[int, list[tuple[str, int]]] = {}
        for record in records:
            views[record.name] = []
            for partition in range(record.partitions):
                view = self.view.partition_state(record.name, partition, live)
                view.update(log_start_offset=None, log_end_offset=None, high_watermark=None, size_bytes=None, segments=None,
                            backlog_bytes=None, backlog_held=None)
                log = self.broker.partition_log(record.name, partition)
                view["cleaner"] = self._cleaner_state(log)
                if view["leader"] == self.broker.node_id and (log is None or self.broker.logs.offline):
                    view.update(leader=None, offline=True, under_replicated=False)  # its log directory is gone
                if view["leader"] is not None and self.view.leads(record.name, partition) and log is not None:
                    view.update(log_start_offset=log.log_start_offset, log_end_offset=log.log_end_offset,
                                high_watermark=self.view.high_watermark(log), size_bytes=log.size_bytes, segments=len(log.segments))
                    view.update(self.view.backlog(record.name, partition))
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

    def _cleaner_state(self, log) -> dict | None:
        """The log cleaner's state of this broker's replica of a compacted partition (each replica
        cleans its own log; ``replica`` says whose); None for other topics or no replica here."""
        if log is None or not log.config.compact or self.broker.logs.offline or log.closed:
            return None
        return {"replica": self.broker.node_id, **self.broker.logs.cleaner.describe(log)}

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

    async def _topic_detail(self, record, authorization: str | None = None) -> dict:
        partitions = (await self._partition_views([record]))[record.name]
        detail = self._topic_summary(record, partitions)
        detail["partitions"] = partitions
        detail["partition_count"] = record.partitions
        sources = {DYNAMIC_TOPIC_CONFIG: "topic", STATIC_BROKER_CONFIG: "broker"}
        detail["configs"] = [
            {"name": v.name, "value": v.value, "source": sources.get(v.source, "default"), "documentation": v.documentation}
            for v in topic_config_views(self.broker.config, record.configs)
        ]
        detail["share_groups"] = self._share_partitions(record.topic_id)
        detail["delay"] = await self._delay_view(record, authorization)
        return detail

    async def _delay_view(self, record, authorization: str | None = None, local_only: bool = False) -> dict | None:
        """A delay topic's target and its partitions' mover status, each from the partition's
        leader (a partition whose leader cannot be asked: state ``unavailable``); None for other
        topics. ``local_only``: this broker's view only (a request another broker forwarded)."""
        delay_topics = self.broker.delay_topics
        target = record.configs.get("tidelog.delay.target.topic")
        if not target:
            return None
        partitions = delay_topics.status(record.name) if delay_topics is not None else None
        if partitions is None:
            return {"target_topic": target, "partitions": []}
        if not local_only:
            live = self.view.live_brokers()
            remote: dict[int, list[int]] = {}
            for view in partitions:
                leader = self.view.partition_state(record.name, view["partition"], live)["leader"]
                if leader is None:
                    view.update(state="unavailable", leader=None, last_error="the partition has no live leader")
                elif leader != self.broker.node_id:
                    remote.setdefault(leader, []).append(view["partition"])
            answers = await asyncio.gather(*(self._ask_delay(node_id, record.name, authorization) for node_id in remote))
            for (node_id, wanted), (answer, error) in zip(remote.items(), answers):
                for p in wanted:
                    got = answer.get(p)
                    if got is not None and got["state"] != "not_leader":
                        partitions[p] = got
                    else:
                        partitions[p].update(state="unavailable", leader=node_id,
                                             last_error=error or f"broker {node_id} does not lead it (any more)")
        return {"target_topic": target, "partitions": partitions}

    async def _ask_delay(self, node_id: int, topic: str, authorization: str | None) -> tuple[dict[int, dict], str | None]:
        """Partition -> status from broker ``node_id``'s HTTP API, or ({}, why not)."""
        address = self.view.http_address(node_id)
        if address is None:
            return {}, f"broker {node_id} leads it and serves no HTTP"
        headers = {FORWARDED_HEADER: str(self.broker.node_id), **({"Authorization": authorization} if authorization else {})}
        path = f"{PREFIX}/topics/{urllib.parse.quote(topic, safe='')}/delay"
        try:
            async with self.peer_http.request("delay", "GET", address, path, 5, headers=headers) as response:
                answer = await response.json()
                if response.status != 200:
                    return {}, f"broker {node_id} answered {response.status}: {answer.get('message')}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            logger.info("HTTP API: broker %d did not give the delay status of %s: %s", node_id, topic, e or type(e).__name__)
            return {}, f"broker {node_id}'s HTTP API at {address} did not answer: {e or type(e).__name__}"
        return {p["partition"]: p for p in (answer or {}).get("partitions", [])}, None

    async def describe_delay(self, request: web.Request) -> web.Response:
        """A delay topic's ``delay`` block alone (INVALID_REQUEST for another topic); for a request
        another broker forwarded, this broker's view only."""
        record = self.view.topic(request.match_info["topic"])
        view = await self._delay_view(record, request.headers.get("Authorization"),
                                      local_only=bool(request.headers.get(FORWARDED_HEADER)))
        if view is None:
            raise KafkaError(ErrorCode.invalid_request, f"{record.name} is not a delay topic (no tidelog.delay.target.topic)")
        return web.json_response(view)

    def _share_partitions(self, topic_id) -> list[dict]:
        """Issue 14: the share groups' share-partitions of the topic loaded on this broker (its
        partitions' leader), with their Available records by priority and the delayed ones."""
        shares = self.broker.shares
        if shares is None:
            return []
        out = []
        for key, _ in sorted(shares.manager.loaded(), key=lambda item: (item[0].group_id, item[0].partition)):
            if key.topic_id == topic_id:
                view = shares.queue_view(key)
                out.append({"group": key.group_id, "partition": key.partition, "delayed": view["delayed"],
                            "available_by_priority": view["available_by_priority"]})
        return out

    async def list_topics(self, request: web.Request) -> web.Response:
        internal = request.query.get("internal", "true").lower() not in ("false", "0", "no")
        records = [t for name, t in sorted(self.broker.metadata.topics.items()) if internal or not is_internal(name)]
        views = await self._partition_views(records)
        return web.json_response({"topics": [self._topic_summary(t, views[t.name]) for t in records]})

    async def describe_topic(self, request: web.Request) -> web.Response:
        return web.json_response(await self._topic_detail(self.view.topic(request.match_info["topic"]),
                                                          request.headers.get("Authorization")))

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
        normalised = broker.topics.check_new_topic(name, partitions, replication_factor, configs)
        partitions, replication_factor = broker.topics.resolve_topic_defaults(partitions, replication_factor)
        record = await broker.topics.create_topic(name, partitions, replication_factor, normalised)
        return web.json_response(await self._topic_detail(record), status=201)

    async def delete_topic(self, request: web.Request) -> web.Response:
        record = self.view.topic(request.match_info["topic"])
        if is_internal(record.name):
            raise KafkaError(ErrorCode.invalid_request, f"internal topic {record.name} cannot be deleted")
        await self.broker.topics.delete_topic(record.name)
        return web.json_response({"deleted": record.name})

    async def alter_topic_configs(self, request: web.Request) -> web.Response:
        """Set (value) or remove (null) topic config overrides; others are kept."""
        record = self.view.topic(request.match_info["topic"])
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
        await self.broker.topics.set_topic_configs(record.name, normalised)
        return web.json_response(await self._topic_detail(self.broker.metadata.topics[record.name]))

"""The HTTP API under ``/api/v1``: topics, records and consumer groups as JSON, for curl and the console.

It runs in the broker's event loop and works on the broker's own objects, one module per
resource: topic_routes.py (topics), record_routes.py (produce and consume, reading through
record_reader.py), group_routes.py (consumer groups, at the group coordinator), share_routes.py
(share groups: a queue over HTTP, at the group coordinator too), push_routes.py (push
subscriptions, from the metadata store), broker_health.py (``/broker``: this broker's health,
and every broker's event-loop lag in ``/cluster``) and the ``/cluster`` overview here. In a
cluster every broker answers alike: leaders, replicas and ISR come from the metadata store
(cluster_view.py), and a partition's offsets, size and records from its leader (here, or asked
over Kafka's protocol: peers.py). Errors are
``{"error_code": NAME, "message": ...}`` with an HTTP status (errors.py); request parameters are
checked by params.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from tidelog import __version__
from tidelog.http.broker_health import BrokerHealth
from tidelog.http.cluster_view import ClusterView
from tidelog.http.errors import PREFIX
from tidelog.http.group_routes import GroupRoutes
from tidelog.http.peer_http import PeerHttp
from tidelog.http.peers import PeerClient
from tidelog.http.push_routes import PushRoutes
from tidelog.http.record_reader import RecordReader
from tidelog.http.record_routes import RecordRoutes
from tidelog.http.security_routes import SecurityRoutes
from tidelog.http.share_routes import SharePeers, ShareRoutes
from tidelog.http.topic_routes import TopicRoutes
from tidelog.http.transaction_routes import TransactionRoutes

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["Api"]


class Api:
    """The routes of every resource, bound to one broker; one instance per HTTP server."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.view = ClusterView(broker)
        self.peer_http = PeerHttp(broker)  # the other brokers' HTTP APIs, as this broker's listener serves (http/https)
        self.health = BrokerHealth(broker, self.view, self.peer_http)
        self.peers = PeerClient(broker)
        reader = RecordReader(broker, self.view, self.peers)
        self.topics = TopicRoutes(broker, self.view, self.peers, self.peer_http)
        self.records = RecordRoutes(broker, self.view, self.peers, reader)
        self.groups = GroupRoutes(broker, self.view, reader, self.peer_http)
        self.shares = ShareRoutes(lambda: broker.shares, SharePeers(
            broker.node_id, lambda topic, p: self.view.partition_state(topic, p, self.view.live_brokers())["leader"],
            self.view.http_address, self.peer_http))
        self.transactions = TransactionRoutes(broker, self.view, self.peers)
        self.security = SecurityRoutes(broker)
        self.push = PushRoutes(lambda: broker.push, broker.node_id, lambda: [
            (node_id, self.view.http_address(node_id)) for node_id in self.view.live_brokers() if node_id != broker.node_id],
            self.peer_http)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        topics, records, groups = self.topics, self.records, self.groups
        r.add_get(PREFIX + "/cluster", self.cluster)
        r.add_get(PREFIX + "/broker", self.health.get)
        r.add_get(PREFIX + "/topics", topics.list_topics)
        r.add_post(PREFIX + "/topics", topics.create_topic)
        r.add_get(PREFIX + "/topics/{topic}", topics.describe_topic)
        r.add_get(PREFIX + "/topics/{topic}/delay", topics.describe_delay)
        r.add_delete(PREFIX + "/topics/{topic}", topics.delete_topic)
        r.add_put(PREFIX + "/topics/{topic}/configs", topics.alter_topic_configs)
        r.add_post(PREFIX + "/topics/{topic}/records", records.produce)
        r.add_get(PREFIX + "/topics/{topic}/partitions/{partition}/records", records.consume)
        r.add_get(PREFIX + "/groups", groups.at_coordinator(groups.list_groups))
        r.add_get(PREFIX + "/groups/{group}", groups.at_coordinator(groups.describe_group))
        r.add_delete(PREFIX + "/groups/{group}", groups.at_coordinator(groups.delete_group))
        r.add_post(PREFIX + "/groups/{group}/offsets", groups.at_coordinator(groups.commit_offsets))
        r.add_post(PREFIX + "/groups/{group}/fetch", groups.at_coordinator(groups.group_fetch))
        self.shares.add_routes(r, PREFIX, groups.at_coordinator)  # share groups live with the group coordinator
        r.add_get(PREFIX + "/transactions", self.transactions.list_transactions)
        self.security.add_routes(r, PREFIX)  # users, ACLs, quotas: read-only
        self.push.add_routes(r, PREFIX)  # in the metadata store: every broker answers alike

    async def close(self) -> None:
        self.peers.close()
        await self.peer_http.close()

    async def cluster(self, request: web.Request) -> web.Response:
        broker = self.broker
        metrics = broker.metrics

        def total(counter) -> float:
            return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))

        topics = broker.metadata.topics
        live = self.view.live_brokers()
        controller_id = self.view.controller_id()
        states = [self.view.partition_state(t.name, p, live) for t in topics.values() for p in range(t.partitions)]
        authorization = request.headers.get("Authorization")
        loops, groups = await asyncio.gather(self.health.event_loops(sorted(live), authorization),
                                             self.groups.group_count(authorization))
        return web.json_response({
            "cluster_id": broker.cluster_id,
            "controller_id": controller_id if controller_id in live else None,
            "node_id": broker.node_id,
            "version": __version__,
            "brokers": [{"node_id": node_id, "host": host, "port": port, "rack": rack, "controller": node_id == controller_id,
                         "http_port": broker.http.port if node_id == broker.node_id and broker.http is not None else None,
                         "console": self.peer_http.console(http) if (http := self.view.http_address(node_id)) else None,
                         "event_loop": loops[node_id][0], "event_loop_error": loops[node_id][1],
                         "internal_write_timeouts": loops[node_id][2]}
                        for node_id, (host, port, rack) in sorted(live.items())],
            "started_at_ms": broker.started_at_ms,
            "uptime_ms": int(time.time() * 1000) - broker.started_at_ms,
            "ready": broker.ready,
            "topics": len(topics),
            "partitions": len(states),
            "under_replicated_partitions": sum(s["under_replicated"] for s in states),
            "offline_partitions": sum(s["offline"] for s in states),
            "groups": groups,
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

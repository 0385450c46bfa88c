"""``GET /api/v1/transactions``: every transactional id of the cluster, for curl and the console.

Each broker coordinates the ids of the ``__transaction_state`` partitions it leads: this broker
answers for its own from its coordinator (with the partitions and start of each open
transaction), and asks every other live broker with ListTransactions over Kafka's protocol
(peers.py), as ``tidelog transactions list`` does. A broker that cannot be asked is named in
``unreachable``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from tidelog.protocol.apis import build, request_type
from tidelog.protocol.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from tidelog.http.cluster_view import ClusterView
    from tidelog.http.peers import PeerClient
    from tidelog.server.broker import Broker

__all__ = ["TransactionRoutes"]

LIST_TRANSACTIONS = 66


class TransactionRoutes:
    def __init__(self, broker: "Broker", view: "ClusterView", peers: "PeerClient") -> None:
        self.broker = broker
        self.view = view
        self.peers = peers

    async def list_transactions(self, _request: web.Request) -> web.Response:
        broker = self.broker
        rows, unreachable = [], []
        for node_id in sorted(self.view.live_brokers()):
            if node_id == broker.node_id:
                rows += self._local()
                continue
            try:
                response = await self.peers.request(node_id, LIST_TRANSACTIONS, 1, build(
                    request_type(LIST_TRANSACTIONS, 1), state_filters=(), producer_id_filters=(), duration_filter=-1))
            except KafkaError:
                unreachable.append(node_id)
                continue
            rows += [{"transactional_id": t.transactional_id, "coordinator": node_id, "producer_id": t.producer_id,
                      "state": t.transaction_state, "producer_epoch": None, "timeout_ms": None, "start_time_ms": None,
                      "partitions": []}
                     for t in response.transaction_states]
        rows.sort(key=lambda r: r["transactional_id"])
        return web.json_response({"transactions": rows, "unreachable": unreachable})

    def _local(self) -> list[dict]:
        service = self.broker.transactions
        if service is None:
            return []
        coordinator = service.coordinator
        listed = coordinator.list_transactions()
        if listed.error is not ErrorCode.none:
            return []
        rows = []
        for transactional_id, producer_id, state in listed.transactions:
            d = coordinator.describe(transactional_id)
            rows.append({
                "transactional_id": transactional_id, "coordinator": self.broker.node_id, "producer_id": producer_id,
                "state": state, "producer_epoch": d.producer_epoch if d.error is ErrorCode.none else None,
                "timeout_ms": d.txn_timeout_ms if d.error is ErrorCode.none else None,
                "start_time_ms": d.txn_start_timestamp_ms if d.error is ErrorCode.none and d.txn_start_timestamp_ms >= 0
                else None,
                "partitions": [{"topic": t, "partition": p} for t, ps in d.topics.items() for p in ps],
            })
        return rows

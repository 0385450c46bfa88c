"""Which brokers' followers a leader may add to an ISR (ReplicaManager.may_join_isr), over the
real embedded metadata store: registered, not in controlled shutdown, its log directory online,
and its current registration let back by the controller (KIP-903's eligibility)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tidelog.cluster.metadata import BrokerInfo, EmbeddedMetadataStore
from tidelog.cluster.replica_manager import ReplicaManager
from tidelog.config import BrokerConfig
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager


def test_only_a_registered_online_unfenced_broker_may_join(tmp_path):
    async def main():
        store = EmbeddedMetadataStore(tmp_path / "meta", node_id=1)
        store.brokers = {2: BrokerInfo(2, "127.0.0.1", 9093, epoch=7)}
        manager = ReplicaManager(1, store, LogManager(tmp_path / "logs", LogConfig()), BrokerConfig.load(env={}, overrides={}),
                                 tmp_path)
        assert not manager.may_join_isr(3)  # not registered
        assert not manager.may_join_isr(2)  # registered, not yet let back by the controller
        await store.mark_unfenced({2: 7}, 1)
        assert manager.may_join_isr(2)
        store.offline.add(2)
        assert not manager.may_join_isr(2)  # its log directory went offline: the controller counts it dead
        store.offline.discard(2)
        store.shutting_down.add(2)
        assert not manager.may_join_isr(2)
        store.shutting_down.discard(2)
        assert manager.may_join_isr(2, 7)  # a Fetch v15+ from that registration (ReplicaState's broker epoch)
        assert not manager.may_join_isr(2, 6)  # from an earlier process of the broker (KIP-903)
        store.brokers[2] = replace(store.brokers[2], epoch=9)  # registered again
        assert not manager.may_join_isr(2)

    asyncio.run(main())

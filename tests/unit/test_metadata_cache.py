"""Metadata for every topic from cached encoded topic entries (issue 19, item 4: 10,000
partitions took 130 ms and more a request to build and encode): the bytes are exactly what
encoding the whole response gives, in every version, and follow every change."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from tidelog.cluster.metadata import BrokerInfo, EmbeddedMetadataStore, TopicRecord, new_topic_id
from tidelog.handlers import metadata
from tidelog.handlers.registry import RequestContext
from tidelog.protocol import apis
from tidelog.protocol.wire import RequestHeader
from tidelog.server.connection import encode_response


def answer(store, version: int) -> tuple[bytes, bytes]:
    """(the handler's answer to Metadata for all topics, the whole response encoded directly)."""
    ctx = RequestContext(header=RequestHeader(3, version, 1, "t"), peer="test", flexible=apis.is_flexible(3, version),
                         metadata=store)
    request = apis.build(apis.request_type(3, version), topics=() if version == 0 else None,
                         allow_auto_topic_creation=False, include_topic_authorized_operations=False,
                         include_cluster_authorized_operations=False)
    parts = asyncio.run(metadata.handle(ctx, request))
    module = apis.response_module(3, version)
    expected = metadata._response(module, ctx, [metadata.describe_topic(module, ctx, record)
                                                for record in store.topics.values()])
    return b"".join(parts), encode_response(expected)


@pytest.fixture
def store(tmp_path):
    store = EmbeddedMetadataStore(tmp_path, node_id=1)

    async def fill():
        await store.start("cluster-a")
        await store.register_broker(BrokerInfo(1, "127.0.0.1", 9092, None))
        await store.elect_controller(1)
        for name, partitions in (("a", 3), ("b", 1), ("__consumer_offsets", 2)):
            await store.create_topic(TopicRecord(name, new_topic_id(), partitions))

    asyncio.run(fill())
    return store


@pytest.mark.parametrize("version", range(0, 14))
def test_cached_entries_make_the_same_bytes_as_encoding_the_whole_response(store, version):
    got, expected = answer(store, version)
    assert got == expected
    assert answer(store, version)[0] == expected  # from the cache this time


def test_the_answer_follows_partition_topic_and_broker_changes(store):
    answer(store, 12)
    state = store.partitions[("a", 1)]
    asyncio.run(store.compare_and_set_partition("a", 1, replace(state, leader_epoch=state.leader_epoch + 1, isr=(1,))))
    got, expected = answer(store, 12)
    assert got == expected
    asyncio.run(store.set_partitions("b", 4))
    got, expected = answer(store, 12)
    assert got == expected
    asyncio.run(store.delete_topic("a"))
    got, expected = answer(store, 12)
    assert got == expected
    store.brokers.clear()  # the leader gone: LEADER_NOT_AVAILABLE, offline replicas
    got, expected = answer(store, 12)
    assert got == expected

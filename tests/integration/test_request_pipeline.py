"""The request pipeline of one connection, with a handler made to fail: responses stay in
request order, and a request that cannot be answered (its handler raised, or its response
cannot be encoded) closes the connection before anything pipelined behind it is answered.

A broker runs in this process (a real listener on a loopback port) so that one handler can be
swapped for a failing one: after the fixes of issue 10 no client bytes reach such a failure,
which is exactly why the pipeline must be tested with an injected one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct

import pytest

from tidelog.config import BrokerConfig
from tidelog.handlers.registry import REGISTRY, load_all
from tidelog.protocol import apis
from tidelog.server.broker import Broker

DESCRIBE_CLUSTER = 60


def frame(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test"
    if apis.is_flexible(api_key, version) and api_key != apis.API_VERSIONS_KEY:
        header += b"\x00"
    return struct.pack(">i", len(header) + len(body)) + header + body


async def read_responses(reader: asyncio.StreamReader, count: int = 1 << 30) -> list[int]:
    """Correlation ids of the responses until the broker closes the connection (or ``count``)."""
    ids = []
    while len(ids) < count:
        try:
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            data = await reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return ids
        ids.append(struct.unpack_from(">i", data)[0])
    return ids


@pytest.fixture
def run_with_broker(tmp_path, monkeypatch):
    load_all()

    def run(test):
        async def main():
            broker = Broker(BrokerConfig.load(env={}, overrides={"http.port": "-1"}), tmp_path / "data", port=0)
            await broker.start()
            try:
                await asyncio.wait_for(test(broker), 30)
            finally:
                await broker.stop()

        asyncio.run(main())

    return run


def swap_handler(monkeypatch, api_key: int, handler) -> None:
    monkeypatch.setitem(REGISTRY, api_key, dataclasses.replace(REGISTRY[api_key], handler=handler))


# DescribeCluster v0: include_cluster_authorized_operations=false, no tags.
DESCRIBE_CLUSTER_V0 = b"\x00\x00"


@pytest.mark.parametrize("failure", ["handler raises", "response cannot be encoded"])
def test_nothing_is_answered_after_a_request_that_cannot_be(run_with_broker, monkeypatch, caplog, failure):
    original = REGISTRY[DESCRIBE_CLUSTER].handler

    async def failing(ctx, request):
        await asyncio.sleep(0.05)  # the requests behind it finish first
        if failure == "handler raises":
            raise RuntimeError("injected handler failure")
        response = await original(ctx, request)
        return dataclasses.replace(response, cluster_id=None)  # not nullable: the encoder raises

    swap_handler(monkeypatch, DESCRIBE_CLUSTER, failing)

    async def test(broker):
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(frame(18, 0, 1, b"") + frame(DESCRIBE_CLUSTER, 0, 2, DESCRIBE_CLUSTER_V0)
                     + frame(18, 0, 3, b"") + frame(3, 1, 4, struct.pack(">i", -1)))
        assert await read_responses(reader) == [1]
        writer.close()

    with caplog.at_level(logging.WARNING, logger="tidelog.server.connection"):
        run_with_broker(test)
    if failure == "response cannot be encoded":
        warnings = [r for r in caplog.records if "cannot encode" in r.getMessage()]
        assert warnings and all(r.levelno == logging.WARNING for r in warnings), caplog.text


def slow_describe_cluster(monkeypatch) -> None:
    """DescribeCluster answered 0.1 s late: a slow request that holds back the answers behind it."""
    original = REGISTRY[DESCRIBE_CLUSTER].handler

    async def slow(ctx, request):
        await asyncio.sleep(0.1)
        return await original(ctx, request)

    swap_handler(monkeypatch, DESCRIBE_CLUSTER, slow)


def test_responses_come_back_in_request_order(run_with_broker, monkeypatch):
    """A slow request holds back the answers to faster ones behind it."""
    slow_describe_cluster(monkeypatch)

    async def test(broker):
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(frame(DESCRIBE_CLUSTER, 0, 1, DESCRIBE_CLUSTER_V0) + frame(18, 0, 2, b"") + frame(18, 0, 3, b""))
        assert await read_responses(reader, 3) == [1, 2, 3]
        writer.close()

    run_with_broker(test)


PRODUCE = 0
# Produce v3, acks=1, timeout 1 s, one topic "t" of one partition 0 with no records (never
# appended: the injected handlers below fail before or after their first await).
PRODUCE_V3_ACKS_1 = (struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
                     + struct.pack(">i", 1) + struct.pack(">ii", 0, -1))


@pytest.mark.parametrize("when", ["in its first step", "after its first await"])
def test_nothing_is_answered_after_a_produce_whose_handler_raised(run_with_broker, monkeypatch, when):
    """A Produce's first step runs as its frame is read (connection.py ``_started_now``), not in a
    task: an exception there is held as a task would hold it, and closes the connection once the
    requests before it are answered, before anything pipelined behind it is."""

    async def failing(ctx, body):
        if when == "after its first await":
            await asyncio.sleep(0.05)
        raise RuntimeError("injected produce failure")

    swap_handler(monkeypatch, PRODUCE, failing)

    async def test(broker):
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(frame(18, 0, 1, b"") + frame(PRODUCE, 3, 2, PRODUCE_V3_ACKS_1)
                     + frame(18, 0, 3, b"") + frame(3, 1, 4, struct.pack(">i", -1)))
        assert await read_responses(reader) == [1]
        writer.close()

    run_with_broker(test)


def test_a_produce_answered_in_its_first_step_keeps_its_place_in_line(run_with_broker, monkeypatch):
    """A Produce whose handler returns in its first step (a refusal, acks=0) is done as its frame is
    read; its response is still written after the slow request before it and before the ones behind."""
    slow_describe_cluster(monkeypatch)

    async def test(broker):
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        # Produce v2: Kafka 4 supports v3+, refused at once (UNSUPPORTED_VERSION), before any await.
        writer.write(frame(DESCRIBE_CLUSTER, 0, 1, DESCRIBE_CLUSTER_V0) + frame(PRODUCE, 2, 2, PRODUCE_V3_ACKS_1[2:])
                     + frame(18, 0, 3, b""))
        assert await read_responses(reader, 3) == [1, 2, 3]
        writer.close()

    run_with_broker(test)

"""Brokers of a cluster started together: a client's first requests, sent the moment a broker
serves, see the whole cluster.

A broker loads the metadata from etcd, then registers and stands for controller; whatever
registered in between reaches it through its etcd watch. Until then it knows itself and (from
the lost election) who the controller is, but not the controller's address: had it served, its
Metadata answer would name a controller missing from its broker list, and librdkafka's admin
client waits for that broker to appear (it never asks again): a CreateTopics issued at once
never completed (2 of 11 chaos runs with the test cluster's brokers started side by side).
Kafka's broker serves only once caught up with the metadata and unfenced; so does ours.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka.admin import NewTopic as KafkaPythonNewTopic

from tests.clusterproc import Cluster, start_in_process_broker
from tests.etcdproc import EtcdProcess

WATCH_HELD_S = 1.5  # how long the late broker's watch is held once it has registered


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd") / "member").start()
    yield proc
    proc.kill()


class HoldingEtcdProxy:
    """Forwards a loopback port to etcd for one broker. Holds that broker's lease grant (the
    first call of its registration) until ``registration`` is set, and every byte etcd's watch
    stream sends it until ``watch`` is set: a broker that loaded the metadata before the others
    registered, and whose watch lags behind (a busy loop, a slow etcd)."""

    def __init__(self, etcd_port: int) -> None:
        self.etcd_port = etcd_port
        self.grant_seen = asyncio.Event()
        self.registration = asyncio.Event()
        self.watch = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "HoldingEtcdProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_reader, client_writer) -> None:
        self._tasks.add(asyncio.current_task())
        watching = False
        try:
            etcd_reader, etcd_writer = await asyncio.open_connection("127.0.0.1", self.etcd_port)
        except OSError:
            client_writer.close()
            return

        async def up() -> None:
            nonlocal watching
            while data := await client_reader.read(65536):
                if b"POST /v3/lease/grant" in data and not self.registration.is_set():
                    self.grant_seen.set()
                    await self.registration.wait()
                watching = watching or b"POST /v3/watch" in data
                etcd_writer.write(data)
                await etcd_writer.drain()

        async def down() -> None:
            while data := await etcd_reader.read(65536):
                if watching:
                    await self.watch.wait()
                client_writer.write(data)
                await client_writer.drain()

        pumps = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # stop(): the connection goes
        finally:
            for pump in pumps:
                pump.cancel()
            etcd_writer.close()
            client_writer.close()


def confluent_view(bootstrap: str) -> tuple[list[int], int]:
    """The brokers and controller of a new confluent-kafka client's first Metadata answer."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return sorted(metadata.brokers), metadata.controller_id


def kafka_python_view(bootstrap: str) -> tuple[list[int], int]:
    """The brokers and controller of kafka-python's DescribeCluster (after its bootstrap Metadata)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        cluster = admin.describe_cluster()
        return sorted(b["broker_id"] for b in cluster["brokers"]), cluster["controller_id"]
    finally:
        admin.close()


def create_with_both_clients(bootstrap: str, name: str) -> None:
    """A topic created at once by each client's admin (replication factor 3: every broker)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "debug": "admin,metadata,broker"})
    admin.create_topics([NewTopic(name, 3, 3, config={"min.insync.replicas": "2"})])[name].result(10)
    kp_admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        kp_admin.create_topics([KafkaPythonNewTopic(f"{name}-kp", 3, 3)], timeout_ms=10000)
    finally:
        kp_admin.close()


def test_a_broker_serves_only_once_its_metadata_shows_the_brokers_that_registered_while_it_started(tmp_path, etcd):
    asyncio.run(asyncio.wait_for(_late_broker(tmp_path, etcd), 120))


async def _late_broker(tmp_path, etcd) -> None:
    prefix = f"/start-{uuid.uuid4().hex[:8]}"
    proxy = await HoldingEtcdProxy(int(etcd.endpoint.rsplit(":", 1)[1])).start()
    brokers = []
    late = asyncio.create_task(start_in_process_broker(tmp_path / "broker-3", f"127.0.0.1:{proxy.port}", prefix, 3))
    try:
        await asyncio.wait_for(proxy.grant_seen.wait(), 30)  # broker 3 has loaded the metadata: no broker yet
        for node_id in (1, 2):  # broker 1 is the controller
            brokers.append(await start_in_process_broker(tmp_path / f"broker-{node_id}", etcd.endpoint, prefix, node_id))
        proxy.registration.set()  # broker 3 registers and learns of controller 1; its watch stays held
        await asyncio.wait([late], timeout=WATCH_HELD_S)
        if late.done():
            bootstrap = f"127.0.0.1:{late.result().port}"
            for view in (confluent_view, kafka_python_view):
                known, controller = await asyncio.to_thread(view, bootstrap)
                assert known == [1, 2, 3] and controller in known, \
                    f"{view.__name__}: broker 3 serves, naming brokers {known} and controller {controller}"
        assert not late.done(), "broker 3 served before its etcd watch had shown the brokers registered since it loaded"
        proxy.watch.set()
        broker = await asyncio.wait_for(late, 30)
        brokers.append(broker)
        bootstrap = f"127.0.0.1:{broker.port}"  # this broker alone: the clients' first answer is its
        for view in (confluent_view, kafka_python_view):
            assert await asyncio.to_thread(view, bootstrap) == ([1, 2, 3], 1), view.__name__
        await asyncio.to_thread(create_with_both_clients, bootstrap, "created-through-the-late-broker")
    finally:
        proxy.registration.set()
        proxy.watch.set()
        if not late.done():
            await asyncio.wait([late], timeout=30)
        if late.done() and not late.cancelled() and late.exception() is None and late.result() not in brokers:
            brokers.append(late.result())
        for broker in brokers:
            await broker.stop()
        await proxy.stop()


def test_a_topic_is_created_at_once_on_brokers_started_side_by_side(tmp_path):
    """Three broker processes launched together (as tests/clusterproc.py starts them), a topic
    created by each client the moment the three serve (every cluster test starts so)."""
    began = time.monotonic()
    cluster = Cluster(tmp_path, 3).start()
    try:
        print(f"cluster of 3 started in {time.monotonic() - began:.1f} s")
        try:
            create_with_both_clients(cluster.bootstrap, "at-once")
        except BaseException:
            print(cluster.logs())
            raise
    finally:
        cluster.stop()

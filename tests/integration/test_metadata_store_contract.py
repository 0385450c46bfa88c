"""One contract for both metadata stores: the embedded single-node store and etcd (a real etcd
process on loopback ports). Whatever the broker relies on, both must do."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.etcdproc import EtcdProcess
from tidelog.cluster.metadata import BrokerInfo, EmbeddedMetadataStore, PartitionState, TopicExists, TopicRecord, new_topic_id

NODE = 1


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd") / "member").start()
    yield proc
    proc.kill()


@pytest.fixture(params=["embedded", "etcd"])
def make_store(request, tmp_path):
    """Make (and start) stores that share one backing state: the same data dir, or one etcd prefix."""
    made = []
    prefix = f"/test-{uuid.uuid4().hex[:8]}"

    async def make(node_id: int = NODE):
        if request.param == "embedded":
            store = EmbeddedMetadataStore(tmp_path, node_id)
        else:
            from tidelog.cluster.etcd_store import EtcdMetadataStore

            etcd = request.getfixturevalue("etcd")
            store = EtcdMetadataStore([f"http://{etcd.endpoint}"], prefix, lease_ttl_s=2)
        await store.start()
        made.append(store)
        return store

    make.kind = request.param
    yield make
    # stores are closed by the tests (they own the loop)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def wait_for(condition, timeout_s: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the store")
        await asyncio.sleep(0.02)


def topic(name: str, partitions: int = 2) -> TopicRecord:
    return TopicRecord(name, new_topic_id(), partitions, 1, {"retention.ms": "1000"})


def test_topics_create_read_configs_partitions_delete(make_store):
    async def scenario():
        store = await make_store()
        record = topic("orders")
        await store.create_topic(record, [PartitionState.initial([NODE])] * 2)
        assert store.topics["orders"].topic_id == record.topic_id
        assert store.partitions[("orders", 1)].leader == NODE
        with pytest.raises(TopicExists):
            await store.create_topic(topic("orders"), [PartitionState.initial([NODE])] * 2)
        await store.set_configs("orders", {"retention.ms": "5"})
        await store.set_partitions("orders", 3, [PartitionState.initial([NODE])])
        assert store.topics["orders"].partitions == 3 and ("orders", 2) in store.partitions
        # A second store over the same state sees all of it.
        other = await make_store()
        assert other.cluster_id == store.cluster_id
        assert other.topics["orders"].configs == {"retention.ms": "5"}
        assert other.topics["orders"].partitions == 3
        assert other.partitions[("orders", 2)].isr == (NODE,)
        await store.delete_topic("orders")
        assert "orders" not in store.topics and ("orders", 0) not in store.partitions
        await store.close()
        await other.close()

    run(scenario())


def test_group_configs_set_read_by_another_store_and_removed(make_store):
    async def scenario():
        store = await make_store()
        await store.set_group_configs("workers", {"share.auto.offset.reset": "earliest"})
        assert store.group_configs == {"workers": {"share.auto.offset.reset": "earliest"}}
        other = await make_store()
        await wait_for(lambda: other.group_configs.get("workers") == {"share.auto.offset.reset": "earliest"})
        await store.set_group_configs("workers", {})
        assert "workers" not in store.group_configs
        third = await make_store()
        assert "workers" not in third.group_configs
        for each in (store, other, third):
            await each.close()

    run(scenario())


def test_partition_state_compare_and_set(make_store):
    async def scenario():
        store = await make_store()
        await store.create_topic(topic("cas", 1), [PartitionState.initial([NODE])])
        first = store.partitions[("cas", 0)]
        shrunk = await store.compare_and_set_partition("cas", 0, first.changed(isr=()))
        assert shrunk is not None and shrunk.isr == () and shrunk.partition_epoch == 1
        assert shrunk.version > first.version
        # A writer still holding the old version loses.
        assert await store.compare_and_set_partition("cas", 0, first.changed(leader=-1)) is None
        assert store.partitions[("cas", 0)].leader == NODE
        # A controller epoch that is not the current one is fenced.
        assert await store.elect_controller(NODE)
        assert await store.compare_and_set_partition("cas", 0, shrunk.changed(leader_epoch=1), store.controller_epoch + 7) is None
        done = await store.compare_and_set_partition("cas", 0, shrunk.changed(leader_epoch=1), store.controller_epoch)
        assert done is not None and done.leader_epoch == 1
        await store.close()

    run(scenario())


def test_producer_id_blocks_never_overlap(make_store):
    async def scenario():
        store = await make_store()
        first = await store.allocate_producer_ids(1000)
        second = await store.allocate_producer_ids(1000)
        assert second >= first + 1000
        await store.close()
        again = await make_store()
        assert await again.allocate_producer_ids(10) >= second + 1000
        await again.close()

    run(scenario())


def test_broker_registration_controller_and_notifications(make_store):
    async def scenario():
        store = await make_store()
        seen = []
        store.add_listener(lambda kind, key: seen.append((kind, key)))
        await store.register_broker(BrokerInfo(NODE, "127.0.0.1", 9092, "rack-a"))
        assert store.brokers[NODE].rack == "rack-a"
        assert await store.elect_controller(NODE)
        assert store.controller_id == NODE and store.controller_epoch > 0
        await store.create_topic(topic("watched", 1), [PartitionState.initial([NODE])])
        state = store.partitions[("watched", 0)]
        await store.compare_and_set_partition("watched", 0, state.changed(isr=()))
        await wait_for(lambda: ("partition", ("watched", 0)) in seen and ("topic", "watched") in seen)
        await store.close()

    run(scenario())


def test_etcd_lease_expiry_and_controller_failover(make_store):
    if make_store.kind != "etcd":
        pytest.skip("one node in the embedded store: it is always the live broker and controller")

    async def scenario():
        first = await make_store()
        second = await make_store()
        await first.register_broker(BrokerInfo(1, "127.0.0.1", 1001))
        await second.register_broker(BrokerInfo(2, "127.0.0.1", 1002))
        assert await first.elect_controller(1)
        epoch = first.controller_epoch
        assert not await second.elect_controller(2)
        assert second.controller_id == 1 and second.controller_epoch == epoch
        await wait_for(lambda: set(first.brokers) == {1, 2} and set(second.brokers) == {1, 2})
        # Broker 1 stops renewing its lease (as if paused): its keys vanish within the TTL.
        for task in first._tasks:
            task.cancel()
        await wait_for(lambda: 1 not in second.brokers and second.controller_id == -1, timeout_s=15)
        assert await second.elect_controller(2)
        assert second.controller_epoch > epoch
        # The deposed controller's writes are fenced by its old epoch.
        await second.create_topic(topic("fenced", 1), [PartitionState.initial([2])])
        state = second.partitions[("fenced", 0)]
        assert await first.compare_and_set_partition("fenced", 0, state.changed(leader=-1), epoch) is None
        await second.close()
        first._tasks = []
        await first.client.close()

    run(scenario())


def test_etcd_endpoint_failover(make_store, etcd):
    if make_store.kind != "etcd":
        pytest.skip("etcd only")
    from tidelog.cluster.etcd_store import EtcdMetadataStore

    async def scenario():
        # The first endpoint refuses connections; calls move on to the live one.
        store = EtcdMetadataStore(["http://127.0.0.1:1", f"http://{etcd.endpoint}"], f"/failover-{uuid.uuid4().hex[:6]}", timeout_s=2)
        await store.start()
        assert store.cluster_id
        assert await store.allocate_producer_ids(5) == 0
        await store.close()

    run(scenario())


def test_reassignment_fields_and_shutdown_announcement(make_store):
    """A partition state's adding/removing replicas survive the store; shutdown and offline
    announcements are seen by another store over the same state (etcd) and disappear with the
    broker's lease."""
    async def scenario():
        store = await make_store()
        await store.create_topic(topic("moving", 1), [PartitionState.initial([NODE])])
        state = store.partitions[("moving", 0)]
        moving = state.reassigned((NODE, 7))
        assert moving.adding == (7,) and moving.removing == () and moving.target_replicas == (NODE, 7)
        stored = await store.compare_and_set_partition("moving", 0, moving)
        assert stored is not None and stored.reassigning
        if make_store.kind == "etcd":
            other = await make_store()
            assert other.partitions[("moving", 0)].adding == (7,)
            await store.register_broker(BrokerInfo(NODE, "127.0.0.1", 1001))
            await store.announce_shutdown(NODE)
            await store.announce_offline(NODE)
            await wait_for(lambda: NODE in other.shutting_down and NODE in other.offline)
            await store.close()  # revokes the lease: the announcements go with it
            await wait_for(lambda: NODE not in other.shutting_down and NODE not in other.offline)
            await other.close()
        else:
            await store.announce_shutdown(NODE)
            await store.announce_offline(NODE)
            assert NODE in store.shutting_down and NODE in store.offline
            await store.close()

    run(scenario())


def test_security_records_scram_acls_quotas(make_store):
    """SCRAM credentials, ACLs and client quotas (security/records.py over the store) are kept,
    seen by a second store over the same state, and changed all of one call at once."""
    from tidelog.security.acl import AclBinding
    from tidelog.security.quotas import QuotaEntity
    from tidelog.security.records import SecurityRecords
    from tidelog.security.scram_credentials import ScramCredential, ScramMechanism

    sha256 = ScramMechanism.SCRAM_SHA_256
    binding = AclBinding.from_json({"resource_type": "TOPIC", "name": "orders-", "pattern_type": "PREFIXED",
                                    "principal": "User:alice", "host": "*", "operation": "WRITE",
                                    "permission_type": "ALLOW"})
    alice = QuotaEntity.of({"user": "alice", "client-id": None})

    async def scenario():
        store = await make_store()
        changes: list = []
        store.add_listener(lambda kind, key: changes.append((kind, key)))
        records = SecurityRecords(store)
        credential = ScramCredential.from_password(sha256, "secret", 4096)
        await records.alter_scram_credentials({("a/lice", sha256): credential}, [])
        await records.create_acls([binding])
        await records.alter_client_quotas({alice: {"producer_byte_rate": 1024.0}})
        assert ("security", "scram") in changes and ("security", "acls") in changes
        other = SecurityRecords(await make_store())
        if make_store.kind == "etcd":
            await wait_for(lambda: other.client_quotas())
        assert other.scram_credential("a/lice", sha256) == credential
        assert other.scram_credentials() == {"a/lice": {sha256: credential}}
        assert list(other.acl_bindings()) == [binding]
        assert other.client_quotas() == {alice: {"producer_byte_rate": 1024.0}}
        await records.alter_scram_credentials({}, [("a/lice", sha256)])
        await records.delete_acls([binding])
        await records.alter_client_quotas({alice: {"producer_byte_rate": None}})
        assert records.scram_credential("a/lice", sha256) is None and not records.acl_bindings()
        assert records.client_quotas() == {}
        await store.close()
        await other.store.close()

    run(scenario())

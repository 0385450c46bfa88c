"""A broker that registers again joins no ISR before the controller has fenced that registration
and let it back (Kafka: INELIGIBLE_REPLICA, KIP-903). Three real brokers (one etcd): the
partition's follower is SIGKILLed and restarted while the controller, a third broker, is SIGSTOPped,
so the controller's fencing pass cannot run. The leader sees the restarted follower caught up; it
must not write it into the ISR (the controller's pass would take it out again: one more fall below
min.insync.replicas). Once the controller runs again, the follower joins.
"""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.fault.test_acks_isr_shortfall import _metric

pytestmark = pytest.mark.slow

TOPIC = "eligible"
PARTITIONS = 6  # replication factor 2 over three brokers: some partition has no replica on the controller
REFUSALS = "tidelog_isr_join_refusals_total"
EXPANDS = "tidelog_isr_expands_total"


def _etcd_kv(cluster: Cluster, key: str) -> dict | None:
    """etcd's key-value record of ``key`` (read from etcd itself: no broker, paused or not, in the way)."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(f"http://{cluster.etcd.endpoint}/v3/kv/range", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.loads(response.read()).get("kvs", [])
    return kvs[0] if kvs else None


def _etcd_get(cluster: Cluster, key: str) -> dict | None:
    """The stored JSON under ``key``."""
    kv = _etcd_kv(cluster, key)
    return json.loads(base64.b64decode(kv["value"])) if kv else None


def test_a_restarted_follower_joins_the_isr_only_after_the_controller_let_it_back(tmp_path):
    # A long session: the SIGSTOPped controller keeps its lease (and its office) throughout.
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "broker.session.timeout.ms": "20000"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        controller_id = admin.describe_cluster().result(10).controller.id
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 2, config={"min.insync.replicas": "2"})])[TOPIC].result(10)
        state = lambda i: _etcd_get(cluster, f"/tidelog/partitions/{TOPIC}/{i}") or {}  # noqa: E731
        wait_until(lambda: all(len(state(i).get("isr", ())) == 2 for i in range(PARTITIONS)), 30, message="full ISRs")
        # A partition the controller holds no replica of: its leader and follower are the other two.
        index = next(i for i in range(PARTITIONS) if controller_id not in state(i)["replicas"])
        leader_id = state(index)["leader"]
        follower_id = next(r for r in state(index)["replicas"] if r != leader_id)
        isr = lambda: state(index).get("isr")  # noqa: E731
        leader, follower, controller = (cluster.brokers[i] for i in (leader_id, follower_id, controller_id))

        follower.kill()
        wait_until(lambda: isr() == [leader_id], 30, message="the leader shrinking the ISR to itself")
        expands = _metric(leader, EXPANDS)
        controller.pause()
        try:
            follower.start()  # registers again: a new broker epoch the paused controller has not fenced
            wait_until(lambda: _metric(leader, REFUSALS) > 0 or follower_id in (isr() or []), 30,
                       message="the leader refusing the restarted follower, or adding it")
            assert isr() == [leader_id], "the leader wrote a registration the controller has not fenced into the ISR"
            assert _metric(leader, EXPANDS) == expands
        finally:
            controller.resume()
        wait_until(lambda: follower_id in isr(), 30, message="the follower joining once the controller let it back")
        unfenced = _etcd_get(cluster, f"/tidelog/unfenced/{follower_id}")
        assert unfenced is not None and unfenced["epoch"] > 0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_the_controller_forgets_the_unfenced_mark_of_a_broker_that_is_gone(tmp_path):
    """``unfenced/<id>`` names a registration; once that registration is gone (the broker's lease
    lapsed: SIGKILLed here, and not restarted) the controller deletes the key, so the store does not
    keep one per broker that ever joined. A broker that comes back registers anew and is let back
    under its new epoch."""
    cluster = Cluster(tmp_path, 3, {"broker.session.timeout.ms": "2000"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        controller_id = admin.describe_cluster().result(10).controller.id
        wait_until(lambda: all(_etcd_get(cluster, f"/tidelog/unfenced/{i}") for i in cluster.brokers), 30,
                   message="every registration let back")
        gone_id = next(i for i in cluster.brokers if i != controller_id)
        cluster.brokers[gone_id].kill()
        wait_until(lambda: _etcd_get(cluster, f"/tidelog/brokers/{gone_id}") is None, 30,
                   message="the killed broker's registration lapsing")
        wait_until(lambda: _etcd_get(cluster, f"/tidelog/unfenced/{gone_id}") is None, 15,
                   message="the controller deleting the killed broker's unfenced mark")
        assert all(_etcd_get(cluster, f"/tidelog/unfenced/{i}") for i in cluster.brokers if i != gone_id)
        cluster.brokers[gone_id].start()  # back: let back under its new registration
        epoch = lambda: int((_etcd_kv(cluster, f"/tidelog/brokers/{gone_id}") or {}).get("mod_revision", 0))  # noqa: E731
        wait_until(lambda: epoch()
                   and (_etcd_get(cluster, f"/tidelog/unfenced/{gone_id}") or {}).get("epoch") == epoch(), 30,
                   message="the restarted broker let back under its new registration")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def _replica_fetch(broker, topic_id: str, index: int, leader_epoch: int, offset: int, replica_id: int,
                   broker_epoch: int) -> int:
    """One Fetch v15 as broker ``replica_id``'s follower would send it, with ReplicaState's broker
    epoch (KIP-903); the partition's error code."""
    import asyncio
    import uuid
    from datetime import timedelta

    from kio.schema.fetch.v15 import request as fetch

    from tidelog.cluster.broker_channel import BrokerChannel

    async def ask() -> int:
        channel = BrokerChannel("127.0.0.1", broker.port, f"tidelog-replica-{replica_id}")
        try:
            response = await channel.request(1, 15, fetch.FetchRequest(
                replica_state=fetch.ReplicaState(replica_id=replica_id, replica_epoch=broker_epoch),
                max_wait=timedelta(0), min_bytes=0, session_id=0, session_epoch=-1,
                topics=(fetch.FetchTopic(topic_id=uuid.UUID(topic_id), partitions=(fetch.FetchPartition(
                    partition=index, current_leader_epoch=leader_epoch, fetch_offset=offset,
                    partition_max_bytes=1 << 20),)),), forgotten_topics_data=()), 10)
            return response.responses[0].partitions[0].error_code
        finally:
            channel.close()

    return asyncio.run(ask())


def test_a_fetch_from_an_earlier_registration_of_a_broker_does_not_put_it_in_the_isr(tmp_path):
    """KIP-903: a follower's Fetch (v15+) carries its broker epoch (ReplicaState); the leader lets
    a caught-up follower join the ISR only if that epoch is its broker's current registration.
    A fetch from an earlier process of the broker (a restart that lost its log) that arrives
    after the new registration was let back must not count. Three brokers on etcd: the follower
    SIGSTOPped (its registration kept: a long session) until the leader takes it out of the ISR;
    then Fetches at the log end in its name: with a past broker epoch refused, with its current
    one it joins."""
    cluster = Cluster(tmp_path, 3, {"http.port": "0", "broker.session.timeout.ms": "30000",
                                    "replica.lag.time.max.ms": "1000"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(10)
        state = lambda: _etcd_get(cluster, f"/tidelog/partitions/{TOPIC}/0") or {}  # noqa: E731
        wait_until(lambda: len(state().get("isr", ())) == 3, 30, message="a full ISR")
        leader_id = state()["leader"]
        follower_id = next(r for r in state()["replicas"] if r != leader_id)
        leader, follower = cluster.brokers[leader_id], cluster.brokers[follower_id]
        topic_id = _etcd_get(cluster, f"/tidelog/topics/{TOPIC}")["topic_id"]
        registration = int(_etcd_kv(cluster, f"/tidelog/brokers/{follower_id}")["mod_revision"])
        assert (_etcd_get(cluster, f"/tidelog/unfenced/{follower_id}") or {}).get("epoch") == registration
        follower.pause()
        try:
            wait_until(lambda: follower_id not in state()["isr"], 30, message="the leader taking the paused follower out")
            refusals = _metric(leader, REFUSALS)
            error = _replica_fetch(leader, topic_id, 0, state()["leader_epoch"], 0, follower_id, registration - 1)
            assert error == 0
            wait_until(lambda: _metric(leader, REFUSALS) > refusals or follower_id in state()["isr"], 10,
                       message="the leader refusing the fetch of a past registration, or adding it")
            assert follower_id not in state()["isr"], "a fetch from a past registration put the broker in the ISR"
            assert _replica_fetch(leader, topic_id, 0, state()["leader_epoch"], 0, follower_id, registration) == 0
            wait_until(lambda: follower_id in state()["isr"], 10, message="the current registration's fetch joining")
        finally:
            follower.resume()
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()

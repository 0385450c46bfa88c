"""A broker whose loop stalled past a group timer (here: SIGSTOP) must read the requests waiting
in its sockets before the timer acts: a JoinGroup, SyncGroup or revoking heartbeat sent in time
keeps its member. The timer twins of tests/fault/test_group_session_stall.py (the session timer;
tidelog/session_timer.py says why a loop runs its due timers first):

- KIP-394's pending member (a JoinGroup with the id MEMBER_ID_REQUIRED gave it, within the
  session timeout);
- the classic join phase (``_complete_join`` at the rebalance timeout: members not rejoined are
  removed);
- the classic sync phase (``_on_sync_timeout``: members whose SyncGroup did not come are removed);
- KIP-848's rebalance timeout (a member that did not revoke in time is removed).

Each failed before (the member's request answered UNKNOWN_MEMBER_ID: it was removed first).

The requests are raw Kafka requests on one connection a member (kio, as a client sends them):
no client lets a test choose when its JoinGroup or revocation goes out, and the stop must fall
between the request and the timer's deadline. The clients' own behaviour over a stall is
test_group_session_stall.py's."""

from __future__ import annotations

import datetime
import io
import json
import signal
import socket
import struct
import time
import urllib.request

import pytest
from kio.schema.consumer_group_heartbeat.v0 import request as cgh
from kio.schema.join_group.v5 import request as join
from kio.schema.metadata.v12 import request as metadata
from kio.serial import entity_reader, entity_writer
from kio.schema.sync_group.v3 import request as sync

from tests.brokerproc import wait_until
from tidelog.protocol.apis import load_request_schema, load_response_schema

pytestmark = pytest.mark.slow

# The timers' lengths leave seconds between arming and the stop (an HTTP poll, a SyncGroup's
# write at load); the stop outlasts them by 1.5 s.
REBALANCE_MS = 3000
SESSION_MS = 20000  # longer than the test's stops: only the timer under test can act
STOP_S = 4.5  # longer than REBALANCE_MS and a pending member's session, PENDING_SESSION_MS
PENDING_SESSION_MS = 3000
SETTINGS = {
    "group.initial.rebalance.delay.ms": "100",
    "group.min.session.timeout.ms": "1000",
    "num.partitions": "2",
}
MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID = 79, 25
JOIN, SYNC, METADATA, HEARTBEAT = 11, 14, 3, 68
FLEXIBLE = {JOIN: False, SYNC: False, METADATA: True, HEARTBEAT: True}


class Connection:
    """One member's connection: ``send`` writes a request, ``answer`` reads its response (a
    request can go out while the broker is stopped and be answered after)."""

    def __init__(self, broker) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=30)
        self.correlation = 0
        self.sent: list[tuple[int, int, int]] = []

    def send(self, api_key: int, version: int, body) -> None:
        out = io.BytesIO()
        entity_writer(load_request_schema(api_key, version))(out, body)
        self.correlation += 1
        header = struct.pack(">hhih", api_key, version, self.correlation, 6) + b"member"
        frame = header + (b"\x00" if FLEXIBLE[api_key] else b"") + out.getvalue()
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        self.sent.append((api_key, version, self.correlation))

    def answer(self):
        api_key, version, correlation = self.sent.pop(0)
        data = self._read(struct.unpack(">i", self._read(4))[0])
        assert struct.unpack_from(">i", data)[0] == correlation
        start = 5 if FLEXIBLE[api_key] else 4
        return entity_reader(load_response_schema(api_key, version))(memoryview(data), start)[0]

    def ask(self, api_key: int, version: int, body):
        self.send(api_key, version, body)
        return self.answer()

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def join_request(group: str, member_id: str, session_ms: int = SESSION_MS):
    return join.JoinGroupRequest(
        group_id=group, session_timeout=datetime.timedelta(milliseconds=session_ms),
        rebalance_timeout=datetime.timedelta(milliseconds=REBALANCE_MS), member_id=member_id, group_instance_id=None,
        protocol_type="consumer", protocols=(join.JoinGroupRequestProtocol(name="range", metadata=b"m"),))


def sync_request(group: str, generation: int, member_id: str, assignments: dict[str, bytes]):
    return sync.SyncGroupRequest(group_id=group, generation_id=generation, member_id=member_id, group_instance_id=None,
                                 assignments=tuple(sync.SyncGroupRequestAssignment(member_id=m, assignment=a)
                                                   for m, a in assignments.items()))


def group_state(broker, group: str) -> str:
    url = f"http://127.0.0.1:{broker.metrics_port}/api/v1/groups/{group}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())["state"].lower()


def stalled(broker, send) -> None:
    """Stop the broker, ``send()`` the request in time, resume it once the timer is past due."""
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        send()
        time.sleep(STOP_S)
    finally:
        broker.proc.send_signal(signal.SIGCONT)


def member_id_of(conn: Connection, group: str, session_ms: int = SESSION_MS) -> str:
    first = conn.ask(JOIN, 5, join_request(group, "", session_ms))
    assert first.error_code == MEMBER_ID_REQUIRED, first
    return first.member_id


def stable_pair(broker, group: str) -> tuple[Connection, Connection, dict]:
    """Two members of a stable classic group; their ids by connection and the generation."""
    a, b = Connection(broker), Connection(broker)
    ids = {a: member_id_of(a, group), b: member_id_of(b, group)}
    for conn in (a, b):
        conn.send(JOIN, 5, join_request(group, ids[conn]))
    joined = {conn: conn.answer() for conn in (a, b)}
    assert all(j.error_code == 0 for j in joined.values()), joined
    generation = joined[a].generation_id
    leader = next(conn for conn, j in joined.items() if j.leader == ids[conn])
    for conn in (a, b):
        assignments = {m: b"x" for m in ids.values()} if conn is leader else {}
        conn.send(SYNC, 3, sync_request(group, generation, ids[conn], assignments))
    synced = [conn.answer() for conn in (a, b)]
    assert all(s.error_code == 0 for s in synced), synced
    return a, b, {"ids": ids, "generation": generation}


@pytest.mark.timeout(120)
def test_a_join_with_the_given_member_id_sent_in_time_keeps_the_pending_member(broker_factory):
    broker = broker_factory(SETTINGS)
    conn = Connection(broker)
    try:
        member_id = member_id_of(conn, "pending", PENDING_SESSION_MS)
        stalled(broker, lambda: conn.send(JOIN, 5, join_request("pending", member_id, PENDING_SESSION_MS)))
        joined = conn.answer()
        assert joined.error_code == 0 and joined.member_id == member_id, \
            f"the pending member was expired with its JoinGroup waiting: {joined}"
        assert "pending member" not in broker.log()
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_a_join_and_a_sync_sent_in_time_keep_the_member(broker_factory):
    """The join phase, then the sync phase of the same rebalance."""
    broker = broker_factory(SETTINGS)
    a, b, formed = stable_pair(broker, "joiners")
    ids = formed["ids"]
    try:
        a.send(JOIN, 5, join_request("joiners", ids[a]))  # a rebalance: b has REBALANCE_MS to rejoin
        wait_until(lambda: group_state(broker, "joiners") == "preparingrebalance", 10, message="the rebalance")
        stalled(broker, lambda: b.send(JOIN, 5, join_request("joiners", ids[b])))
        joined = {conn: conn.answer() for conn in (a, b)}
        assert joined[b].error_code == 0, f"the member was removed with its JoinGroup waiting: {joined[b]}"
        generation = joined[a].generation_id
        assert generation == formed["generation"] + 1 and joined[b].generation_id == generation, joined
        assert "did not rejoin in time" not in broker.log()

        # The sync phase: the leader syncs at once, the other member during a stop past REBALANCE_MS.
        leader = next(conn for conn, j in joined.items() if j.leader == ids[conn])
        other = b if leader is a else a
        synced = leader.ask(SYNC, 3, sync_request("joiners", generation, ids[leader], {m: b"y" for m in ids.values()}))
        assert synced.error_code == 0, synced
        stalled(broker, lambda: other.send(SYNC, 3, sync_request("joiners", generation, ids[other], {})))
        synced = other.answer()
        assert synced.error_code == 0 and synced.assignment == b"y", \
            f"the member was removed with its SyncGroup waiting: {synced}"
        assert "did not sync in time" not in broker.log()
    finally:
        a.close()
        b.close()


def heartbeat(group: str, member_id: str, epoch: int, topic: str | None = None, owned=None):
    return cgh.ConsumerGroupHeartbeatRequest(
        group_id=group, member_id=member_id, member_epoch=epoch, instance_id=None, rack_id=None,
        rebalance_timeout=datetime.timedelta(milliseconds=REBALANCE_MS),
        subscribed_topic_names=(topic,) if topic is not None else None, server_assignor=None,
        topic_partitions=None if owned is None else tuple(
            cgh.TopicPartitions(topic_id=t, partitions=tuple(sorted(ps))) for t, ps in owned.items()))


def owned_of(response) -> dict:
    return {tp.topic_id: set(tp.partitions) for tp in response.assignment.topic_partitions}


@pytest.mark.timeout(120)
def test_a_revocation_sent_in_time_keeps_the_kip848_member(broker_factory):
    broker = broker_factory(SETTINGS)
    a, b = Connection(broker), Connection(broker)
    try:
        a.ask(METADATA, 12, metadata.MetadataRequest(
            topics=(metadata.MetadataRequestTopic(topic_id=None, name="revoked"),), allow_auto_topic_creation=True,
            include_topic_authorized_operations=False))  # 2 partitions (num.partitions)
        first = a.ask(HEARTBEAT, 0, heartbeat("revokers", "", 0, "revoked", {}))
        assert first.error_code == 0, first
        a_id, epoch = first.member_id, first.member_epoch

        def settled(conn, member_id, epoch, owned):  # heartbeats until it is given both partitions
            response = conn.ask(HEARTBEAT, 0, heartbeat("revokers", member_id, epoch, owned=owned))
            assert response.error_code == 0, response
            return response

        response = first
        deadline = time.monotonic() + 15
        while response.assignment is None or sum(map(len, owned_of(response).values())) < 2:
            assert time.monotonic() < deadline, response
            time.sleep(0.1)
            response = settled(a, a_id, epoch, None)
            epoch = response.member_epoch
        held = owned_of(response)
        settled(a, a_id, epoch, held)
        joined = b.ask(HEARTBEAT, 0, heartbeat("revokers", "", 0, "revoked", {}))
        assert joined.error_code == 0, joined
        revoke = settled(a, a_id, epoch, held)  # told to keep one partition: the other is revoked
        kept = owned_of(revoke)
        assert sum(map(len, kept.values())) == 1, revoke
        # It revokes in time, during a stop past its rebalance timeout.
        stalled(broker, lambda: a.send(HEARTBEAT, 0, heartbeat("revokers", a_id, revoke.member_epoch, owned=kept)))
        revoked = a.answer()
        assert revoked.error_code == 0, f"the member was removed with its revocation waiting: {revoked}"
        assert "did not revoke its partitions" not in broker.log()
    finally:
        a.close()
        b.close()

"""The HTTP API's share groups: an SQS-shaped queue over KIP-932 share groups, and their description.

An HTTP consumer is an ordinary member of the share group, as a Kafka ShareConsumer is:

- ``POST /share-groups/{g}/receive {topic, member_id?, max_records, timeout_ms}`` is the member's
  heartbeat (the ShareGroupCoordinator's, as ShareGroupHeartbeat: epoch 0 the first time, with the
  topic as its subscription; its current epoch afterwards), then an acquisition of up to
  ``max_records`` records (record_limit mode) from the partitions the SimpleAssignor gave it,
  waiting up to ``timeout_ms`` for some. Each record comes with its delivery count and a receipt
  handle ``topic/partition/offset``; it is locked for the member for the group's
  ``share.record.lock.duration.ms`` (answered as ``lock_timeout_ms``). Without ``member_id`` the
  broker makes one (a UUID) and answers it: the client passes it on from then on.
- ``POST /share-groups/{g}/ack|release|reject|renew {member_id, receipts}`` acknowledge records
  (ShareAcknowledge's ACCEPT, RELEASE, REJECT, RENEW); ``release`` takes ``delay_ms`` (the record
  is Available again only after it; kept in memory, so a restart makes it Available at once).
  Each receipt succeeds or fails on its own (``INVALID_RECORD_STATE``: not locked by this member
  any more, its lock ran out).
- ``DELETE /share-groups/{g}/members/{m}`` leaves the group (heartbeat epoch -1): the records it
  holds become Available without counting the interrupted delivery.

Every call of a member is its heartbeat; a member silent for ``share.session.timeout.ms`` is
removed by the coordinator's session timer and its records are released (their delivery counted),
and a lock that runs out makes its record Available again, both exactly as for Kafka members.
A removed member's acknowledgements are 409 UNKNOWN_MEMBER_ID (its records went back); its next
receive joins the group again.

In a cluster the routes are answered at the group coordinator (api.py wraps them); the records of
share-partitions another broker leads are acquired and acknowledged there, through its HTTP API
(SharePeers and the internal ``.../partitions/{topic}/{partition}/acquire|acknowledge`` routes).

``GET /share-groups`` and ``GET /share-groups/{g}`` describe groups: members with assignments and
held records, per share-partition the start offset, lag, records by state, delivery counts and
in-flight runs, and the group's counters (acknowledged, released, dead-lettered, ...).
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import Counter
from urllib.parse import quote
from typing import Callable, Iterable, Mapping, Protocol

import aiohttp
from aiohttp import web

from tidelog.cluster.metadata import TopicRecord
from tidelog.http.auth import may
from tidelog.http.codec import TIMESTAMP_TYPES, record_to_json
from tidelog.http.errors import PREFIX, bad_request
from tidelog.http.group_routes import FORWARDED_HEADER
from tidelog.http.params import MAX_LIMIT, MAX_TIMEOUT_MS, body_int, json_body
from tidelog.http.peer_http import PeerHttp
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BATCH_HEADER_SIZE, iter_records, parse_batch_header
from tidelog.protocol.topics import is_internal
from tidelog.queues.in_flight import RecordState
from tidelog.queues.manager import ShareManager
from tidelog.queues.share_group import ShareGroup, ShareGroupCoordinator, TopicInfo
from tidelog.queues.share_partition import AckBatch, AcknowledgeType, AcquireMode
from tidelog.queues.state_records import ShareStateKey
from tidelog.security.acl import AclOperation, ResourceType

logger = logging.getLogger(__name__)

__all__ = ["SharePeers", "ShareGroups", "ShareRoutes", "parse_receipt", "receipt"]

DEFAULT_RECEIVE = 10  # records a receive answers without max_records (SQS answers 1; Kafka's 500 is too many for JSON)
MAX_READ_BYTES = 4 * 1024 * 1024  # a partition's log read per acquisition
MAX_RECEIPTS = 1000
MAX_RELEASE_DELAY_MS = 12 * 3600 * 1000  # as SQS's longest visibility timeout
MAX_RUNS_SHOWN = 200  # in-flight runs a share-partition's description lists
HTTP_CLIENT_ID = "tidelog-http"
REMOTE_POLL_S = 0.25  # a receive waiting on partitions led by another broker asks them again this often
PEER_TIMEOUT_S = 30
_MEMBER_ID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII without spaces
_ACK_TYPES = {"ack": AcknowledgeType.ACCEPT, "release": AcknowledgeType.RELEASE, "reject": AcknowledgeType.REJECT,
              "renew": AcknowledgeType.RENEW}


class ShareGroups(Protocol):
    """What the routes use of the broker's share groups (queues/share_groups.py)."""

    membership: ShareGroupCoordinator

    def manager_or_error(self) -> ShareManager:
        """The ShareManager; KafkaError COORDINATOR_NOT_AVAILABLE while the state is not loaded here."""

    async def ensure_loaded(self) -> ShareManager:
        """The ShareManager, creating ``__share_group_state`` on first use and waiting for its load."""

    def topics_by_name(self) -> Mapping[str, TopicRecord]: ...

    @property
    def loaded(self) -> bool: ...

    async def catch_up(self) -> None:
        """Replay what ``__share_group_state`` got from other brokers (the leaders of share-partitions)."""

    def topics_info(self) -> dict[str, TopicInfo]: ...

    def group(self, group_id: str) -> ShareGroup | None:
        """A live group, or an Empty one known only by its share-partition state; None if neither."""

    def list_groups(self) -> list[ShareGroup]: ...

    async def delete_group(self, group_id: str) -> ErrorCode: ...

    async def wait_for_records(self, group_id: str, partitions: Iterable[tuple[uuid.UUID, int]], timeout_s: float) -> None:
        """Until new records in one of the partitions' logs or records available again, or the timeout."""

    def group_counts(self, group_id: str) -> Mapping[str, int]:
        """The group's totals since the broker started: acquired, acknowledged, released, rejected,
        renewed, archived, redelivered, lock_expired, dead_lettered records."""

    def queue_group_configs(self, group_id: str) -> Mapping[str, object]:
        """The group's tidelog.* configs in force (issue 14)."""

    def queue_view(self, key: ShareStateKey) -> dict:
        """A share-partition's tidelog.* settings, Available records by priority, delayed ones."""


class SharePeers:
    """Share-partitions whose topic-partition another broker leads (a cluster), reached through that
    broker's HTTP API: the internal ``.../partitions/{topic}/{partition}/acquire|acknowledge``
    routes, answered only for a request another broker forwarded (FORWARDED_HEADER).
    ``leader(topic, partition)`` is the live leader's node id or None; ``http_address(node_id)``."""

    def __init__(self, node_id: int, leader: Callable[[str, int], int | None],
                 http_address: Callable[[int], str | None], peer_http: PeerHttp) -> None:
        self.node_id = node_id
        self._leader = leader
        self._http_address = http_address
        self.peer_http = peer_http

    def remote(self, topic: str, partition: int) -> str | None:
        """The HTTP address of the partition's leader when that is another broker; None for here."""
        leader = self._leader(topic, partition)
        if leader is None or leader == self.node_id:
            return None
        address = self._http_address(leader)
        if address is None:
            raise KafkaError(ErrorCode.not_leader_or_follower, f"broker {leader} leads {topic}-{partition} and serves no HTTP")
        return address

    async def post(self, address: str, path: str, body: dict, authorization: str | None = None) -> dict:
        """POST to a leader's internal route, as the caller (its Authorization header, when it sent one)."""
        headers = {FORWARDED_HEADER: str(self.node_id), **({"Authorization": authorization} if authorization else {})}
        try:
            async with self.peer_http.request("share", "POST", address, path, PEER_TIMEOUT_S, json=body,
                                              headers=headers) as response:
                answer = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            raise KafkaError(ErrorCode.network_exception,
                             f"the partition leader's HTTP API at {address} did not answer: {e or type(e).__name__}") from None
        if response.status != 200:
            code = getattr(ErrorCode, str(answer.get("error_code", "")).lower(), ErrorCode.unknown_server_error)
            raise KafkaError(code, answer.get("message", "the partition leader refused"))
        return answer


def receipt(topic: str, partition: int, offset: int) -> str:
    """A record's receipt handle (topic names have no '/')."""
    return f"{topic}/{partition}/{offset}"


def parse_receipt(text) -> tuple[str, int, int]:
    """(topic, partition, offset) of a receipt handle; INVALID_REQUEST when it is not one."""
    if isinstance(text, str):
        topic, _, rest = text.partition("/")
        partition, _, offset = rest.partition("/")
        if topic and partition.isdigit() and offset.isdigit():
            return topic, int(partition), int(offset)
    raise bad_request(f"a receipt is TOPIC/PARTITION/OFFSET, got {text!r}")


class ShareRoutes:
    """The share-group routes over the broker's share groups (the ShareManager and the membership).
    ``shares()`` gives them; None while the broker starts (the routes answer BROKER_NOT_AVAILABLE)."""

    def __init__(self, shares: Callable[[], ShareGroups | None], peers: SharePeers | None = None) -> None:
        self._shares = shares
        self.peers = peers
        self._rotation: dict[tuple[str, str], int] = {}  # (group, member) -> where its next receive starts

    def add_routes(self, router: web.UrlDispatcher, prefix: str, wrap: Callable = lambda handler: handler) -> None:
        """Register the routes, each wrapped by ``wrap`` (in a cluster: answered at the group coordinator)."""
        base = prefix + "/share-groups"
        router.add_get(base, wrap(self.list_groups))
        router.add_get(base + "/{group}", wrap(self.describe_group))
        router.add_delete(base + "/{group}", wrap(self.delete_group))
        router.add_post(base + "/{group}/receive", wrap(self.receive))
        for action in _ACK_TYPES:
            router.add_post(f"{base}/{{group}}/{action}", wrap(self.acknowledge))
        router.add_delete(base + "/{group}/members/{member}", wrap(self.leave))
        # between brokers: at the leader of a share-partition (not wrapped: never forwarded again)
        router.add_post(base + "/{group}/partitions/{topic}/{partition}/acquire", self.acquire_here)
        router.add_post(base + "/{group}/partitions/{topic}/{partition}/acknowledge", self.acknowledge_here)

    @property
    def shares(self) -> ShareGroups:
        shares = self._shares()
        if shares is None:
            raise KafkaError(ErrorCode.broker_not_available, "the broker is starting: share groups are not loaded yet")
        return shares

    def topics(self) -> Mapping[str, TopicRecord]:
        return self.shares.topics_by_name()

    # --- names and ids ----------------------------------------------------------------------
    def _topic_names(self) -> dict[uuid.UUID, str]:
        return {t.topic_id: name for name, t in self.topics().items()}

    def _topic(self, name) -> TopicRecord:
        if not isinstance(name, str) or not name:
            raise bad_request("topic (a topic name) is required")
        record = self.topics().get(name)
        if record is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
        if is_internal(name):
            raise KafkaError(ErrorCode.invalid_topic_exception, f"{name} is internal: share groups do not read it")
        return record

    @staticmethod
    def _member_id(value) -> str:
        if not isinstance(value, str) or not _MEMBER_ID.fullmatch(value):
            raise bad_request("member_id must be 1-255 printable ASCII characters without spaces")
        return value

    # --- membership -----------------------------------------------------------------------------
    async def _heartbeat(self, request: web.Request, group_id: str, member_id: str, topic: str | None,
                         client_id: str) -> None:
        """The member's heartbeat; joining (epoch 0) when the group does not know it, subscribing to
        ``topic`` when it is not yet in its subscription."""
        membership = self.shares.membership
        group = membership.groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if member is None:
            if topic is None:
                raise KafkaError(ErrorCode.unknown_member_id,
                                 f"{member_id} is not a member of share group {group_id!r} (any more): receive to join")
            epoch, subscription = 0, [topic]
        else:
            epoch = member.member_epoch
            subscription = None if topic is None or topic in member.subscribed_topic_names else \
                [*member.subscribed_topic_names, topic]
        result = await membership.heartbeat(group_id, member_id, epoch, subscribed_topic_names=subscription,
                                            client_id=client_id, client_host=request.remote or "",
                                            topics=self.shares.topics_info())
        if result.error is not ErrorCode.none:
            raise KafkaError(result.error, result.message or result.error.name)

    def _assigned(self, group_id: str, member_id: str, topic_id: uuid.UUID) -> list[int]:
        group = self.shares.membership.groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        return sorted(member.assigned.get(topic_id, ())) if member is not None else []

    # --- receive --------------------------------------------------------------------------------
    async def receive(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        body = await json_body(request)
        record = self._topic(body.get("topic"))
        if not may(request, AclOperation.READ, ResourceType.TOPIC, record.name):
            raise KafkaError(ErrorCode.topic_authorization_failed, f"no READ on topic {record.name}")
        member_id = self._member_id(body["member_id"]) if body.get("member_id") is not None else str(uuid.uuid4())
        client_id = body.get("client_id", HTTP_CLIENT_ID)
        if not isinstance(client_id, str):
            raise bad_request("client_id must be a string")
        max_records = body_int(body, "max_records", DEFAULT_RECEIVE, minimum=1, maximum=MAX_LIMIT)
        timeout_ms = body_int(body, "timeout_ms", 0, minimum=0, maximum=MAX_TIMEOUT_MS)
        encoding = body.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise bad_request("encoding must be auto or base64")
        manager = await self.shares.ensure_loaded()  # per request: a leadership change replaces it
        await self._heartbeat(request, group_id, member_id, record.name, client_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            partitions = self._rotated(group_id, member_id, self._assigned(group_id, member_id, record.topic_id))
            keys = [ShareStateKey(group_id, record.topic_id, p) for p in partitions]
            records, remote = await self._acquire(manager, record.name, keys, member_id, max_records, encoding == "base64",
                                                  authorization=request.headers.get("Authorization"))
            remaining = deadline - loop.time()
            if records or remaining <= 0 or record.name not in self.topics():
                break
            # new records here wake the wait; partitions led elsewhere are asked again after a short one
            await self.shares.wait_for_records(group_id, [(record.topic_id, p) for p in partitions if p not in remote],
                                               min(remaining, REMOTE_POLL_S) if remote else remaining)
            await self._heartbeat(request, group_id, member_id, None, client_id)  # the assignment may have changed
        return web.json_response({
            "group_id": group_id, "member_id": member_id, "topic": record.name,
            "lock_timeout_ms": manager.acquisition_lock_timeout_ms(group_id), "records": records,
        })

    def _rotated(self, group_id: str, member_id: str, partitions: list[int]) -> list[int]:
        """The member's partitions, starting one further at each receive (no partition starves)."""
        if not partitions:
            return partitions
        start = self._rotation.get((group_id, member_id), 0) % len(partitions)
        self._rotation[(group_id, member_id)] = start + 1
        if len(self._rotation) > 10_000:  # members come and go: forget the oldest
            del self._rotation[next(iter(self._rotation))]
        return partitions[start:] + partitions[:start]

    async def _acquire(self, manager: ShareManager, topic: str, keys: list[ShareStateKey], member_id: str,
                       max_records: int, force_base64: bool, local_only: bool = False,
                       authorization: str | None = None) -> tuple[list[dict], set[int]]:
        """Records of the share-partitions, here or (unless ``local_only``) at their leaders; and which
        partitions are led elsewhere."""
        out: list[dict] = []
        errors: list[KafkaError] = []
        remote: set[int] = set()
        for key in keys:
            if len(out) >= max_records:
                break
            try:
                address = self.peers.remote(topic, key.partition) if self.peers is not None and not local_only else None
                if address is not None:
                    remote.add(key.partition)
                    out += (await self.peers.post(address, _partition_path(key, topic, "acquire"), {
                        "member_id": member_id, "max_records": max_records - len(out),
                        "encoding": "base64" if force_base64 else "auto"}, authorization))["records"]
                    continue
                result = await manager.acquire(
                    key, member_id, max_records=max_records - len(out), max_bytes=MAX_READ_BYTES, mode=AcquireMode.RECORD_LIMIT)
            except KafkaError as e:  # this partition cannot be read now; the others may
                errors.append(e)
                continue
            counts = [(a.first_offset, a.last_offset, a.delivery_count) for a in result.acquired]
            for batch in result.records:
                self._records_of(topic, key.partition, batch, counts, force_base64, out)
        if not out and errors and len(errors) == len(keys):
            raise errors[0]
        return out, remote

    @staticmethod
    def _records_of(topic: str, partition: int, batches: memoryview, acquired: list[tuple[int, int, int]],
                    force_base64: bool, out: list[dict]) -> None:
        """The acquired records of whole batches, with their delivery counts and receipts."""
        pos = 0
        while pos + BATCH_HEADER_SIZE <= len(batches):
            info = parse_batch_header(batches, pos)
            end = pos + info.size
            if not info.is_control and end <= len(batches):
                for r in iter_records(batches[pos:end]):
                    count = next((c for first, last, c in acquired if first <= r.offset <= last), None)
                    if count is None:
                        continue
                    out.append({"receipt": receipt(topic, partition, r.offset), "topic": topic, "partition": partition,
                                "delivery_count": count,
                                **record_to_json(r.offset, r.timestamp, TIMESTAMP_TYPES[info.timestamp_type], r.key,
                                                 r.value, r.headers, force_base64)})
            pos = end

    # --- acknowledge ----------------------------------------------------------------------------
    async def acknowledge(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        ack_type = _ACK_TYPES[request.path.rsplit("/", 1)[1]]
        body = await json_body(request)
        member_id = self._member_id(body.get("member_id"))
        receipts = body.get("receipts")
        if not isinstance(receipts, list) or not receipts or len(receipts) > MAX_RECEIPTS:
            raise bad_request(f"receipts must be a list of 1-{MAX_RECEIPTS} receipt handles")
        delay_ms = body_int(body, "delay_ms", 0, minimum=0, maximum=MAX_RELEASE_DELAY_MS)
        if delay_ms and ack_type is not AcknowledgeType.RELEASE:
            raise bad_request("delay_ms is for release only")
        parsed = [(text, *parse_receipt(text)) for text in receipts]
        manager = await self.shares.ensure_loaded()
        await self._heartbeat(request, group_id, member_id, None, HTTP_CLIENT_ID)
        topics = self.topics()
        by_partition: dict[tuple[str, int], set[int]] = {}
        failed: list[dict] = []
        for text, topic, partition, offset in parsed:
            record = topics.get(topic)
            if not may(request, AclOperation.READ, ResourceType.TOPIC, topic):
                failed.append({"receipt": text, "error_code": "TOPIC_AUTHORIZATION_FAILED",
                               "message": f"no READ on topic {topic}"})
            elif record is None or partition >= record.partitions:
                failed.append({"receipt": text, "error_code": "UNKNOWN_TOPIC_OR_PARTITION",
                               "message": f"{topic} has no partition {partition}"})
            else:
                by_partition.setdefault((topic, partition), set()).add(offset)
        done: list[str] = []
        for (topic, partition), offsets in by_partition.items():
            key = ShareStateKey(group_id, topics[topic].topic_id, partition)
            address = self.peers.remote(topic, partition) if self.peers is not None else None
            if address is None:
                results = await self._acknowledge(manager, key, member_id, sorted(offsets), ack_type, delay_ms)
            else:
                answer = await self.peers.post(address, _partition_path(key, topic, "acknowledge"), {
                    "member_id": member_id, "offsets": sorted(offsets), "type": int(ack_type), "delay_ms": delay_ms},
                    request.headers.get("Authorization"))
                results = [(o, ErrorCode[e]) for o, e in answer["results"]]
            for offsets_, error in results:
                names = [receipt(topic, partition, o) for o in offsets_]
                if error is ErrorCode.none:
                    done += names
                else:
                    failed += [{"receipt": n, "error_code": error.name.upper(), "message": _ACK_ERRORS.get(error, error.name)}
                               for n in names]
        return web.json_response({"group_id": group_id, "member_id": member_id, "acknowledged": done, "failed": failed})

    @staticmethod
    async def _acknowledge(manager: ShareManager, key: ShareStateKey, member_id: str, offsets: list[int],
                           ack_type: AcknowledgeType, delay_ms: int) -> list[tuple[list[int], ErrorCode]]:
        """Acknowledge ``offsets`` of one share-partition. The ShareManager takes a partition's
        acknowledgements all or nothing; when that fails for one, each record is tried on its own."""

        async def ack(run: list[int]) -> ErrorCode:
            batches = [AckBatch(first, last, (int(ack_type),)) for first, last in _ranges(run)]
            return await manager.acknowledge(key, member_id, batches, release_delay_ms=delay_ms, renew_allowed=True)

        error = await ack(offsets)
        if error not in (ErrorCode.invalid_record_state, ErrorCode.invalid_request) or len(offsets) == 1:
            return [(offsets, error)]
        return [([offset], await ack([offset])) for offset in offsets]

    # --- at a share-partition's leader, for the broker that answers a member ------------------------
    def _forwarded_partition(self, request: web.Request) -> tuple[str, TopicRecord, int]:
        if not request.headers.get(FORWARDED_HEADER):
            raise web.HTTPNotFound()  # between brokers only
        record = self._topic(request.match_info["topic"])
        if not may(request, AclOperation.READ, ResourceType.GROUP, request.match_info["group"]):  # READ on the topic: auth.py
            raise KafkaError(ErrorCode.group_authorization_failed, f"no READ on group {request.match_info['group']}")
        try:
            partition = int(request.match_info["partition"])
        except ValueError:
            raise bad_request("partition must be an integer") from None
        return request.match_info["group"], record, partition

    async def acquire_here(self, request: web.Request) -> web.Response:
        group_id, record, partition = self._forwarded_partition(request)
        body = await json_body(request)
        manager = await self.shares.ensure_loaded()
        key = ShareStateKey(group_id, record.topic_id, partition)
        records, _ = await self._acquire(manager, record.name, [key], self._member_id(body.get("member_id")),
                                         body_int(body, "max_records", DEFAULT_RECEIVE, minimum=1, maximum=MAX_LIMIT),
                                         body.get("encoding") == "base64", local_only=True)
        return web.json_response({"records": records})

    async def acknowledge_here(self, request: web.Request) -> web.Response:
        group_id, record, partition = self._forwarded_partition(request)
        body = await json_body(request)
        offsets = body.get("offsets")
        if not isinstance(offsets, list) or not all(isinstance(o, int) and o >= 0 for o in offsets):
            raise bad_request("offsets must be a list of offsets")
        ack_type = body_int(body, "type", None, minimum=1, maximum=4)
        if ack_type is None:
            raise bad_request("type (1 accept, 2 release, 3 reject, 4 renew) is required")
        manager = await self.shares.ensure_loaded()
        results = await self._acknowledge(manager, ShareStateKey(group_id, record.topic_id, partition),
                                          self._member_id(body.get("member_id")), sorted(set(offsets)),
                                          AcknowledgeType(ack_type),
                                          body_int(body, "delay_ms", 0, minimum=0, maximum=MAX_RELEASE_DELAY_MS))
        return web.json_response({"results": [(o, e.name) for o, e in results]})

    async def leave(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        member_id = self._member_id(request.match_info["member"])
        group = self.shares.membership.groups.get(group_id)
        if group is None or member_id not in group.members:
            raise KafkaError(ErrorCode.unknown_member_id, f"{member_id} is not a member of share group {group_id!r}")
        result = await self.shares.membership.heartbeat(group_id, member_id, -1)
        if result.error is not ErrorCode.none:
            raise KafkaError(result.error, result.message or result.error.name)
        return web.json_response({"group_id": group_id, "member_id": member_id, "left": True})

    # --- describe -------------------------------------------------------------------------------
    def _partitions(self, group_id: str, names: Mapping[uuid.UUID, str]) -> list[dict]:
        """The group's share-partitions of topics that exist (``names``): a deleted topic's state
        is removed after DeleteTopics answers (tombstones, in the background), and until then it
        is not listed, as Kafka's DescribeShareGroupOffsets lists no topic that no longer exists."""
        manager = self.shares.manager_or_error()
        keys = sorted((k for k in set(manager.state_keys(group_id)) | {k for k, _ in manager.loaded(group_id)}
                       if k.topic_id in names), key=lambda k: (names[k.topic_id], k.partition))
        lags = {(t, p): (start, lag) for t, p, start, lag in manager.describe_offsets(group_id, [(k.topic_id, k.partition) for k in keys])}
        loaded = dict(manager.loaded(group_id))
        out = []
        for key in keys:
            start, lag = lags.get((key.topic_id, key.partition), (-1, -1))
            entry = {"topic": names[key.topic_id], "partition": key.partition,
                     "start_offset": start, "lag": lag if lag >= 0 else None, "loaded": key in loaded,
                     "next_offset": None, "in_flight": 0, "records": {s.name.lower(): 0 for s in RecordState},
                     "delivery_counts": {}, "runs": [], "runs_truncated": False}
            sp = loaded.get(key)
            if sp is not None:
                runs = [r for r in sp.runs() if r[1] >= sp.start_offset]
                histogram: Counter[int] = Counter()
                for first, last, state, count, _member in runs:
                    if state not in (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED) and count:
                        histogram[count] += last - max(first, sp.start_offset) + 1
                entry.update(next_offset=sp.next_offset, in_flight=sp.in_flight_records, records=sp.counts_by_state(),
                             delivery_counts={str(c): n for c, n in sorted(histogram.items())},
                             runs=[{"first_offset": max(first, sp.start_offset), "last_offset": last,
                                    "state": state.name.lower(), "delivery_count": count, "member_id": member or None}
                                   for first, last, state, count, member in runs[:MAX_RUNS_SHOWN]],
                             runs_truncated=len(runs) > MAX_RUNS_SHOWN)
            entry["queue"] = self.shares.queue_view(key)
            out.append(entry)
        return out

    def _held(self, group_id: str) -> Counter[str]:
        held: Counter[str] = Counter()
        for _key, sp in self.shares.manager_or_error().loaded(group_id):
            for first, last, state, _count, member in sp.runs():
                if state == RecordState.ACQUIRED and member:
                    held[member] += last - max(first, sp.start_offset) + 1
        return held

    def _counts(self, group_id: str) -> dict[str, int]:
        """The group's counters: those of COUNT_NAMES always, and any other the broker keeps (queue features)."""
        counts = self.shares.group_counts(group_id)
        return {**{name: 0 for name in COUNT_NAMES}, **{name: int(n) for name, n in counts.items()}}

    async def _fresh_state(self) -> None:
        """In a cluster the leaders of the share-partitions write their state: read it before describing."""
        if self.shares.loaded:
            try:
                await self.shares.catch_up()
            except KafkaError as e:  # described as known here
                logger.debug("share-group state not caught up: %s", e)

    def _group_or_404(self, group_id: str) -> ShareGroup:
        group = self.shares.group(group_id)
        if group is None:
            raise KafkaError(ErrorCode.group_id_not_found, f"share group {group_id!r} does not exist")
        return group

    async def list_groups(self, _request: web.Request) -> web.Response:
        await self._fresh_state()
        names = self._topic_names()
        out = []
        for group in sorted(self.shares.list_groups(), key=lambda g: g.group_id):
            partitions = self._partitions(group.group_id, names)
            out.append({"group_id": group.group_id, "state": group.state, "members": len(group.members),
                        "topics": sorted(group.subscription_metadata), "lag": sum(p["lag"] or 0 for p in partitions),
                        "in_flight": sum(p["in_flight"] for p in partitions),
                        "dead_lettered": self._counts(group.group_id)["dead_lettered"]})
        return web.json_response({"groups": out})

    async def describe_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        await self._fresh_state()
        group = self._group_or_404(group_id)
        names = self._topic_names()
        held = self._held(group_id)
        members = []
        for m in group.members.values():
            members.append({
                "member_id": m.member_id, "client_id": m.client_id, "client_host": m.client_host,
                "member_epoch": m.member_epoch, "subscribed_topics": sorted(m.subscribed_topic_names),
                "assignment": sorted(({"topic": names.get(t, str(t)), "partitions": sorted(ps)} for t, ps in m.assigned.items()),
                                     key=lambda a: a["topic"]),
                "acquired_records": held.get(m.member_id, 0),
            })
        partitions = self._partitions(group_id, names)
        config = self.shares.manager_or_error().configs(group_id)
        return web.json_response({
            "group_id": group_id, "state": group.state, "group_epoch": group.group_epoch,
            "assignment_epoch": group.assignment_epoch,
            "members": members, "partitions": partitions,
            "lag": sum(p["lag"] or 0 for p in partitions), "in_flight": sum(p["in_flight"] for p in partitions),
            "counts": self._counts(group_id),
            "config": {"record_lock_duration_ms": config.partition.record_lock_duration_ms,
                       "delivery_count_limit": config.partition.delivery_count_limit,
                       "auto_offset_reset": config.auto_offset_reset, "isolation_level": config.isolation_level,
                       "dead_letter_topic": config.dead_letter_topic or None,
                       "tidelog": dict(self.shares.queue_group_configs(group_id))},
        })

    async def delete_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        error = await self.shares.delete_group(group_id)
        if error is not ErrorCode.none:
            raise KafkaError(error, {ErrorCode.non_empty_group: f"share group {group_id!r} has members",
                                     ErrorCode.group_id_not_found: f"share group {group_id!r} does not exist"}
                             .get(error, error.name))
        return web.json_response({"deleted": group_id})


COUNT_NAMES = ("acquired", "acknowledged", "released", "rejected", "renewed", "archived", "redelivered", "lock_expired",
               "dead_lettered")
_ACK_ERRORS = {
    ErrorCode.invalid_record_state: "the record is not locked by this member (its lock ran out, or it was acknowledged)",
    ErrorCode.invalid_request: "not a record this share group has handed out",
}


def _partition_path(key: ShareStateKey, topic: str, action: str) -> str:
    return f"{PREFIX}/share-groups/{quote(key.group_id, safe='')}/partitions/{topic}/{key.partition}/{action}"


def _ranges(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as (first, last) runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for offset in offsets:
        if out and out[-1][1] == offset - 1:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out

"""The replica fetcher: the follower side of replication, one ``Fetcher`` per leader broker.

A Fetcher fetches every partition this broker follows from one leader in one long-polling Fetch
(v15: topic ids, and ReplicaState with this broker's id and epoch, so the leader lets it into
an ISR only as its current registration, KIP-903), and hands the leader's batches to the partition, which appends them
with their offsets as they are (``Partition.append_as_follower``). Before fetching a partition after
a leader change it asks the leader (OffsetForLeaderEpoch v3) where its own last epoch ends
there and truncates a divergent tail; a fetch offset out of range truncates to the high
watermark, or starts over at the leader's log start. The fetches are incremental (KIP-227,
cluster/fetch_sessions.py): once the leader has opened a session, a request lists only the
partitions whose fetch offset or leader epoch changed (and forgets the ones no longer fetched:
removed, being truncated, or backed off), and the leader answers only the partitions with news. Requests go over a BrokerChannel
(cluster/broker_channel.py). What it needs of the replica manager is ``FollowerReplicas``: this
broker's id, the store (the leaders' addresses) and the followed partitions.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Protocol

from kio.schema.offset_for_leader_epoch.v3 import request as epoch_request

from tidelog.cluster.broker_channel import BrokerChannel, ChannelSecurity
from tidelog.cluster.fetch_sessions import PartitionFetch, SessionRequests
from tidelog.protocol.errors import ErrorCode, InvalidBatch
from tidelog.protocol.fetch import decode_fetch_response_v15, encode_fetch_request_v15

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.cluster.partition import Partition

__all__ = ["FETCH_MAX_WAIT_MS", "Fetcher", "FollowerReplicas"]

logger = logging.getLogger(__name__)

FETCH_VERSION = 15  # topic ids, flexible, ReplicaState (replica id and broker epoch: KIP-903)
EPOCH_VERSION = 3  # OffsetForLeaderEpoch with replica_id; not flexible
FETCH_MAX_WAIT_MS = 500  # replica.fetch.wait.max.ms's default
# Up to 8 MiB of one partition a fetch (Kafka's replica.fetch.max.bytes is 1 MiB): a Tidelog
# leader appends every pipelined Produce at once, so with one 1 MiB batch a fetch a follower
# under a producer's ~1 MB batches never reached the leader's log end and left the ISR
# (BENCHMARKS.md, Replication); the response stays within 16 MiB, read into one buffer.
FETCH_PARTITION_MAX_BYTES = 8 << 20
FETCH_MAX_BYTES = 16 << 20

class FollowerReplicas(Protocol):
    """The replica manager as a fetcher sees it."""

    node_id: int
    store: "MetadataStore"  # the leader brokers' addresses
    channel_security: "ChannelSecurity | None"  # TLS and SASL of the inter-broker listener

    def get(self, topic: str, partition: int) -> "Partition | None": ...

    def follower_appended(self, partition: "Partition", appended: int) -> None:
        """``appended`` bytes were appended to ``partition`` (its flush is scheduled there)."""


class Fetcher:
    """Fetches every partition this broker follows from one leader broker.

    A leader it cannot reach is retried with exponential back-off (50 ms doubling up to
    ``replica.fetch.backoff.ms``, with jitter); the first failure and the recovery are logged,
    not every retry. The recovery is the leader's first answer (to OffsetForLeaderEpoch or a
    Fetch, which asks for no long poll while failing), so a leader that dies right after it was
    reached again is a failure logged again. A partition whose data cannot be appended (a corrupt batch) is left out of
    the fetches for ``replica.fetch.backoff.ms`` at a time, its error logged once per offset.
    """

    def __init__(self, manager: FollowerReplicas, leader_id: int, backoff_max_ms: int,
                 max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
        self.manager = manager
        self.max_wait_ms = max_wait_ms
        self.leader_id = leader_id
        self.partitions: dict[tuple[str, int], int] = {}  # -> leader epoch
        self.needs_truncation: set[tuple[str, int]] = set()
        self.delayed: dict[tuple[str, int], float] = {}  # partition -> monotonic time it is fetched again
        self.task: asyncio.Task | None = None
        self.stopped = False
        self.backoff_max_s = backoff_max_ms / 1000
        self._changed = asyncio.Event()
        self._failures = 0
        self._failing_since = 0.0
        self._reported: dict[tuple[str, int], str] = {}  # partition -> the append error last logged
        self.session = SessionRequests()  # the fetch session with the leader

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"fetcher-{self.leader_id}")

    def stop(self) -> None:
        self.stopped = True
        if self.task is not None:
            self.task.cancel()

    def add(self, key, leader_epoch: int) -> None:
        self.partitions[key] = leader_epoch
        self.needs_truncation.add(key)
        self.delayed.pop(key, None)
        self._changed.set()

    def remove(self, key) -> None:
        self.partitions.pop(key, None)
        self.needs_truncation.discard(key)
        self.delayed.pop(key, None)
        self._reported.pop(key, None)

    def _connection_failed(self, leader, error: BaseException) -> float:
        """Note a failed round trip to the leader; the seconds to wait before the next one."""
        self._failures += 1
        if self._failures == 1:
            self._failing_since = time.monotonic()
            logger.warning("replica fetcher for leader %d (%s:%d): %s; retrying with back-off up to %d ms",
                           self.leader_id, leader.host, leader.port, _why(error),
                           self.backoff_max_s * 1000)
        else:
            logger.debug("replica fetcher for leader %d: attempt %d: %s", self.leader_id, self._failures, _why(error))
        backoff_s = min(0.05 * 2 ** min(self._failures - 1, 16), self.backoff_max_s)
        return backoff_s * random.uniform(0.8, 1.0)

    def _answered(self) -> None:
        """The leader answered a request: reached (again, after failures: logged)."""
        if self._failures:
            logger.info("replica fetcher for leader %d: reached it again after %d failed attempts in %.1f s",
                        self.leader_id, self._failures, time.monotonic() - self._failing_since)
            self._failures = 0

    async def _idle(self) -> None:
        if self._failures:
            logger.info("replica fetcher for leader %d: nothing left to fetch from it (%d failed attempts in %.1f s)",
                        self.leader_id, self._failures, time.monotonic() - self._failing_since)
            self._failures = 0
        self._changed.clear()
        await self._changed.wait()

    async def _run(self) -> None:
        manager = self.manager
        channel: BrokerChannel | None = None
        while not self.stopped:
            if not self.partitions:
                await self._idle()
                continue
            leader = manager.store.brokers.get(self.leader_id)
            if leader is None:  # not registered (yet, or any more): the metadata will move on
                await asyncio.sleep(0.1)
                continue
            try:
                if channel is None or (channel.host, channel.port) != (leader.host, leader.port):
                    if channel is not None:
                        channel.close()
                    channel = BrokerChannel(leader.host, leader.port, f"tidelog-replica-{manager.node_id}",
                                            manager.channel_security)
                if self.needs_truncation:
                    await self._truncate(channel, epoch_request)
                await self._fetch(channel)
            except asyncio.CancelledError:
                if channel is not None:
                    channel.close()
                raise
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                if channel is not None:
                    channel.close()
                channel = None
                await asyncio.sleep(self._connection_failed(leader, e))
            except Exception:
                logger.exception("replica fetcher for leader %d failed", self.leader_id)
                if channel is not None:
                    channel.close()
                channel = None
                await asyncio.sleep(0.5)

    async def _truncate(self, channel: BrokerChannel, schema) -> None:
        manager = self.manager
        wanted = {}
        for key in list(self.needs_truncation):
            partition = manager.get(*key)
            if partition is None or key not in self.partitions:
                self.needs_truncation.discard(key)
                continue
            wanted[key] = partition.epoch_cache.latest_epoch
        by_topic: dict[str, list] = {}
        for (topic, index), epoch in wanted.items():
            by_topic.setdefault(topic, []).append(schema.OffsetForLeaderPartition(
                partition=index, current_leader_epoch=self.partitions[(topic, index)], leader_epoch=max(epoch, 0)))
        request = schema.OffsetForLeaderEpochRequest(
            replica_id=manager.node_id,
            topics=tuple(schema.OffsetForLeaderTopic(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()))
        response = await channel.request(23, EPOCH_VERSION, request, 10.0)
        self._answered()
        for topic in response.topics:
            for p in topic.partitions:
                key = (topic.topic, p.partition)
                if key not in wanted or key not in self.partitions:
                    continue
                if p.error_code != ErrorCode.none:
                    logger.info("%s-%d: OffsetForLeaderEpoch from %d: %s", key[0], key[1], self.leader_id, p.error_code.name)
                    continue
                partition = manager.get(*key)
                if partition is None:
                    continue
                log = partition.log
                my_epoch = wanted[key]
                if my_epoch < 0:
                    target = log.log_end_offset if log.log_end_offset == 0 else partition.high_watermark
                elif p.leader_epoch < 0 or p.end_offset < 0:
                    target = partition.high_watermark
                elif p.leader_epoch == my_epoch:
                    target = p.end_offset
                else:
                    _, my_end = partition.epoch_cache.end_offset_for(p.leader_epoch, log.log_end_offset)
                    target = min(p.end_offset, my_end) if my_end >= 0 else p.end_offset
                partition.truncate_to(min(target, log.log_end_offset))
                self.needs_truncation.discard(key)

    async def _fetch(self, channel: BrokerChannel) -> None:
        manager = self.manager
        topics = manager.store.topics
        # The session's partitions by topic id (Fetch v13+): a topic deleted and created again
        # under its name is another partition to the session (the old one forgotten).
        wanted: dict[tuple[bytes, int], PartitionFetch] = {}
        followed: dict[tuple[bytes, int], tuple[tuple[str, int], "Partition"]] = {}
        now = time.monotonic()
        for key, epoch in self.partitions.items():
            if key in self.needs_truncation or self.delayed.get(key, 0) > now:
                continue
            partition = manager.get(*key)
            record = topics.get(key[0])
            if partition is not None and record is not None:
                by_id = (record.topic_id.bytes, key[1])
                wanted[by_id] = PartitionFetch(partition.log.log_end_offset, FETCH_PARTITION_MAX_BYTES, epoch)
                followed[by_id] = (key, partition)
        if not wanted:  # every partition delayed or being truncated
            await asyncio.sleep(0.05)
            return
        session = self.session
        changed, forgotten = session.build(wanted)
        by_topic: dict[bytes, list] = {}
        for (topic_id, index), fetch in changed.items():
            by_topic.setdefault(topic_id, []).append((index, fetch.current_leader_epoch, fetch.fetch_offset,
                                                      followed[(topic_id, index)][1].log.log_start_offset,
                                                      fetch.max_bytes))
        forgotten_by_topic: dict[bytes, list] = {}
        for topic_id, index in forgotten:
            forgotten_by_topic.setdefault(topic_id, []).append(index)
        # While failing, no long poll: the leader's answer comes at once and says it is reached.
        max_wait_ms = 0 if self._failures else self.max_wait_ms
        request = encode_fetch_request_v15(manager.node_id, manager.store.broker_epoch, max_wait_ms, 1,
                                           FETCH_MAX_BYTES, session.session_id, session.epoch, by_topic,
                                           forgotten_by_topic)
        try:
            body = await channel.request_encoded_body(1, FETCH_VERSION, request, max_wait_ms / 1000 + 10)
            # By hand: the records stay views of the frame, which the partition checks and
            # appends where they are (kio would copy each partition's records).
            response = decode_fetch_response_v15(body)
        except BaseException:
            session.failed()
            raise
        self._answered()
        if not session.response(response.error_code, response.session_id):
            return  # a session error (logged): the next request is a full one
        backoff = False
        for topic_id, partitions in response.responses:
            for p in partitions:
                key, partition = followed.get((topic_id, p.partition_index), (None, None))
                if key not in self.partitions or key in self.needs_truncation or partition is not manager.get(*key):
                    continue
                if p.error_code == ErrorCode.none:
                    if p.records:
                        try:
                            appended = partition.append_as_follower(p.records, p.high_watermark)
                        except InvalidBatch as e:
                            manager.follower_appended(partition, 0)  # the intact batches before it
                            self._append_failed(key, e)
                            continue
                        if appended:
                            manager.follower_appended(partition, appended)
                        self._reported.pop(key, None)
                    else:
                        partition.set_follower_high_watermark(p.high_watermark)
                    partition.follow_log_start(p.log_start_offset)
                elif p.error_code == ErrorCode.offset_out_of_range:
                    log = partition.log
                    if 0 <= log.log_end_offset < p.log_start_offset:
                        # Behind the leader's log start (retention or DeleteRecords removed what we
                        # lack): nothing we have can be continued; start again where the leader starts.
                        logger.warning("%s-%d: log end offset %d is below leader %d's log start offset %d; "
                                       "starting again there", key[0], key[1], log.log_end_offset, self.leader_id,
                                       p.log_start_offset)
                        partition.truncate_fully_and_start_at(p.log_start_offset)
                    else:
                        logger.warning("%s-%d: fetch offset out of range at leader %d; truncating to its high watermark",
                                       key[0], key[1], self.leader_id)
                        partition.truncate_to(min(p.high_watermark, partition.high_watermark))
                        self.needs_truncation.add(key)
                    backoff = True
                else:
                    backoff = True  # not the leader yet/anymore: metadata will catch up
        channel.recycle(body)  # appended (os.write copies): its buffer takes the next response
        if backoff:
            await asyncio.sleep(0.05)

    def _append_failed(self, key: tuple[str, int], error: InvalidBatch) -> None:
        """Leave the partition out of the fetches for a while; log the error once per cause."""
        self.delayed[key] = time.monotonic() + self.backoff_max_s
        message = str(error)
        if self._reported.get(key) != message:
            self._reported[key] = message
            logger.error("%s-%d: not appending what leader %d sent, %s (corrupt on the leader?); retrying every %d ms",
                         key[0], key[1], self.leader_id, message, self.backoff_max_s * 1000)


def _why(error: BaseException) -> str:
    """An exception as a log line's cause: its message, or its type when it has none (a timeout)."""
    return str(error) or type(error).__name__

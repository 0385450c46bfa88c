"""Fetch sessions (KIP-227): the broker's cache of incremental fetch sessions, and the fetching
side's bookkeeping (what the next request of a follower sends).

A Fetch request (v7+) names a session id and an epoch. Epoch 0 is a full fetch that asks for a
new session (an existing id named with it is closed first); epoch -1 is a full fetch without a
session (closing the named one). Any other epoch is an incremental fetch of a cached session:
the request lists only the partitions added or changed (fetch offset, max bytes, leader epoch)
and the ones to forget, the broker reads every partition of the session, and the response
carries only the partitions with records, an error, or a high watermark, last stable offset or
log start offset changed since the session last sent them. An unknown id is answered
FETCH_SESSION_ID_NOT_FOUND, an epoch other than the session's next one
INVALID_FETCH_SESSION_EPOCH, and a session made with topic names asked with topic ids (or the
reverse) FETCH_SESSION_TOPIC_ID_ERROR; each answer has that top-level error, session id 0 and no
partitions. A session answered with records of a partition moves that partition to the end of
its order, so the response budget (``fetch.max.bytes``) turns over the partitions.

The cache holds at most ``max.incremental.fetch.session.cache.slots`` sessions (as Kafka's
FetchSessionCache). When full, a new session takes the slot of the least recently used one if
that was idle for ``min.incremental.fetch.session.eviction.ms``; otherwise of the least valuable
evictable one (ordered by follower or not, then partition count): a follower's session may
take a consumer's, and any session older than the eviction time may go to one at least as
valuable. Otherwise the full fetch is answered without a session (id 0), which clients accept.

``SessionRequests`` is the fetching side (Kafka's FetchSessionHandler), used by the replica
fetcher. Not thread-safe; the event loop owns these objects.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Hashable, NamedTuple

from tidelog.clock import monotonic_ms
from tidelog.protocol.errors import ErrorCode

__all__ = ["FINAL_EPOCH", "INITIAL_EPOCH", "INVALID_SESSION_ID", "FetchSession", "FetchSessionCache",
           "PartitionFetch", "SessionRequests", "next_epoch"]

logger = logging.getLogger(__name__)

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
_MAX_EPOCH = 2**31 - 1

PartitionKey = tuple[Hashable, int]  # (topic name, or topic id from Fetch v13, partition index)


def next_epoch(epoch: int) -> int:
    """The epoch after ``epoch``: 1 after the initial one; it wraps to 1, never 0 or -1."""
    return 1 if epoch < 0 or epoch >= _MAX_EPOCH else epoch + 1


class PartitionFetch(NamedTuple):
    """What a request asks of one partition (from the request, or kept in the session)."""

    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1


class CachedPartition:
    """A partition of a session: what its fetcher asked last, and what it was last answered."""

    __slots__ = ("fetch", "high_watermark", "last_stable_offset", "log_start_offset")

    def __init__(self, fetch: PartitionFetch) -> None:
        self.fetch = fetch
        self.high_watermark = -1  # never sent: the first response includes the partition
        self.last_stable_offset = -1
        self.log_start_offset = -1

    def must_respond(self, error_code: int, high_watermark: int, last_stable_offset: int, log_start_offset: int,
                     has_records: bool) -> bool:
        """Whether an incremental response must carry the partition; remembers what it carried."""
        changed = (high_watermark != self.high_watermark or last_stable_offset != self.last_stable_offset
                   or log_start_offset != self.log_start_offset)
        self.high_watermark = high_watermark if error_code == ErrorCode.none else -1  # re-sent when the error goes
        self.last_stable_offset = last_stable_offset
        self.log_start_offset = log_start_offset
        return has_records or changed or error_code != ErrorCode.none


class FetchSession:
    """One fetcher's session: its partitions in the order they are read, and the next epoch."""

    __slots__ = ("session_id", "privileged", "uses_topic_ids", "epoch", "partitions", "created_ms", "last_used_ms")

    def __init__(self, session_id: int, privileged: bool, uses_topic_ids: bool, now_ms: int) -> None:
        self.session_id = session_id
        self.privileged = privileged  # a follower's (replica id set)
        self.uses_topic_ids = uses_topic_ids
        self.epoch = next_epoch(INITIAL_EPOCH)  # what the next request must carry
        self.partitions: dict[PartitionKey, CachedPartition] = {}
        self.created_ms = now_ms
        self.last_used_ms = now_ms

    def update(self, changed: list[tuple[PartitionKey, PartitionFetch]], forgotten: list[PartitionKey]) -> None:
        """Apply an incremental request: partitions added or changed, then the ones forgotten."""
        partitions = self.partitions
        for key, fetch in changed:
            cached = partitions.get(key)
            if cached is None:
                partitions[key] = CachedPartition(fetch)
            else:
                cached.fetch = fetch
        for key in forgotten:
            partitions.pop(key, None)

    def evictable_key(self) -> tuple[bool, int, int]:
        return (self.privileged, len(self.partitions), self.session_id)


class FetchSessionCache:
    """The incremental fetch sessions of this broker (see the module docstring for the rules).

    ``metrics`` (tidelog.metrics.BrokerMetrics) counts fetches by kind, sessions and evictions;
    None in unit tests. Eviction scans the sessions only when the cache is full and a new one is
    asked for (at most ``max_slots`` entries)."""

    def __init__(self, max_slots: int, eviction_ms: int, metrics: Any = None,
                 clock: Callable[[], int] = monotonic_ms) -> None:
        self.max_slots = max_slots
        self.eviction_ms = eviction_ms
        self.metrics = metrics
        self.clock = clock
        self.sessions: dict[int, FetchSession] = {}  # least recently used first
        self.evictions = 0
        self._request_counters: dict[tuple[str, bool], Any] = {}  # (kind, privileged) -> its labelled counter

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, session_id: int) -> FetchSession | None:
        return self.sessions.get(session_id)

    def remove(self, session_id: int) -> FetchSession | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._sessions_changed()
        return session

    def touch(self, session: FetchSession, now_ms: int) -> None:
        session.last_used_ms = now_ms
        del self.sessions[session.session_id]
        self.sessions[session.session_id] = session  # to the most recently used end

    def create(self, privileged: bool, uses_topic_ids: bool, partitions: list[tuple[PartitionKey, PartitionFetch]],
               now_ms: int | None = None) -> FetchSession | None:
        """A new session holding ``partitions``, or None when no slot can be had."""
        now = self.clock() if now_ms is None else now_ms
        if self.max_slots <= 0:
            return None
        if len(self.sessions) >= self.max_slots and not self._evict_for(privileged, len(partitions), now):
            return None
        session_id = 0
        while session_id == INVALID_SESSION_ID or session_id in self.sessions:
            session_id = random.randint(1, _MAX_EPOCH)
        session = FetchSession(session_id, privileged, uses_topic_ids, now)
        session.update(partitions, [])
        self.sessions[session_id] = session
        self._sessions_changed()
        return session

    def _evict_for(self, privileged: bool, size: int, now_ms: int) -> bool:
        oldest = next(iter(self.sessions.values()))
        if now_ms - oldest.last_used_ms > self.eviction_ms:
            return self._evict(oldest, "idle for %d ms" % (now_ms - oldest.last_used_ms))
        candidates = [s for s in self.sessions.values()
                      if now_ms - s.created_ms > self.eviction_ms or (privileged and not s.privileged)]
        if not candidates:
            return False
        least = min(candidates, key=FetchSession.evictable_key)
        if (privileged, size, _MAX_EPOCH) < least.evictable_key():
            return False
        return self._evict(least, "a more valuable session needs its slot")

    def _evict(self, session: FetchSession, why: str) -> bool:
        logger.debug("fetch session %d (%d partitions) evicted: %s", session.session_id, len(session.partitions), why)
        del self.sessions[session.session_id]
        self.evictions += 1
        if self.metrics is not None:
            self.metrics.fetch_session_evictions.inc()
        return True

    def _sessions_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.fetch_sessions.set(len(self.sessions))

    def count(self, kind: str, privileged: bool) -> None:
        """A Fetch of ``kind`` (full, incremental, sessionless, error) was answered."""
        counter = self._request_counters.get((kind, privileged))
        if counter is None:
            if self.metrics is None:
                return
            counter = self._request_counters[(kind, privileged)] = self.metrics.fetch_requests.labels(
                kind, "follower" if privileged else "consumer")  # labels() is a dozen Python calls a fetch
        counter.inc()


class SessionRequests:
    """The fetching side of one session with one broker (Kafka's FetchSessionHandler).

    ``build(wanted)`` says what the next request sends: every partition while no session is
    established (epoch 0: the broker opens one), else only those added or changed since the last
    request, and the ones no longer wanted to forget. ``response(error_code, session_id)`` moves
    the session on; ``failed()`` after a request got no answer closes it on the next request."""

    def __init__(self) -> None:
        self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self.sent: dict[PartitionKey, PartitionFetch] = {}  # what the broker's session holds
        self.full_requests = 0
        self.incremental_requests = 0

    @property
    def full(self) -> bool:
        return self.epoch in (INITIAL_EPOCH, FINAL_EPOCH)

    def build(self, wanted: dict[PartitionKey, PartitionFetch]) -> tuple[dict, list[PartitionKey]]:
        """(partitions to send, partitions to forget) of the next request."""
        if self.full:
            self.sent = dict(wanted)
            self.full_requests += 1
            return wanted, []
        sent = self.sent
        changed = {key: fetch for key, fetch in wanted.items() if sent.get(key) != fetch}
        forgotten = [key for key in sent if key not in wanted]
        self.sent = dict(wanted)
        self.incremental_requests += 1
        return changed, forgotten

    def response(self, error_code: int, session_id: int) -> bool:
        """Move the session on from an answer; False if its partitions are to be ignored."""
        if error_code != ErrorCode.none:
            logger.info("fetch session %d epoch %d: %s; starting a new session", self.session_id, self.epoch,
                        ErrorCode(error_code).name)
            if error_code != ErrorCode.fetch_session_id_not_found:
                self.epoch = INITIAL_EPOCH  # a full fetch naming the session closes it
            else:
                self.session_id, self.epoch = INVALID_SESSION_ID, INITIAL_EPOCH
            return False
        if session_id == INVALID_SESSION_ID:  # no session (the cache is full, or it was closed)
            self.session_id, self.epoch = INVALID_SESSION_ID, INITIAL_EPOCH
        elif self.full:
            self.session_id, self.epoch = session_id, next_epoch(INITIAL_EPOCH)
        else:
            self.epoch = next_epoch(self.epoch)
        return True

    def failed(self) -> None:
        """The request got no answer (a connection lost): the next one is full, closing the session."""
        self.epoch = INITIAL_EPOCH

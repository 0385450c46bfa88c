"""Fetch (key 1).

Behaviour: for each requested partition, returns whole record batches from ``fetch_offset`` (the
batch containing it first) up to the high watermark, within ``partition_max_bytes`` and the
response's ``max_bytes``; the first batch of the response is returned even when larger than
those limits (KIP-74), so a consumer never gets stuck. The high watermark never passes what
is durable under the topic's durability profile (on a single node the log's durable end; in a
cluster the ISR's, bounded by the leader's own durable end). When fewer than ``min_bytes`` are
available, the request waits up to ``max_wait_ms`` and is woken by the next append to one of
its partitions or the flush that makes records readable. The first read is ``answer_now``, which
the connection calls as the request's frame is read: a Fetch whose data is there is answered
then, without a task (server/connection.py ``_fetch_now``). Records are not read: each
partition's answer is a slice of a segment file found from batch headers and the offset index
(storage/file_slice.py), which the connection sends by sendfile on a plaintext socket
(server/connection.py); a response of at most 64 KiB of records is read and written in one
piece instead (one TCP segment, not three; a shorter round trip). ``isolation_level`` 1
(read_committed) reads only below the last stable offset (the first offset of the oldest
undecided transaction) and lists the aborted transactions of the range, whose records the
consumer drops; every response carries the LSO.
Fetch sessions (KIP-227, v7+; cluster/fetch_sessions.py has the rules): session epoch 0 opens a
session (its id in the response, 0 when the cache has no slot), -1 fetches without one; any
other epoch is an incremental fetch that reads every partition of the session from where it was
last asked and answers only the partitions with news.
Versions: 4-17; topics named by id from v13. Errors: OFFSET_OUT_OF_RANGE,
UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID, UNKNOWN_LEADER_EPOCH, KAFKA_STORAGE_ERROR (the
log directory is offline after an I/O error), CORRUPT_MESSAGE (a batch on disk cannot be read), and at the top level
FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_TOPIC_ID_ERROR,
TOPIC_AUTHORIZATION_FAILED (a consumer without READ on the topic, a follower without
CLUSTER_ACTION on the cluster).
"""

from __future__ import annotations

import logging
import time
import uuid

from tidelog.clock import monotonic_ms
from tidelog.cluster.fetch_sessions import (
    FINAL_EPOCH, INITIAL_EPOCH, INVALID_SESSION_ID, FetchSession, PartitionFetch, next_epoch)
from tidelog.cluster.partition import wait_for_data
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.fetch import TOPIC_IDS_FROM, PartitionData, encode_fetch_response
from tidelog.security.acl import AclOperation, ResourceType
from tidelog.storage.file_slice import FileSlice

logger = logging.getLogger(__name__)

API_KEY = 1
SESSIONS_FROM = 7
ZERO_UUID = uuid.UUID(int=0)
SMALL_RESPONSE_BYTES = 65_536  # records of a response read and written with its header: about a loopback segment


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> list:
    answer = answer_now(ctx, request)
    if type(answer) is Parked:
        return await answer.response()
    return answer


class Parked:
    """A Fetch that found less than ``min_bytes``: ``response()`` waits for data (up to
    ``max_wait``), reading again as appends and flushes wake it, then answers.

    It is among its partitions' parked reads only from its task's first step, a loop turn after
    the read: ``marks`` (what a wake-up follows, as of the read) tells that step whether data came
    in between (a group commit's job end in the same poll batch), which woke nobody for it: it
    reads again at once instead of waiting for the next move or its ``max_wait``."""

    __slots__ = ("ctx", "request", "state", "deadline", "watched", "marks")

    def __init__(self, ctx: RequestContext, request, state: tuple, deadline: float, watched: list) -> None:
        self.ctx, self.request, self.state, self.deadline, self.watched = ctx, request, state, deadline, watched
        self.marks = _marks(watched, state[4] >= 0)

    async def response(self) -> list:
        ctx, request, state = self.ctx, self.request, self.state
        wanted, replica_id = state[3], state[4]
        moved = self.marks != _marks(self.watched, replica_id >= 0)
        while True:
            if not moved:
                await wait_for_data(self.watched, self.deadline - time.monotonic(), replica=replica_id >= 0)
            moved = False
            topics, total_bytes, any_error = _read(ctx, request, wanted, replica_id)
            if total_bytes >= request.min_bytes or any_error or time.monotonic() >= self.deadline:
                return _respond(ctx, state, topics)


def _marks(watched: list, replica: bool) -> list[int]:
    """What wakes a parked read, per watched partition: a consumer's the high watermark, a
    follower's the log end (wait_for_data). A leadership change in that turn is not seen here
    (the Fetch answers at its max_wait, as it always did): rare, and not worth a check a Fetch."""
    if replica:
        return [partition.log.log_end_offset for partition in watched]
    return [partition.high_watermark for partition in watched]


def answer_now(ctx: RequestContext, request) -> list | Parked:
    """The Fetch's response if it can be made now (data there, an error, no wait asked), else a
    Parked fetch whose ``response()`` waits for data. The connection calls this directly, so a
    Fetch with data is answered without a task (server/connection.py); ``handle`` awaits it."""
    version = ctx.api_version
    deadline = time.monotonic() + request.max_wait.total_seconds()
    replica_state = getattr(request, "replica_state", None)
    replica_id = replica_state.replica_id if replica_state is not None else getattr(request, "replica_id", -1)
    uses_topic_ids = version >= TOPIC_IDS_FROM
    asked = _asked(request, uses_topic_ids)
    sessions = ctx.fetch_sessions
    session_id = request.session_id if version >= SESSIONS_FROM else INVALID_SESSION_ID
    epoch = request.session_epoch if version >= SESSIONS_FROM else FINAL_EPOCH
    session: FetchSession | None = None
    if epoch in (INITIAL_EPOCH, FINAL_EPOCH) or sessions is None:
        if session_id != INVALID_SESSION_ID and sessions is not None:
            sessions.remove(session_id)  # a full fetch closes the session it names
        kind = "full" if epoch == INITIAL_EPOCH and sessions is not None else "sessionless"
        order = asked
    else:
        session = sessions.get(session_id)
        error = (ErrorCode.fetch_session_id_not_found if session is None
                 else ErrorCode.invalid_fetch_session_epoch if session.epoch != epoch
                 else ErrorCode.fetch_session_topic_id_error if session.uses_topic_ids != uses_topic_ids else None)
        if error is not None:
            logger.debug("fetch from %s: session %d epoch %d: %s", ctx.peer, session_id, epoch, error.name)
            sessions.count("error", replica_id >= 0)
            return encode_fetch_response(version, [], error_code=error)
        session.update(asked, _forgotten(request, uses_topic_ids))
        if not session.partitions:  # everything forgotten: the session ends
            sessions.remove(session_id)
            session, kind, order = None, "sessionless", asked
        else:
            sessions.touch(session, monotonic_ms())
            session.epoch = next_epoch(epoch)
            kind, order = "incremental", [(key, cached.fetch) for key, cached in session.partitions.items()]
    wanted = _resolve(ctx, order, uses_topic_ids, replica_id)
    state = (session, kind, asked, wanted, replica_id)
    topics, total_bytes, any_error = _read(ctx, request, wanted, replica_id)
    if total_bytes >= request.min_bytes or any_error or time.monotonic() >= deadline:
        return _respond(ctx, state, topics)
    replicas = ctx.replicas
    watched = [partition for name, _, _, positions, _, _ in wanted if name for index, _ in positions
               if (partition := replicas.get(name, index)) is not None]
    if not watched:
        return _respond(ctx, state, topics)
    return Parked(ctx, request, state, deadline, watched)


def _respond(ctx: RequestContext, state: tuple, topics: list) -> list:
    """The response to what was read last: the session's news, a new session, the counters."""
    session, kind, asked, wanted, replica_id = state
    sessions = ctx.fetch_sessions
    response_session_id = INVALID_SESSION_ID
    if session is not None:
        topics = _news(session, wanted, topics)
        response_session_id = session.session_id
    elif kind == "full":
        created = sessions.create(replica_id >= 0, ctx.api_version >= TOPIC_IDS_FROM, asked) if asked else None
        if created is not None:
            _news(created, wanted, topics)  # what the session has sent
            response_session_id = created.session_id
    if sessions is not None:
        sessions.count(kind if kind != "full" or response_session_id else "sessionless", replica_id >= 0)
    return encode_fetch_response(ctx.api_version, _small_slices_read(ctx, topics), session_id=response_session_id)


def _small_slices_read(ctx: RequestContext, topics: list) -> list:
    """A response of at most SMALL_RESPONSE_BYTES of records carries them read, not as slices:
    the connection writes it whole in one writev, one TCP segment, where sendfile between the
    header's and the trailer's writes sends three packets, each pushed at once (TCP_NODELAY) and
    each waking the client. Larger responses keep their slices for sendfile."""
    slices = [(results, i) for _, _, results in topics for i, data in enumerate(results)
              if type(data.records) is FileSlice and data.records]
    if not slices or sum(len(results[i].records) for results, i in slices) > SMALL_RESPONSE_BYTES:
        return topics
    copied = 0
    for results, i in slices:
        records = results[i].records
        try:
            read = records.read()
        except OSError:  # the segment left the log meanwhile: the connection's send reports it, as for any slice
            continue
        if len(read) == len(records):  # else the file shrank meanwhile: likewise
            results[i] = results[i]._replace(records=read)
            copied += len(read)
    if copied:
        ctx.metrics.fetch_response_bytes_copy.inc(copied)
    return topics


def _asked(request, uses_topic_ids: bool) -> list:
    """((topic, partition), PartitionFetch) of each partition the request lists; the topic is
    named by id from v13 (kio reads the zero uuid as None; no topic has it)."""
    asked = []
    for topic in request.topics:
        key = (topic.topic_id or ZERO_UUID) if uses_topic_ids else topic.topic
        for p in topic.partitions:
            asked.append(((key, p.partition), PartitionFetch(p.fetch_offset, p.partition_max_bytes,
                                                             getattr(p, "current_leader_epoch", -1))))
    return asked


def _forgotten(request, uses_topic_ids: bool) -> list:
    return [((topic.topic_id or ZERO_UUID) if uses_topic_ids else topic.topic, index)
            for topic in request.forgotten_topics_data for index in topic.partitions]


def _resolve(ctx: RequestContext, order: list, uses_topic_ids: bool, replica_id: int) -> list:
    """(name or None, topic_id, topic key, [(index, PartitionFetch)], name as asked, denial or
    None) per run of partitions of one topic in ``order``; a None name marks an unknown or
    denied topic."""
    runs: list[tuple] = []
    for (key, index), fetch in order:
        if runs and runs[-1][0] == key:
            runs[-1][1].append((index, fetch))
        else:
            runs.append((key, [(index, fetch)]))
    resolved = []
    access = ctx.access
    if replica_id >= 0:  # a follower: CLUSTER_ACTION allows every topic
        follower_allowed = access.authorize(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    for key, positions in runs:
        if uses_topic_ids:
            record = ctx.topics.topic_by_id(key)
            name, topic_id, label = (record.name, key, record.name) if record else (None, key, "")
        else:
            record = ctx.metadata.topics.get(key)
            name, topic_id, label = (key if record else None), (record.topic_id if record else None), key
        allowed = follower_allowed if replica_id >= 0 else access.authorize(
            AclOperation.READ, ResourceType.TOPIC, name or label)
        if allowed:
            resolved.append((name, topic_id, key, positions, label, None))
        else:
            resolved.append((None, topic_id, key, positions, label, ErrorCode.topic_authorization_failed))
    return resolved


def _read(ctx: RequestContext, request, wanted: list, replica_id: int) -> tuple[list, int, bool]:
    replicas = ctx.replicas
    version = ctx.api_version
    budget = request.max_bytes if version >= 3 else 2**31 - 1
    replica_state = getattr(request, "replica_state", None)  # v15+: the follower's broker epoch (KIP-903)
    replica_epoch = replica_state.replica_epoch if replica_state is not None else -1
    total_bytes = 0
    any_error = False
    topics = []
    for name, topic_id, _, positions, label, denied in wanted:
        results = []
        for index, fetch in positions:
            partition = replicas.get(name, index) if name is not None else None
            if partition is None:
                unknown = ErrorCode.unknown_topic_id if version >= TOPIC_IDS_FROM else ErrorCode.unknown_topic_or_partition
                results.append(PartitionData(index, denied or unknown))
                any_error = True
                continue
            read = partition.read(fetch.fetch_offset, max(0, min(fetch.max_bytes, budget - total_bytes)),
                                  min_one_batch=total_bytes == 0, replica_id=replica_id,
                                  current_leader_epoch=fetch.current_leader_epoch,
                                  isolation_level=request.isolation_level, as_slice=True, replica_epoch=replica_epoch)
            if read.error != ErrorCode.none:
                any_error = True
            records = read.records
            total_bytes += len(records)
            if records:
                ctx.metrics.count_fetched(name, records)
            aborted = read.aborted_transactions
            results.append(PartitionData(index, read.error, read.high_watermark, read.last_stable_offset,
                                         read.log_start_offset, records, aborted_transactions=[
                                             (a.producer_id, a.first_offset) for a in aborted] if aborted else None))
        topics.append((label, topic_id, results))
    return topics, total_bytes, any_error


def _news(session: FetchSession, wanted: list, topics: list) -> list:
    """The partitions an incremental response carries (records, an error, or offsets changed
    since the session last sent them), each remembered as sent; those answered with records move
    to the end of the session's order."""
    cached_partitions = session.partitions
    answered = []
    with_records = []
    for (_, _, key, _, _, _), (label, topic_id, results) in zip(wanted, topics):
        carried = []
        for data in results:
            cached = cached_partitions.get((key, data.index))
            has_records = bool(data.records)
            if cached is None or cached.must_respond(data.error_code, data.high_watermark, data.last_stable_offset,
                                                     data.log_start_offset, has_records):
                carried.append(data)
            if has_records:
                with_records.append((key, data.index))
        if carried:
            answered.append((label, topic_id, carried))
    for partition_key in with_records:
        cached = cached_partitions.pop(partition_key, None)
        if cached is not None:
            cached_partitions[partition_key] = cached
    return answered

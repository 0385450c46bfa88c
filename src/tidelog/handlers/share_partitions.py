"""What ShareFetch (78) and ShareAcknowledge (79) share: applying acknowledgement batches per
share-partition, and the leader hints of partitions this broker does not lead. Registers no API.
Both requests are decoded by protocol/share_requests.py, not kio: their partitions' batches arrive
as AckBatch tuples, the form the share-partitions take.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Collection, Coroutine, Iterable

from tidelog.handlers.registry import RequestContext
from tidelog.protocol.apis import build
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.share_requests import AckTopic
from tidelog.queues.manager import ShareManager
from tidelog.queues.state_records import ShareStateKey

logger = logging.getLogger(__name__)

PartitionId = tuple[uuid.UUID, int]
_MOVED = (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch)


async def acknowledge(manager: ShareManager, group_id: str, member_id: str, topics: Iterable[AckTopic],
                      renew_allowed: bool, unreadable: Collection[uuid.UUID] = ()) -> dict[PartitionId, ErrorCode]:
    """Apply the acknowledgements of every partition of ``topics`` (ShareFetch's FetchTopic or
    ShareAcknowledge's AcknowledgeTopic, as protocol/share_requests.py decodes them: their batches
    already AckBatch tuples); the error code of each partition that had some. Those of
    ``unreadable`` topics (no READ) are not applied: TOPIC_AUTHORIZATION_FAILED."""
    errors: dict[PartitionId, ErrorCode] = {}
    applying: dict[PartitionId, Coroutine] = {}
    for topic in topics:
        for partition in topic.partitions:
            if not partition.acknowledgement_batches:
                continue
            pid = (topic.topic_id, partition.partition_index)
            if topic.topic_id in unreadable:
                errors[pid] = ErrorCode.topic_authorization_failed
                continue
            if pid in applying:  # (the same partition twice: after the others, in turn)
                await _gathered(applying, errors)
            applying[pid] = manager.acknowledge(ShareStateKey(group_id, *pid), member_id,
                                                partition.acknowledgement_batches, renew_allowed=renew_allowed)
    if applying:
        await _gathered(applying, errors)
    return errors


async def _gathered(applying: dict[PartitionId, Coroutine], errors: dict[PartitionId, ErrorCode]) -> None:
    """Run the partitions' acknowledgements side by side, as Kafka's SharePartitionManager does: each
    one's state change applied at once (not after the previous partition's state write), so after a
    stall all of them are in before a lock timer acts (tidelog/session_timer.py), and their writes
    share one durability wait. One partition, the usual case, is awaited as it is (no task).

    An error that is not a KafkaError (ShareManager.acknowledge answers those itself: a bug) is
    that partition's UNKNOWN_SERVER_ERROR, logged with its traceback; the others are answered
    as they end (gather's return_exceptions: none left running unobserved, robust16)."""
    if len(applying) == 1:
        [(pid, coroutine)] = applying.items()
        applying.clear()
        try:
            errors[pid] = await coroutine
        except Exception as e:  # noqa: BLE001 - this partition's answer; see the docstring
            errors[pid] = _failed(pid, e)
        return
    outcomes = await asyncio.gather(*applying.values(), return_exceptions=True)
    for pid, outcome in zip(applying, outcomes):
        errors[pid] = _failed(pid, outcome) if isinstance(outcome, BaseException) else outcome
    applying.clear()
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome  # cancelled (the connection closed) or the process stopping: every one ended first


def _failed(pid: PartitionId, error: BaseException) -> ErrorCode:
    if isinstance(error, Exception):
        logger.error("share-partition %s-%d: acknowledgement failed unexpectedly", pid[0], pid[1],
                     exc_info=(type(error), error, error.__traceback__))
    return ErrorCode.unknown_server_error


def has_renew(topics: Iterable[AckTopic]) -> bool:
    return any(p.renew for t in topics for p in t.partitions)


def current_leader(ctx: RequestContext, module, topic_id: uuid.UUID, partition: int, error: ErrorCode):
    """The partition's leader and leader epoch as the metadata says (for a client to move on after
    NOT_LEADER_OR_FOLLOWER); -1/-1 when not known or not needed."""
    leader_id, leader_epoch = leader_hint(ctx, topic_id, partition, error)
    return build(module.LeaderIdAndEpoch, leader_id=leader_id, leader_epoch=leader_epoch)


def leader_hint(ctx: RequestContext, topic_id: uuid.UUID, partition: int, error: ErrorCode) -> tuple[int, int]:
    """``current_leader``'s (leader id, leader epoch), with no response object (ShareFetch's
    response is encoded by hand)."""
    if error in _MOVED:
        record = ctx.topics.topic_by_id(topic_id)
        state = ctx.metadata.partitions.get((record.name, partition)) if record is not None else None
        if state is not None:
            return state.leader, state.leader_epoch
    return _NO_LEADER


_NO_LEADER = (-1, -1)


def node_endpoints(ctx: RequestContext, module, leader_ids: Iterable[int]) -> tuple:
    endpoints = []
    for node_id in sorted(set(leader_ids)):
        broker = ctx.metadata.brokers.get(node_id)
        if broker is not None and node_id >= 0:
            endpoints.append(build(module.NodeEndpoint, node_id=node_id, host=broker.host, port=broker.port,
                                   rack=broker.rack))
    return tuple(endpoints)

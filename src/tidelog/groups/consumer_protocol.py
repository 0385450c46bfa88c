"""The consumer group protocol (KIP-848) of the group coordinator: ConsumerGroupHeartbeat and
ConsumerGroupDescribe over ``ConsumerGroup`` (groups/consumer_group.py), as Kafka 4.0 serves them.

One heartbeat does three things (Kafka's GroupMetadataManager.consumerGroupHeartbeat):
1. create or update the member; a new member, a changed subscription (names or regex) or a
   change of the subscribed topics' partition counts bumps the group epoch;
2. when the group epoch is ahead of the assignment epoch, the server-side assignor (the one
   most members ask for with ``server_assignor``, else the first of ``group.consumer.assignors``)
   computes a new target assignment;
3. the member is reconciled one step towards its target (``reconcile``).

Members leave with epoch -1; a static member (``instance_id``) may leave temporarily with
epoch -2, keeping its partitions until it rejoins (with any member id) or its session times out.
A member is removed when it sends no heartbeat for ``group.consumer.session.timeout.ms``, or
when it does not revoke partitions within its rebalance timeout; removal bumps the group epoch.
Timers (groups/timers.py) are reset by each heartbeat.

Persistence: after a heartbeat changes anything durable, one snapshot record of the whole
group (``ConsumerGroupKey``, see groups/records.py) is written to ``__consumer_offsets`` before
the answer. After a restart members keep their epochs and assignments and must heartbeat
within their session timeout.
Not thread-safe; everything runs on the broker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Mapping

from tidelog.groups.assignors import ASSIGNORS, Assignment, MemberSpec, TopicSpec
from tidelog.groups.consumer_group import (
    LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    MEMBER_UNREVOKED,
    ConsumerGroup,
    ConsumerMember,
    TopicMetadata,
    compile_regex,
    copy_assignment,
    encode_group_snapshot,
    is_subset,
    reconcile,
    same_assignment,
)
from tidelog.groups.records import ConsumerGroupKey, encode_consumer_group_key, encode_consumer_group_value
from tidelog.groups.registry import GroupLog, GroupRegistry, write_error, write_failure_level
from tidelog.groups.settings import GroupSettings
from tidelog.groups.timers import GroupTimers
from tidelog.protocol.errors import ErrorCode

logger = logging.getLogger(__name__)

# A group write that failed is written again after this back-off (doubling up to
# WRITE_RETRY_MAX_S) until one is stored, whether or not a heartbeat does it first (``persist``).
WRITE_RETRY_FIRST_S = 0.1
WRITE_RETRY_MAX_S = 5.0


@dataclass
class HeartbeatResult:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None


class _Reject(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def _empty(value: str | None) -> bool:
    return value is not None and not value.strip()


class ConsumerGroupProtocol:
    """Heartbeats, leaves, timers and persistence of the coordinator's consumer groups."""

    def __init__(self, settings: GroupSettings, registry: GroupRegistry, timers: GroupTimers, log: GroupLog) -> None:
        self.settings = settings
        self.registry = registry
        self.groups = registry.consumer_groups
        self.timers = timers
        self.log = log

    # --- ConsumerGroupHeartbeat ---------------------------------------------------------------
    async def heartbeat(
        self, group_id: str, member_id: str, member_epoch: int, *, instance_id: str | None = None,
        rack_id: str | None = None, rebalance_timeout_ms: int = -1, subscribed_topic_names: list[str] | None = None,
        subscribed_topic_regex: str | None = None, server_assignor: str | None = None,
        owned: Assignment | None = None, client_id: str = "", client_host: str = "", api_version: int = 1,
        topics: Mapping[str, TopicMetadata] | None = None,
    ) -> HeartbeatResult:
        topics = topics or {}
        try:
            self._validate(group_id, member_id, member_epoch, instance_id, rack_id, rebalance_timeout_ms,
                           subscribed_topic_names, subscribed_topic_regex, server_assignor, owned, api_version)
            if member_epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
                return await self._leave(group_id, member_id, member_epoch, instance_id)
            if not member_id:
                member_id = str(uuid.uuid4())  # v0: the coordinator names the member
            return await self._heartbeat(group_id, member_id, member_epoch, instance_id, rack_id, rebalance_timeout_ms,
                                         subscribed_topic_names, subscribed_topic_regex, server_assignor, owned,
                                         client_id, client_host, topics)
        except _Reject as e:
            return HeartbeatResult(e.error, e.message, heartbeat_interval_ms=0)

    def _validate(self, group_id, member_id, member_epoch, instance_id, rack_id, rebalance_timeout_ms,
                  subscribed_topic_names, subscribed_topic_regex, server_assignor, owned, api_version) -> None:
        invalid = ErrorCode.invalid_request
        if api_version >= 1 and not member_id.strip():
            raise _Reject(invalid, "MemberId can't be empty.")
        if not group_id.strip():
            raise _Reject(ErrorCode.invalid_group_id, "GroupId can't be empty.")
        if _empty(instance_id):
            raise _Reject(invalid, "InstanceId can't be empty.")
        if _empty(rack_id):
            raise _Reject(invalid, "RackId can't be empty.")
        if member_epoch > 0 or member_epoch == LEAVE_GROUP_MEMBER_EPOCH:
            if not member_id.strip():
                raise _Reject(invalid, "MemberId can't be empty.")
        elif member_epoch == 0:
            if rebalance_timeout_ms == -1:
                raise _Reject(invalid, "RebalanceTimeoutMs must be provided in first request.")
            if owned is None or any(owned.values()):
                raise _Reject(invalid, "TopicPartitions must be empty when (re-)joining.")
            if not subscribed_topic_names and not subscribed_topic_regex:
                raise _Reject(invalid, "Either SubscribedTopicNames or SubscribedTopicRegex must be non-empty when "
                                       "(re-)joining.")
        elif member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            if instance_id is None:
                raise _Reject(invalid, "InstanceId can't be null.")
        else:
            raise _Reject(invalid, f"MemberEpoch {member_epoch} is invalid.")
        if subscribed_topic_regex is not None:
            try:
                compile_regex(subscribed_topic_regex)
            except re.error as e:
                raise _Reject(ErrorCode.invalid_regular_expression,
                              f"SubscribedTopicRegex {subscribed_topic_regex!r} is not a valid regular expression: {e}")
        if server_assignor is not None and server_assignor not in self.settings.consumer_assignors:
            raise _Reject(ErrorCode.unsupported_assignor,
                          f"ServerAssignor {server_assignor} is not supported. Supported assignors: "
                          f"{', '.join(self.settings.consumer_assignors)}.")

    def _group_for_heartbeat(self, group_id: str, member_epoch: int) -> ConsumerGroup:
        group = self.groups.get(group_id)
        if group is not None:
            return group
        classic = self.registry.groups.get(group_id)
        if classic is not None:
            if classic.members or member_epoch != 0:
                raise _Reject(ErrorCode.group_id_not_found, f"Group {group_id} is not a consumer group.")
            # An empty classic group (offsets only) becomes a consumer group, keeping its offsets.
            self.registry.drop_classic_group(classic)
        elif member_epoch != 0:
            raise _Reject(ErrorCode.unknown_member_id, f"Consumer group {group_id} not found.")
        group = self.groups[group_id] = ConsumerGroup(group_id)
        logger.info("consumer group %s created", group_id)
        return group

    @staticmethod
    def _check_epoch(member: ConsumerMember, member_epoch: int, owned: Assignment | None) -> None:
        if member_epoch > member.member_epoch:
            raise _Reject(ErrorCode.fenced_member_epoch,
                          f"The consumer group member has a greater member epoch ({member_epoch}) than the one known "
                          f"by the group coordinator ({member.member_epoch}). The member must abandon all its "
                          "partitions and rejoin.")
        if member_epoch < member.member_epoch and (
            member_epoch != member.previous_member_epoch or not is_subset(owned, member.assigned)
        ):
            raise _Reject(ErrorCode.fenced_member_epoch,
                          f"The consumer group member has a smaller member epoch ({member_epoch}) than the one known "
                          f"by the group coordinator ({member.member_epoch}). The member must abandon all its "
                          "partitions and rejoin.")

    async def _heartbeat(self, group_id, member_id, member_epoch, instance_id, rack_id, rebalance_timeout_ms,
                         subscribed_topic_names, subscribed_topic_regex, server_assignor, owned, client_id, client_host,
                         topics) -> HeartbeatResult:
        group = self._group_for_heartbeat(group_id, member_epoch)
        new_group = group.group_epoch == 0 and not group.members
        dirty = new_group
        replaced: ConsumerMember | None = None
        joined = False  # a new member (not a rejoin, not a static member's new incarnation)
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                if member_epoch != 0:
                    raise _Reject(ErrorCode.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
                self._check_capacity(group)
            elif member_epoch == 0:
                # A rejoin (the client lost its state): it holds nothing now.
                group.set_member_assignment(member, 0, member.state, {}, {})
                member.state = "stable"
                dirty = True
            else:
                self._check_epoch(member, member_epoch, owned)
        else:
            member = group.static_member(instance_id)
            if member_epoch == 0:
                if member is None:
                    if member_id in group.members:
                        raise _Reject(ErrorCode.fenced_instance_id,
                                      f"Member {member_id} already joined without instance id {instance_id}.")
                    self._check_capacity(group)
                else:
                    if member.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH:
                        raise _Reject(ErrorCode.unreleased_instance_id,
                                      f"Static member {member_id} with instance id {instance_id} cannot join the group "
                                      f"because the instance id is owned by {member.member_id} member.")
                    replaced = member
                    member = None
            else:
                if member is None:
                    raise _Reject(ErrorCode.unknown_member_id, f"Instance id {instance_id} is unknown.")
                if member.member_id != member_id:
                    raise _Reject(ErrorCode.fenced_instance_id,
                                  f"Static member {member_id} with instance id {instance_id} was fenced by member "
                                  f"{member.member_id}.")
                self._check_epoch(member, member_epoch, owned)

        bump = False
        if member is None:
            member = ConsumerMember(member_id, instance_id=instance_id)
            if replaced is not None:
                # The new incarnation takes the old one's place, partitions and target assignment.
                target = group.target.pop(replaced.member_id, None)
                member.assigned = copy_assignment(replaced.assigned)
                member.subscribed_topic_names = list(replaced.subscribed_topic_names)
                member.subscribed_topic_regex = replaced.subscribed_topic_regex
                member.server_assignor = replaced.server_assignor
                member.rebalance_timeout_ms = replaced.rebalance_timeout_ms
                member.rack_id = replaced.rack_id
                group.remove_member(replaced.member_id)
                if target is not None:
                    group.target[member_id] = target
                logger.info("consumer group %s: static member %s rejoined as %s (was %s)", group_id, instance_id,
                            member_id, replaced.member_id)
            else:
                bump = True
                joined = True
                logger.info("consumer group %s: member %s joins", group_id, member_id)
            group.add_member(member)
            dirty = True
        before = member.to_json()
        old_assigned = copy_assignment(member.assigned) if replaced is None else {}
        old_subscription = member.subscription_key()
        if rack_id is not None:
            member.rack_id = rack_id
        if rebalance_timeout_ms != -1:
            member.rebalance_timeout_ms = rebalance_timeout_ms
        if server_assignor is not None:
            member.server_assignor = server_assignor
        if subscribed_topic_names is not None:
            member.subscribed_topic_names = list(subscribed_topic_names)
        if subscribed_topic_regex is not None:
            member.subscribed_topic_regex = subscribed_topic_regex or None
        member.client_id, member.client_host = client_id, client_host
        if member.subscription_key() != old_subscription:
            bump = True
            logger.info("consumer group %s: member %s subscribes to %s%s", group_id, member_id,
                        member.subscribed_topic_names,
                        f" and /{member.subscribed_topic_regex}/" if member.subscribed_topic_regex else "")

        metadata = self._subscription_metadata(group, topics)
        if metadata != group.subscription_metadata:
            group.subscription_metadata = metadata
            bump = True
        if bump:
            group.group_epoch += 1
            dirty = True
            logger.info("consumer group %s: group epoch %d", group_id, group.group_epoch)
        if group.group_epoch > group.assignment_epoch:
            self._compute_target(group)
            dirty = True

        self._reconcile(group, member, owned)
        self._schedule_session_timeout(group, member)
        if dirty or member.to_json() != before or group.failed_write:
            try:
                await self.persist(group, answer=True)
            except _Reject:
                # The change stays in memory (retries at this or the previous epoch are taken), but
                # not a join's: Kafka drops it with its write, and a retry must find no member (a v0
                # client's comes under a new member id; a static one's would find its instance
                # taken). A static member taking over its instance keeps the old answer, NONE, and the
                # group is written again at the next heartbeat (undoing a takeover is not worth it).
                if replaced is not None:
                    logger.info("consumer group %s: static member %s's takeover answered before it was stored",
                                group_id, member_id)
                else:
                    if joined and group.members.get(member.member_id) is member:
                        self._remove_member(group, member)
                    raise
        include_assignment = (owned is not None or member_epoch == 0
                              or not same_assignment(old_assigned, member.assigned))
        return HeartbeatResult(
            ErrorCode.none, None, member.member_id, member.member_epoch, self.settings.consumer_heartbeat_interval_ms,
            copy_assignment(member.assigned) if include_assignment else None,
        )

    def _check_capacity(self, group: ConsumerGroup) -> None:
        limit = self.settings.consumer_max_size
        if len(group.members) >= limit:
            raise _Reject(ErrorCode.group_max_size_reached,
                          f"The consumer group has reached its maximum capacity of {limit} members.")

    @staticmethod
    def _subscription_metadata(group: ConsumerGroup, topics: Mapping[str, TopicMetadata]) -> dict[str, TopicMetadata]:
        return {name: topics[name] for name in sorted(group.subscribed_topic_names(topics.keys()))}

    def _preferred_assignor(self, group: ConsumerGroup) -> str:
        configured = self.settings.consumer_assignors
        votes: dict[str, int] = {}
        for member in group.members.values():
            if member.server_assignor in configured:
                votes[member.server_assignor] = votes.get(member.server_assignor, 0) + 1
        if not votes:
            return configured[0]
        return max(configured, key=lambda name: (votes.get(name, 0), -configured.index(name)))

    def _compute_target(self, group: ConsumerGroup) -> None:
        metadata = group.subscription_metadata
        topic_specs = {m.topic_id: TopicSpec(name, m.partitions) for name, m in metadata.items()}
        members = {
            member.member_id: MemberSpec(
                frozenset(metadata[name].topic_id for name in group.member_topic_names(member, metadata.keys())),
                member.rack_id,
            )
            for member in group.members.values()
        }
        name = self._preferred_assignor(group)
        group.target = ASSIGNORS[name](members, topic_specs, group.target)
        group.assignor_name = name
        group.assignment_epoch = group.group_epoch
        logger.info("consumer group %s: target assignment of epoch %d by %s: %s", group.group_id,
                    group.assignment_epoch, name,
                    {m: {metadata_name(metadata, t): sorted(ps) for t, ps in a.items()} for m, a in group.target.items()})

    def _reconcile(self, group: ConsumerGroup, member: ConsumerMember, owned: Assignment | None) -> None:
        was_unrevoked = member.state == MEMBER_UNREVOKED
        step = reconcile(member, group.assignment_epoch, group.target.get(member.member_id, {}), owned,
                         group.owner_of)
        group.set_member_assignment(member, step.member_epoch, step.state, step.assigned, step.pending_revocation)
        if member.state == MEMBER_UNREVOKED:
            if not was_unrevoked or member.rebalance_timer is None:
                self._schedule_rebalance_timeout(group, member)
        elif member.rebalance_timer is not None:
            member.rebalance_timer.cancel()
            member.rebalance_timer = None

    # --- leaving and timers -------------------------------------------------------------------
    async def _leave(self, group_id: str, member_id: str, member_epoch: int, instance_id: str | None) -> HeartbeatResult:
        group = self.groups.get(group_id)
        if group is None:
            raise _Reject(ErrorCode.group_id_not_found, f"Consumer group {group_id} not found.")
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                raise _Reject(ErrorCode.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
        else:
            member = group.static_member(instance_id)
            if member is None:
                raise _Reject(ErrorCode.unknown_member_id, f"Instance id {instance_id} is unknown.")
            if member.member_id != member_id:
                raise _Reject(ErrorCode.fenced_instance_id,
                              f"Static member {member_id} with instance id {instance_id} was fenced by member "
                              f"{member.member_id}.")
        if member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            # A static member leaving for a while: it keeps its partitions until it rejoins or times out.
            group.set_member_assignment(member, LEAVE_GROUP_STATIC_MEMBER_EPOCH, "stable", member.assigned, {})
            if member.rebalance_timer is not None:
                member.rebalance_timer.cancel()
                member.rebalance_timer = None
            self._schedule_session_timeout(group, member)
            logger.info("consumer group %s: static member %s (%s) left temporarily", group_id, member_id, instance_id)
            await self.persist(group, answer=True)
            return HeartbeatResult(ErrorCode.none, None, member_id, LEAVE_GROUP_STATIC_MEMBER_EPOCH, 0)
        logger.info("consumer group %s: member %s left", group_id, member_id)
        self._remove_member(group, member)
        await self.persist(group, answer=True)
        return HeartbeatResult(ErrorCode.none, None, member_id, LEAVE_GROUP_MEMBER_EPOCH, 0)

    def _remove_member(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        group.remove_member(member.member_id)
        group.group_epoch += 1

    def _schedule_session_timeout(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
        member.session_timer = self.timers.session_timer(
            self.settings.consumer_session_timeout_ms, self._on_session_timeout, group, member)

    def _on_session_timeout(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        member.session_timer = None
        if group.members.get(member.member_id) is not member:
            return
        logger.info("consumer group %s: member %s failed (no heartbeat within %d ms)", group.group_id,
                    member.member_id, self.settings.consumer_session_timeout_ms)
        self._remove_member(group, member)
        self.timers.spawn(self.persist(group))

    def _schedule_rebalance_timeout(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        if member.rebalance_timer is not None:
            member.rebalance_timer.cancel()
        member.rebalance_timer = self.timers.call_later(
            member.rebalance_timeout_ms, self._on_rebalance_timeout, group, member, member.member_epoch)

    def _on_rebalance_timeout(self, group: ConsumerGroup, member: ConsumerMember, member_epoch: int) -> None:
        member.rebalance_timer = None
        if group.members.get(member.member_id) is not member:
            return
        if member.state != MEMBER_UNREVOKED or member.member_epoch != member_epoch:
            return
        logger.info("consumer group %s: member %s did not revoke its partitions within %d ms", group.group_id,
                    member.member_id, member.rebalance_timeout_ms)
        self._remove_member(group, member)
        self.timers.spawn(self.persist(group))

    def start_timers(self, group: ConsumerGroup) -> None:
        """After loading: every member must heartbeat within its session timeout."""
        for member in group.members.values():
            self._schedule_session_timeout(group, member)
            if member.state == MEMBER_UNREVOKED:
                self._schedule_rebalance_timeout(group, member)

    # --- persistence ---------------------------------------------------------------------------
    async def persist(self, group: ConsumerGroup, *, answer: bool = False, retry: bool = False) -> None:
        """Write the group's snapshot. A failure is logged and leaves ``group.failed_write`` set, so
        the next heartbeat writes the group again even if it changes nothing (the client's retry);
        ``answer`` (a heartbeat waits for it) also raises it as the error the heartbeat answers:
        the change stays in memory but is not acknowledged until a write of it is durable.

        A failure also starts ``_rewrite``, which writes the group again after a back-off until
        one is stored: a change whose write nobody retries (a leave, whose retry finds no member;
        a member a timer removed) was stored only with the group's next write, never if no
        member heartbeated, and a coordinator failover brought the member back (robust16).
        ``retry``: ``_rewrite``'s own write (its failures logged at DEBUG: the first was not)."""
        if group.deleted:
            return
        group.writes_started += 1
        attempt = group.writes_started
        try:
            await self.log.write(
                [(encode_consumer_group_key(ConsumerGroupKey(group.group_id)), encode_consumer_group_value(encode_group_snapshot(group)))])
        except Exception as e:  # noqa: BLE001 - the next change or heartbeat rewrites the whole group
            group.failed_write = max(group.failed_write, attempt)
            logger.log(logging.DEBUG if retry else write_failure_level(e),
                       "consumer group %s: cannot store group metadata: %s", group.group_id, e)
            if not group.rewriting:
                group.rewriting = True
                self.timers.spawn(self._rewrite(group))
            if answer:
                raise _Reject(heartbeat_write_error(e), f"The group metadata could not be stored: {e}") from None
            return
        if attempt > group.failed_write:  # (a snapshot taken after the failed one's: it holds its changes)
            group.failed_write = 0

    async def _rewrite(self, group: ConsumerGroup) -> None:
        """Write ``group`` again after a back-off (WRITE_RETRY_FIRST_S, doubling up to
        WRITE_RETRY_MAX_S) while its last write failed and nothing stored it since (a heartbeat's
        write does it too); one INFO once stored. Ends with the group (deleted, or no longer this
        coordinator's: ``stop`` cancels it)."""
        delay, retries = WRITE_RETRY_FIRST_S, 0
        try:
            while group.failed_write and not group.deleted and self.groups.get(group.group_id) is group:
                await asyncio.sleep(delay)
                if not group.failed_write or group.deleted:
                    break
                retries += 1
                await self.persist(group, retry=True)
                delay = min(delay * 2, WRITE_RETRY_MAX_S)
        finally:
            group.rewriting = False
        if retries and not group.failed_write:
            logger.info("consumer group %s: group metadata stored again (%d retr%s after a failed write)",
                        group.group_id, retries, "y" if retries == 1 else "ies")

    # --- OffsetCommit / OffsetFetch validation -------------------------------------------------
    @staticmethod
    def validate_offset_commit(group: ConsumerGroup, member_id: str, member_epoch: int,
                               api_version: int | None) -> ErrorCode:
        if member_epoch < 0 and not group.members:
            return ErrorCode.none  # an admin tool or an assign() consumer, allowed while the group is empty
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if api_version is not None and api_version < 9:
            return ErrorCode.unsupported_version  # members of the new protocol commit with v9+
        if member_epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none

    @staticmethod
    def validate_offset_fetch(group: ConsumerGroup, member_id: str | None, member_epoch: int) -> ErrorCode:
        if member_epoch < 0 and not member_id:
            return ErrorCode.none
        member = group.members.get(member_id or "")
        if member is None:
            return ErrorCode.unknown_member_id
        if member_epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none


def heartbeat_write_error(e: Exception) -> ErrorCode:
    """What a ConsumerGroupHeartbeat answers when its group write failed: Kafka's
    GroupCoordinatorService mapping (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, UNKNOWN_TOPIC_OR_PARTITION:
    COORDINATOR_NOT_AVAILABLE; NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR: NOT_COORDINATOR, which
    offsets_topic.coordinator_error already made of them), so clients retry or find the coordinator
    again. Never UNKNOWN_SERVER_ERROR, nor REQUEST_TIMED_OUT (not retried by every client here)."""
    error = write_error(e)
    if error in (ErrorCode.not_coordinator, ErrorCode.coordinator_load_in_progress):
        return error
    return ErrorCode.coordinator_not_available


def metadata_name(metadata: Mapping[str, TopicMetadata], topic_id: uuid.UUID) -> str:
    for name, m in metadata.items():
        if m.topic_id == topic_id:
            return name
    return str(topic_id)

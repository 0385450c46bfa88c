"""The classic consumer group protocol of the group coordinator: JoinGroup, SyncGroup,
Heartbeat and LeaveGroup over ``ClassicGroup`` (groups/classic_group.py), as Kafka 4.0 serves them.

JoinGroup requests wait (their handlers await a future) until the join phase completes: when
every known member has rejoined, or when the rebalance timeout (the largest of the members')
fires. A new group's first rebalance waits ``group.initial.rebalance.delay.ms`` more, extended
by each new member up to the rebalance timeout, so consumers starting together land in one
generation. Session timeouts, the join phase, the initial delay and the sync phase are timers
(groups/timers.py) reset by each heartbeat; nothing polls.

Members: JoinGroup v4+ without a member id gets MEMBER_ID_REQUIRED and a fresh id it must
join with (KIP-394); until then it is a pending member, expired after its session timeout.
Static members (``group.instance.id``, KIP-345) keep their instance id across restarts: a
rejoin with a new member id replaces the old one (whose pending requests get
FENCED_INSTANCE_ID), and in a Stable group without a protocol change it gets the current
assignment back without a rebalance. A static member that stops heartbeating is removed after
its session timeout; a dynamic one that misses a rebalance is dropped at the end of the join
phase.

Persistence: the leader's assignment is written (one ``GroupKey`` record of the whole group,
see groups/records.py) to ``__consumer_offsets`` before any member gets it; a failed write
fails the generation's SyncGroup and starts a new rebalance. After a restart members keep their
generation and assignment and must heartbeat within their session timeout.
Not thread-safe; everything runs on the broker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from tidelog.groups.classic_group import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    UNKNOWN_MEMBER_ID,
    ClassicGroup,
    JoinResult,
    Member,
    SyncResult,
)
from tidelog.groups.records import GroupKey, encode_group_key, encode_group_value
from tidelog.groups.registry import GroupLog, GroupRegistry, write_error, write_failure_level
from tidelog.groups.settings import GroupSettings
from tidelog.groups.timers import GroupTimers
from tidelog.protocol.errors import ErrorCode

logger = logging.getLogger(__name__)


class ClassicGroupProtocol:
    """Joins, syncs, heartbeats, leaves, timers and persistence of the coordinator's classic groups."""

    def __init__(self, settings: GroupSettings, registry: GroupRegistry, timers: GroupTimers, log: GroupLog) -> None:
        self.settings = settings
        self.registry = registry
        self.groups = registry.groups
        self.timers = timers
        self.log = log

    # --- JoinGroup ------------------------------------------------------------------------
    async def join_group(
        self, group_id: str, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
        session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str, protocols: list[tuple[str, bytes]],
        require_known_member_id: bool = False,
    ) -> JoinResult:
        if not group_id:
            return JoinResult(ErrorCode.invalid_group_id, member_id)
        if not self.settings.min_session_timeout_ms <= session_timeout_ms <= self.settings.max_session_timeout_ms:
            return JoinResult(ErrorCode.invalid_session_timeout, member_id)
        consumer_group = self.registry.consumer_groups.get(group_id)
        if consumer_group is not None:
            if consumer_group.members:
                # Kafka 4.0 could migrate classic members into it; Tidelog keeps the protocols apart.
                return JoinResult(ErrorCode.inconsistent_group_protocol, member_id)
            self.registry.drop_consumer_group(consumer_group)  # empty: it becomes a classic group, offsets kept
        group = self.groups.get(group_id)
        if group is None:
            if member_id != UNKNOWN_MEMBER_ID:
                return JoinResult(ErrorCode.unknown_member_id, member_id)
            group = self.groups[group_id] = ClassicGroup(group_id)
        if group.state == DEAD:
            return JoinResult(ErrorCode.coordinator_not_available, member_id)
        if not group.supports_protocols(protocol_type, protocols, member_id or None):
            return JoinResult(ErrorCode.inconsistent_group_protocol, member_id)
        if member_id == UNKNOWN_MEMBER_ID:
            future = self._new_member_join(group, group_instance_id, client_id, client_host, session_timeout_ms,
                                           rebalance_timeout_ms, protocol_type, protocols, require_known_member_id)
        else:
            future = self._current_member_join(group, member_id, group_instance_id, client_id, client_host,
                                               session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)
        return await future

    def _resolved(self, result: JoinResult) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    def _new_member_join(self, group, group_instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                         protocol_type, protocols, require_known_member_id) -> asyncio.Future:
        new_member_id = f"{client_id}-{uuid.uuid4()}"
        if group_instance_id is not None:
            old_member_id = group.static_members.get(group_instance_id)
            if old_member_id is not None and old_member_id in group.members:
                return self._static_member_rejoin(group, old_member_id, new_member_id, group_instance_id, client_id,
                                                  client_host, session_timeout_ms, rebalance_timeout_ms, protocol_type,
                                                  protocols)
            return self._add_member_and_rebalance(group, new_member_id, group_instance_id, client_id, client_host,
                                                  session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)
        if require_known_member_id:
            # KIP-394: hand out the id first; the member is pending until it joins with it.
            group.pending_members[new_member_id] = self.timers.call_later(
                session_timeout_ms, self._expire_pending_member, group, new_member_id)
            return self._resolved(JoinResult(ErrorCode.member_id_required, new_member_id))
        return self._add_member_and_rebalance(group, new_member_id, None, client_id, client_host, session_timeout_ms,
                                              rebalance_timeout_ms, protocol_type, protocols)

    def _static_member_rejoin(self, group, old_member_id, new_member_id, group_instance_id, client_id, client_host,
                              session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols) -> asyncio.Future:
        old = group.members[old_member_id]
        protocols_changed = not old.same_protocols(protocols)
        member = self._replace_static_member(group, old, new_member_id)
        member.client_id, member.client_host = client_id, client_host
        logger.info("group %s: static member %s rejoined as %s (was %s)", group.group_id, group_instance_id,
                    new_member_id, old_member_id)
        if group.state == STABLE and not protocols_changed:
            member.session_timeout_ms, member.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            self.timers.spawn(self._persist_group(group))
            is_leader = group.is_leader(member.member_id)
            return self._resolved(JoinResult(
                ErrorCode.none, member.member_id, group.generation_id, group.protocol_type, group.protocol_name,
                group.leader_id or "", skip_assignment=is_leader,
                members=self._member_list(group) if is_leader else [],
            ))
        return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                                 f"static member {group_instance_id} rejoined")

    def _replace_static_member(self, group: ClassicGroup, old: Member, new_member_id: str) -> Member:
        """Give ``old``'s place (and assignment) to ``new_member_id``, fencing the old member's requests."""
        old.complete_join(JoinResult(ErrorCode.fenced_instance_id, old.member_id))
        old.complete_sync(SyncResult(ErrorCode.fenced_instance_id))
        old.cancel_heartbeat()
        del group.members[old.member_id]
        group.pending_sync.discard(old.member_id)
        old.member_id = new_member_id
        group.members[new_member_id] = old
        group.static_members[old.group_instance_id] = new_member_id
        if group.leader_id is not None and group.leader_id not in group.members:
            group.leader_id = new_member_id
        return old

    def _current_member_join(self, group, member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                             rebalance_timeout_ms, protocol_type, protocols) -> asyncio.Future:
        if member_id in group.pending_members:
            handle = group.pending_members.pop(member_id)
            if handle is not None:
                handle.cancel()
            return self._add_member_and_rebalance(group, member_id, group_instance_id, client_id, client_host,
                                                  session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)
        error = self._validate_member(group, member_id, group_instance_id)
        if error is not ErrorCode.none:
            return self._resolved(JoinResult(error, member_id))
        member = group.members[member_id]
        if group.state == PREPARING_REBALANCE:
            return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                                     f"member {member_id} rejoined")
        if group.state == COMPLETING_REBALANCE:
            if member.same_protocols(protocols):
                # A retried join of this generation: answer it again.
                is_leader = group.is_leader(member_id)
                return self._resolved(JoinResult(
                    ErrorCode.none, member_id, group.generation_id, group.protocol_type, group.protocol_name,
                    group.leader_id or "", members=self._member_list(group) if is_leader else [],
                ))
            return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                                     f"member {member_id} changed its protocols")
        if group.state == STABLE:
            if group.is_leader(member_id) or not member.same_protocols(protocols):
                return self._update_member_and_rebalance(group, member, session_timeout_ms, rebalance_timeout_ms,
                                                         protocols, f"member {member_id} rejoined a stable group")
            return self._resolved(JoinResult(
                ErrorCode.none, member_id, group.generation_id, group.protocol_type, group.protocol_name,
                group.leader_id or "",
            ))
        return self._resolved(JoinResult(ErrorCode.unknown_member_id, member_id))

    def _validate_member(self, group: ClassicGroup, member_id: str, group_instance_id: str | None) -> ErrorCode:
        if group_instance_id is not None:
            known = group.static_members.get(group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.fenced_instance_id
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if group_instance_id is not None and member.group_instance_id not in (None, group_instance_id):
            return ErrorCode.fenced_instance_id
        return ErrorCode.none

    def _member_list(self, group: ClassicGroup) -> list[tuple[str, str | None, bytes]]:
        return [(m.member_id, m.group_instance_id, m.metadata(group.protocol_name)) for m in group.members.values()]

    def _add_member_and_rebalance(self, group, member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                                  rebalance_timeout_ms, protocol_type, protocols) -> asyncio.Future:
        member = Member(member_id, group_instance_id, client_id, client_host, rebalance_timeout_ms, session_timeout_ms,
                        protocol_type, list(protocols))
        member.join_future = asyncio.get_running_loop().create_future()
        future = member.join_future
        if group.state == PREPARING_REBALANCE and group.initial_delay_remaining_ms is not None:
            group.new_member_added = True
        if not group.members:
            group.protocol_type = protocol_type
        group.members[member_id] = member
        if group_instance_id is not None:
            group.static_members[group_instance_id] = member_id
        self._schedule_heartbeat(group, member, session_timeout_ms)
        self._maybe_prepare_rebalance(group, f"member {member_id} joined")
        return future

    def _update_member_and_rebalance(self, group, member, session_timeout_ms, rebalance_timeout_ms, protocols,
                                     reason) -> asyncio.Future:
        if member.awaiting_join:
            # A duplicate join of the same member: the older request is answered as superseded.
            member.complete_join(JoinResult(ErrorCode.unknown_member_id, member.member_id))
        member.protocols = list(protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.join_future = asyncio.get_running_loop().create_future()
        future = member.join_future
        self._schedule_heartbeat(group, member, session_timeout_ms)
        self._maybe_prepare_rebalance(group, reason)
        return future

    def _maybe_prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.state in (STABLE, COMPLETING_REBALANCE, EMPTY):
            self._prepare_rebalance(group, reason)
        # Complete at once when every member has already joined (a group's only member
        # rejoining), as Kafka's tryCompleteElseWatch does, rather than at the rebalance timeout.
        self._try_complete_join(group)

    def _prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.state == COMPLETING_REBALANCE:
            for member in group.members.values():
                member.complete_sync(SyncResult(ErrorCode.rebalance_in_progress))
        if group.sync_timer is not None:
            group.sync_timer.cancel()
            group.sync_timer = None
        group.pending_sync.clear()
        if group.join_timer is not None:
            group.join_timer.cancel()
        rebalance_timeout_ms = group.rebalance_timeout_ms()
        if group.state == EMPTY:
            delay = self.settings.initial_rebalance_delay_ms
            group.initial_delay_remaining_ms = max(rebalance_timeout_ms - delay, 0)
            group.new_member_added = False
            group.join_timer = self.timers.call_later(delay, self._on_initial_delay, group, delay)
        else:
            group.initial_delay_remaining_ms = None
            group.join_timer = self.timers.call_later(rebalance_timeout_ms, self._complete_join, group)
        group.transition(PREPARING_REBALANCE)
        logger.info("group %s: preparing to rebalance (generation %d): %s", group.group_id, group.generation_id, reason)

    def _on_initial_delay(self, group: ClassicGroup, delay_ms: int) -> None:
        remaining = group.initial_delay_remaining_ms or 0
        if group.new_member_added and remaining > 0:
            # Members are still arriving: wait another delay, bounded by the rebalance timeout.
            group.new_member_added = False
            next_delay = min(delay_ms, remaining)
            group.initial_delay_remaining_ms = max(remaining - delay_ms, 0)
            group.join_timer = self.timers.call_later(next_delay, self._on_initial_delay, group, next_delay)
            return
        self._complete_join(group)

    def _try_complete_join(self, group: ClassicGroup) -> None:
        if group.state == PREPARING_REBALANCE and group.initial_delay_remaining_ms is None and group.all_joined():
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        if group.state != PREPARING_REBALANCE:
            return
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        group.initial_delay_remaining_ms = None
        group.new_member_added = False
        for member in [m for m in group.members.values() if not m.awaiting_join and not m.is_static]:
            logger.info("group %s: removing member %s, which did not rejoin in time", group.group_id, member.member_id)
            self._remove_member(group, member)
        for member_id, handle in list(group.pending_members.items()):
            if handle is not None:
                handle.cancel()
        group.pending_members.clear()
        joined = [m for m in group.members.values() if m.awaiting_join]
        if group.members and not joined:
            # Only static members that have not rejoined: wait for them another round.
            group.join_timer = self.timers.call_later(group.rebalance_timeout_ms(), self._complete_join, group)
            return
        if group.leader_id not in group.members or not group.members[group.leader_id].awaiting_join:
            group.leader_id = joined[0].member_id if joined else None
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.transition(EMPTY)
            logger.info("group %s: generation %d is empty", group.group_id, group.generation_id)
            self.timers.spawn(self._persist_group(group))
            return
        group.protocol_name = group.select_protocol()
        group.transition(COMPLETING_REBALANCE)
        logger.info("group %s: generation %d with %d members, protocol %s, leader %s", group.group_id,
                    group.generation_id, len(group.members), group.protocol_name, group.leader_id)
        member_list = self._member_list(group)
        for member in list(group.members.values()):
            is_leader = group.is_leader(member.member_id)
            if member.awaiting_join:
                member.complete_join(JoinResult(
                    ErrorCode.none, member.member_id, group.generation_id, group.protocol_type, group.protocol_name,
                    group.leader_id or "", members=member_list if is_leader else [],
                ))
                member.is_new = False
                group.pending_sync.add(member.member_id)
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
        group.sync_timer = self.timers.call_later(group.rebalance_timeout_ms(), self._on_sync_timeout, group,
                                            group.generation_id)

    def _on_sync_timeout(self, group: ClassicGroup, generation_id: int) -> None:
        group.sync_timer = None
        if generation_id != group.generation_id or group.state not in (COMPLETING_REBALANCE, STABLE):
            return
        missing = [group.members[m] for m in group.pending_sync if m in group.members]
        group.pending_sync.clear()
        if not missing:
            return
        for member in missing:
            logger.info("group %s: removing member %s, which did not sync in time", group.group_id, member.member_id)
            self._remove_member(group, member)
        self._prepare_rebalance(group, "members did not send SyncGroup in time")

    # --- SyncGroup ------------------------------------------------------------------------
    async def sync_group(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
        protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes],
    ) -> SyncResult:
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            return SyncResult(ErrorCode.unknown_member_id if group is None else ErrorCode.coordinator_not_available)
        error = self._validate_member(group, member_id, group_instance_id)
        if error is not ErrorCode.none:
            return SyncResult(error)
        if generation_id != group.generation_id:
            return SyncResult(ErrorCode.illegal_generation)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult(ErrorCode.inconsistent_group_protocol)
        if group.state == EMPTY:
            return SyncResult(ErrorCode.unknown_member_id)
        if group.state == PREPARING_REBALANCE:
            return SyncResult(ErrorCode.rebalance_in_progress)
        member = group.members[member_id]
        group.pending_sync.discard(member_id)
        self._schedule_heartbeat(group, member, member.session_timeout_ms)
        if group.state == STABLE:
            return SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment)
        # CompletingRebalance: wait for the leader's assignment.
        if member.awaiting_sync:
            member.complete_sync(SyncResult(ErrorCode.rebalance_in_progress))
        member.sync_future = asyncio.get_running_loop().create_future()
        future = member.sync_future
        if group.is_leader(member_id):
            await self._complete_sync(group, generation_id, assignments)
        return await future

    async def _complete_sync(self, group: ClassicGroup, generation_id: int, assignments: dict[str, bytes]) -> None:
        pending_assignment = {m: assignments.get(m, b"") for m in group.members}
        value = group.to_value()
        for mv in value.members:
            mv.assignment = pending_assignment.get(mv.member_id, b"")
        error = ErrorCode.none
        try:
            await self.log.write([(encode_group_key(GroupKey(group.group_id)), encode_group_value(value))])
        except Exception as e:  # noqa: BLE001 - any storage failure fails this generation's sync
            logger.log(write_failure_level(e), "group %s: cannot store group metadata: %s", group.group_id, e)
            error = write_error(e)
            if error is ErrorCode.request_timed_out:  # as Kafka's storeGroup: the members rejoin
                error = ErrorCode.rebalance_in_progress
        if group.state != COMPLETING_REBALANCE or group.generation_id != generation_id:
            return  # a rebalance started meanwhile; the members were told
        if error is not ErrorCode.none:
            for member in group.members.values():
                member.assignment = b""
                member.complete_sync(SyncResult(error))
            self._prepare_rebalance(group, "storing the group metadata failed")
            return
        for member in group.members.values():
            member.assignment = pending_assignment.get(member.member_id, b"")
        group.transition(STABLE)
        for member in group.members.values():
            member.complete_sync(SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment))
        logger.info("group %s: generation %d is stable", group.group_id, generation_id)

    # --- Heartbeat and LeaveGroup ---------------------------------------------------------
    def heartbeat(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        if group.state == DEAD:
            return ErrorCode.coordinator_not_available
        error = self._validate_member(group, member_id, group_instance_id)
        if error is not ErrorCode.none:
            return error
        if generation_id != group.generation_id:
            return ErrorCode.illegal_generation
        if group.state == EMPTY:
            return ErrorCode.unknown_member_id
        member = group.members[member_id]
        self._schedule_heartbeat(group, member, member.session_timeout_ms)
        if group.state == PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """Remove members ``(member_id, group_instance_id)``; returns the group error and one error per member."""
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id for _ in members]
        if group.state == DEAD:
            return ErrorCode.coordinator_not_available, [ErrorCode.coordinator_not_available for _ in members]
        errors = []
        for member_id, group_instance_id in members:
            if member_id in group.pending_members and group_instance_id is None:
                handle = group.pending_members.pop(member_id)
                if handle is not None:
                    handle.cancel()
                self._try_complete_join(group)
                errors.append(ErrorCode.none)
                continue
            if member_id == UNKNOWN_MEMBER_ID and group_instance_id is not None:
                member_id = group.static_members.get(group_instance_id, "")
                if not member_id:
                    errors.append(ErrorCode.unknown_member_id)
                    continue
            error = self._validate_member(group, member_id, group_instance_id)
            if error is not ErrorCode.none:
                errors.append(error)
                continue
            member = group.members[member_id]
            logger.info("group %s: member %s left", group.group_id, member_id)
            self._remove_member_and_update(group, member, f"member {member_id} left the group")
            errors.append(ErrorCode.none)
        return ErrorCode.none, errors

    def _schedule_heartbeat(self, group: ClassicGroup, member: Member, timeout_ms: int) -> None:
        member.cancel_heartbeat()
        member.heartbeat_timer = self.timers.session_timer(timeout_ms, self._on_heartbeat_expired, group, member)

    def _on_heartbeat_expired(self, group: ClassicGroup, member: Member) -> None:
        member.heartbeat_timer = None
        if group.members.get(member.member_id) is not member:
            return
        if member.awaiting_join or member.awaiting_sync:
            # Requests parked in a rebalance keep the member alive; the rebalance timeout bounds them.
            self._schedule_heartbeat(group, member, member.session_timeout_ms)
            return
        logger.info("group %s: member %s failed (no heartbeat within %d ms)", group.group_id, member.member_id,
                    member.session_timeout_ms)
        self._remove_member_and_update(group, member, f"member {member.member_id} session timed out")

    def _expire_pending_member(self, group: ClassicGroup, member_id: str) -> None:
        if group.pending_members.pop(member_id, None) is not None:
            logger.info("group %s: pending member %s expired", group.group_id, member_id)
            self._try_complete_join(group)

    def _remove_member(self, group: ClassicGroup, member: Member) -> None:
        member.cancel_heartbeat()
        member.complete_join(JoinResult(ErrorCode.unknown_member_id, member.member_id))
        member.complete_sync(SyncResult(ErrorCode.unknown_member_id))
        group.members.pop(member.member_id, None)
        group.pending_sync.discard(member.member_id)
        if member.is_static and group.static_members.get(member.group_instance_id) == member.member_id:
            del group.static_members[member.group_instance_id]
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    def _remove_member_and_update(self, group: ClassicGroup, member: Member, reason: str) -> None:
        self._remove_member(group, member)
        if group.state in (STABLE, COMPLETING_REBALANCE):
            # Completed at once when nobody is left to wait for (the last member left): the group
            # is Empty before the LeaveGroup is answered, as Kafka's tryCompleteElseWatch.
            self._maybe_prepare_rebalance(group, reason)
        elif group.state == PREPARING_REBALANCE:
            self._try_complete_join(group)


    # --- OffsetCommit validation, loading, stopping -----------------------------------------
    def validate_offset_commit(self, group_id: str, generation_id: int, member_id: str,
                               group_instance_id: str | None, api_version: int | None = None
                               ) -> tuple[ErrorCode, ClassicGroup | None]:
        group = self.groups.get(group_id)
        if group is None:
            if generation_id < 0:
                return ErrorCode.none, None  # an assign() consumer: the group is created on commit
            if api_version is not None and api_version >= 9:
                return ErrorCode.group_id_not_found, None
            return ErrorCode.illegal_generation, None
        if group.state == DEAD:
            return ErrorCode.coordinator_not_available, group
        if generation_id < 0 and group.state == EMPTY:
            return ErrorCode.none, group
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            error = self._validate_member(group, member_id, group_instance_id)
            if error is not ErrorCode.none:
                return error, group
            if generation_id != group.generation_id:
                return ErrorCode.illegal_generation, group
        elif group.state != EMPTY:
            return ErrorCode.unknown_member_id, group
        if group.state == COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress, group
        return ErrorCode.none, group

    def keep_alive(self, group: ClassicGroup, member_id: str) -> None:
        """An OffsetCommit from a member counts as its heartbeat."""
        member = group.members.get(member_id)
        if member is not None:
            self._schedule_heartbeat(group, member, member.session_timeout_ms)

    async def _persist_group(self, group: ClassicGroup) -> None:
        try:
            await self.log.write([(encode_group_key(GroupKey(group.group_id)), encode_group_value(group.to_value()))])
        except Exception as e:  # noqa: BLE001 - metadata is rewritten at the next rebalance
            logger.log(write_failure_level(e), "group %s: cannot store group metadata: %s", group.group_id, e)

    def start_timers(self, group: ClassicGroup) -> None:
        """After loading: every member must heartbeat within its session timeout, as after a failover."""
        for member in group.members.values():
            self._schedule_heartbeat(group, member, member.session_timeout_ms)

    def stop(self) -> None:
        """Stop the timers and answer the joins and syncs still waiting NOT_COORDINATOR (this
        broker no longer coordinates: the members look the new coordinator up, as Kafka's
        group unload answers them), rather than leaving them waiting with no timer to end it."""
        for group in self.groups.values():
            group.cancel_timers()
            for member in group.members.values():
                member.complete_join(JoinResult(ErrorCode.not_coordinator, member.member_id))
                member.complete_sync(SyncResult(ErrorCode.not_coordinator))

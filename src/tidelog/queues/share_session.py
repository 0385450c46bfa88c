"""Share sessions: the ShareFetch session cache (KIP-932), as Kafka 4.2's ShareSessionCache keeps it.

A share session belongs to one member of one share group on this broker and remembers which
share-partitions the member fetches, so a ShareFetch may list only what changed. Its epoch:

- ShareFetch with epoch 0 opens a session (replacing the member's old one) with the partitions it
  names; it may not carry acknowledgements (INVALID_REQUEST). The next request must use epoch 1.
  More than ``group.share.max.share.sessions`` sessions: SHARE_SESSION_LIMIT_REACHED.
- Epoch n > 0 must match the session's (INVALID_SHARE_SESSION_EPOCH; SHARE_SESSION_NOT_FOUND when
  there is none); it adds the named partitions, drops the forgotten ones, and the epoch advances
  (after 2^31-1 it wraps to 1).
- Epoch -1 closes the session (SHARE_SESSION_NOT_FOUND when there is none): acknowledgements are
  processed, nothing is fetched, and the member's acquired records are released.
- ShareAcknowledge uses the same epochs, but may not open a session (epoch 0:
  INVALID_SHARE_SESSION_EPOCH); with -1 it closes it.

A session whose connection closes is removed (``on_disconnect``), and the caller releases the
member's records. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Iterable

from tidelog.protocol.errors import ErrorCode, KafkaError

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
_MAX_EPOCH = 2**31 - 1

SharePartitionId = tuple[uuid.UUID, int]  # (topic id, partition)


def next_epoch(epoch: int) -> int:
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == _MAX_EPOCH else epoch + 1


class ContextKind(enum.Enum):
    INITIAL = "initial"  # a new session: fetch the request's partitions
    SUBSEQUENT = "subsequent"  # an existing session: fetch all its partitions
    FINAL = "final"  # closing: acknowledge only, then release the member's records


@dataclass
class ShareSession:
    group_id: str
    member_id: str
    epoch: int  # the epoch the next request must carry
    partitions: dict[SharePartitionId, None] = field(default_factory=dict)  # insertion-ordered set
    connection_id: str | None = None


@dataclass
class ShareFetchContext:
    kind: ContextKind
    partitions: list[SharePartitionId]  # what this ShareFetch fetches from
    session: ShareSession | None = None


class ShareSessionCache:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[tuple[str, str], ShareSession] = {}
        self._by_connection: dict[str, set[tuple[str, str]]] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def total_partitions(self) -> int:
        return sum(len(s.partitions) for s in self._sessions.values())

    def get(self, group_id: str, member_id: str) -> ShareSession | None:
        return self._sessions.get((group_id, member_id))

    def sessions(self, group_id: str | None = None) -> list[ShareSession]:
        return [s for s in self._sessions.values() if group_id is None or s.group_id == group_id]

    def share_fetch(self, group_id: str, member_id: str, epoch: int, partitions: Iterable[SharePartitionId],
                    forgotten: Iterable[SharePartitionId] = (), *, has_acknowledgements: bool = False,
                    connection_id: str | None = None) -> ShareFetchContext:
        """The context of a ShareFetch; raises KafkaError with the request's top-level error."""
        key = (group_id, member_id)
        if epoch == FINAL_EPOCH:
            session = self._sessions.get(key)
            if session is None:
                raise KafkaError(ErrorCode.share_session_not_found, "Share session not found.")
            return ShareFetchContext(ContextKind.FINAL, [], session)
        if epoch == INITIAL_EPOCH:
            if has_acknowledgements:
                raise KafkaError(ErrorCode.invalid_request, "Acknowledge data present in the initial ShareFetch.")
            self.remove(group_id, member_id)
            if len(self._sessions) >= self.max_sessions:
                raise KafkaError(ErrorCode.share_session_limit_reached,
                                 f"The broker already has {self.max_sessions} share sessions "
                                 "(group.share.max.share.sessions).")
            session = ShareSession(group_id, member_id, next_epoch(INITIAL_EPOCH), dict.fromkeys(partitions),
                                   connection_id)
            self._add(session)
            return ShareFetchContext(ContextKind.INITIAL, list(session.partitions), session)
        if epoch < FINAL_EPOCH:
            raise KafkaError(ErrorCode.invalid_share_session_epoch, f"Invalid share session epoch {epoch}.")
        session = self._sessions.get(key)
        if session is None:
            raise KafkaError(ErrorCode.share_session_not_found, "Share session not found.")
        if session.epoch != epoch:
            raise KafkaError(ErrorCode.invalid_share_session_epoch,
                             f"Expected share session epoch {session.epoch}, got {epoch}.")
        for partition in partitions:
            session.partitions.setdefault(partition, None)
        for partition in forgotten:
            session.partitions.pop(partition, None)
        session.epoch = next_epoch(session.epoch)
        return ShareFetchContext(ContextKind.SUBSEQUENT, list(session.partitions), session)

    def share_acknowledge(self, group_id: str, member_id: str, epoch: int) -> ShareSession:
        """Check (and advance) the session of a ShareAcknowledge; epoch -1 means the caller closes it."""
        if epoch == INITIAL_EPOCH:
            raise KafkaError(ErrorCode.invalid_share_session_epoch, "ShareAcknowledge cannot open a share session.")
        session = self._sessions.get((group_id, member_id))
        if session is None:
            raise KafkaError(ErrorCode.share_session_not_found, "Share session not found.")
        if epoch == FINAL_EPOCH:
            return session
        if session.epoch != epoch:
            raise KafkaError(ErrorCode.invalid_share_session_epoch,
                             f"Expected share session epoch {session.epoch}, got {epoch}.")
        session.epoch = next_epoch(session.epoch)
        return session

    def remove(self, group_id: str, member_id: str) -> ShareSession | None:
        session = self._sessions.pop((group_id, member_id), None)
        if session is not None and session.connection_id is not None:
            keys = self._by_connection.get(session.connection_id)
            if keys is not None:
                keys.discard((group_id, member_id))
                if not keys:
                    del self._by_connection[session.connection_id]
        return session

    def on_disconnect(self, connection_id: str) -> list[ShareSession]:
        """The client's connection closed: its sessions go; the caller releases their members' records."""
        removed = []
        for group_id, member_id in list(self._by_connection.get(connection_id, ())):
            session = self.remove(group_id, member_id)
            if session is not None:
                removed.append(session)
                self.evictions += 1
        return removed

    def _add(self, session: ShareSession) -> None:
        self._sessions[(session.group_id, session.member_id)] = session
        if session.connection_id is not None:
            self._by_connection.setdefault(session.connection_id, set()).add((session.group_id, session.member_id))

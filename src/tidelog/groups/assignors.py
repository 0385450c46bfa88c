"""Server-side partition assignors of consumer-protocol groups (KIP-848): ``uniform`` and ``range``.

An assignor computes a group's *target assignment*: member id -> topic id -> partitions. It
sees each member's subscribed topic ids and the previous target assignment, so it can be
sticky. Pure functions; the coordinator decides when to run them.

- ``uniform`` (Kafka's default, UniformAssignor): every partition of a subscribed topic goes
  to one subscribed member; members with the same subscriptions differ by at most one
  partition; partitions stay where they were whenever balance allows (sticky).
- ``range`` (RangeAssignor): per topic, the subscribed members sorted by member id get
  contiguous ranges, the first ``partitions % members`` one extra; members subscribed to
  co-partitioned topics get the same partition numbers of each. Not sticky beyond that
  determinism (Kafka's server-side range also keeps partitions within quota; here the ranges
  are recomputed, which only moves partitions when membership changes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

Assignment = dict[uuid.UUID, set[int]]


@dataclass(frozen=True)
class MemberSpec:
    subscribed_topic_ids: frozenset[uuid.UUID]
    rack_id: str | None = None


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


AssignorFn = Callable[[dict[str, MemberSpec], dict[uuid.UUID, TopicSpec], dict[str, Assignment]], dict[str, Assignment]]


def _topic_order(topics: dict[uuid.UUID, TopicSpec]) -> list[uuid.UUID]:
    return sorted(topics, key=lambda tid: (topics[tid].name, str(tid)))


def uniform_assign(
    members: dict[str, MemberSpec], topics: dict[uuid.UUID, TopicSpec], previous: dict[str, Assignment]
) -> dict[str, Assignment]:
    """Balanced and sticky: keep valid previous partitions, hand out the rest to the least loaded
    eligible member, then move partitions from members with at least two more than an eligible one."""
    member_ids = sorted(members)
    result: dict[str, Assignment] = {m: {} for m in member_ids}
    counts = {m: 0 for m in member_ids}
    taken: set[tuple[uuid.UUID, int]] = set()

    def give(member_id: str, topic_id: uuid.UUID, partition: int) -> None:
        result[member_id].setdefault(topic_id, set()).add(partition)
        counts[member_id] += 1
        taken.add((topic_id, partition))

    for member_id in member_ids:
        spec = members[member_id]
        for topic_id, partitions in sorted(previous.get(member_id, {}).items(), key=lambda kv: str(kv[0])):
            topic = topics.get(topic_id)
            if topic is None or topic_id not in spec.subscribed_topic_ids:
                continue
            for partition in sorted(partitions):
                if partition < topic.partitions and (topic_id, partition) not in taken:
                    give(member_id, topic_id, partition)

    eligible: dict[uuid.UUID, list[str]] = {
        tid: [m for m in member_ids if tid in members[m].subscribed_topic_ids] for tid in topics
    }
    for topic_id in _topic_order(topics):
        candidates = eligible[topic_id]
        if not candidates:
            continue
        for partition in range(topics[topic_id].partitions):
            if (topic_id, partition) not in taken:
                give(min(candidates, key=lambda m: (counts[m], m)), topic_id, partition)

    # Balance: move one partition at a time from the most loaded member to an eligible member
    # holding at least two fewer. Each move lowers the sum of squared counts, so this ends.
    moved = True
    while moved:
        moved = False
        for source in sorted(member_ids, key=lambda m: (-counts[m], m)):
            for topic_id in sorted(result[source], key=lambda t: (topics[t].name, str(t))):
                targets = [m for m in eligible[topic_id] if counts[m] <= counts[source] - 2]
                if not targets or not result[source][topic_id]:
                    continue
                target = min(targets, key=lambda m: (counts[m], m))
                partition = max(result[source][topic_id])
                result[source][topic_id].discard(partition)
                if not result[source][topic_id]:
                    del result[source][topic_id]
                counts[source] -= 1
                result[target].setdefault(topic_id, set()).add(partition)
                counts[target] += 1
                moved = True
                break
            if moved:
                break
    return result


def range_assign(
    members: dict[str, MemberSpec], topics: dict[uuid.UUID, TopicSpec], previous: dict[str, Assignment]
) -> dict[str, Assignment]:
    """Per topic, contiguous ranges over the subscribed members sorted by member id."""
    result: dict[str, Assignment] = {m: {} for m in members}
    for topic_id in _topic_order(topics):
        subscribers = sorted(m for m, spec in members.items() if topic_id in spec.subscribed_topic_ids)
        if not subscribers:
            continue
        count = topics[topic_id].partitions
        quota, extra = divmod(count, len(subscribers))
        start = 0
        for index, member_id in enumerate(subscribers):
            size = quota + (1 if index < extra else 0)
            if size:
                result[member_id][topic_id] = set(range(start, start + size))
            start += size
    return result


ASSIGNORS: dict[str, AssignorFn] = {"uniform": uniform_assign, "range": range_assign}

# Kafka names its assignors by class in group.consumer.assignors; both spellings are accepted.
_CLASS_NAMES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": "uniform",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": "range",
}


def parse_assignor_list(text: str) -> list[str]:
    """The assignor names of a ``group.consumer.assignors`` value; unknown names raise ValueError."""
    names = []
    for raw in str(text).split(","):
        name = _CLASS_NAMES.get(raw.strip(), raw.strip())
        if not name:
            continue
        if name not in ASSIGNORS:
            raise ValueError(f"group.consumer.assignors: unknown assignor {raw.strip()!r} (known: uniform, range)")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("group.consumer.assignors: at least one assignor is needed")
    return names

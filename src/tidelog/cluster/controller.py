"""The controller: replica placement, and leader election when brokers come and go.

One broker of the cluster is the controller at a time (``MetadataStore.elect_controller``:
create-if-absent on the store, bound to the broker's lease). It writes partition states only by
compare-and-swap fenced by its controller epoch, so a controller that lost the election (it
was paused past its lease) cannot overwrite its successor's decisions.

What it does, on every change of the live broker set (and once on taking over):
- a partition whose leader is not live gets a new leader: the first live replica in the ISR
  (in replica order). With none, the partition goes offline (leader -1, ISR kept, so the last
  in-sync replica may lead again when it returns), unless the topic's
  ``unclean.leader.election.enable`` lets any live replica lead (ISR = that replica).
  Every leader change bumps ``leader_epoch``.
- dead brokers are removed from the ISR of partitions whose leader lives (so acks=all stops
  waiting for them at once rather than after ``replica.lag.time.max.ms``).
- a broker whose log directory went offline (``store.offline``: an I/O error) counts as dead:
  its replicas lead nothing and leave every ISR, as Kafka's offline replicas do, until it
  restarts (and recovers its log).
- a broker that registers again (a restart, or a lease that lapsed while it was paused) counts
  as dead for one pass: it leaves every ISR and its leaderships move, since its log may have
  lost what it had; then it catches up and rejoins as any follower does (KIP-966's fencing).
  Its own side: it never leads in a state written before its registration. After that pass the
  controller marks the registration unfenced in the store (``unfenced/<id>``); leaders add a
  follower to an ISR only when its broker's registration is marked so (KIP-903's eligibility).
- an offline partition whose last in-sync replica is back gets it as leader.
- a broker in controlled shutdown (``store.shutting_down``) leaves every ISR and hands each
  leadership to the first other live in-sync replica; where there is none it keeps leading.
- a reassignment (AlterPartitionReassignments wrote target replicas, the new ones in
  ``adding``) completes once every target replica is in the ISR: leadership moves to a target
  replica if the leader is leaving, then the leaving replicas go (their brokers delete them).
- every ``leader.imbalance.check.interval.seconds`` (``auto.leader.rebalance.enable``),
  leadership goes back to each partition's preferred (first) replica once it is in sync.
Growing the ISR back is the leader's job (replica_manager.py), as it sees followers catch up.

Replica placement (``assign_replicas``) is used by whichever broker serves CreateTopics /
CreatePartitions: the write is one compare-and-swap transaction in the store, so it needs no
detour through the controller. Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Awaitable, Callable

from tidelog.cluster.metadata import BrokerInfo, PartitionState
from tidelog.protocol.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.config import BrokerConfig

logger = logging.getLogger(__name__)

RETRY_S = 0.05


def rack_alternated(brokers: list[BrokerInfo]) -> list[BrokerInfo]:
    """Brokers ordered so that neighbours sit in different racks where possible (Kafka's order)."""
    by_rack: dict[str | None, list[BrokerInfo]] = {}
    for broker in sorted(brokers, key=lambda b: b.node_id):
        by_rack.setdefault(broker.rack, []).append(broker)
    if len(by_rack) <= 1:
        return sorted(brokers, key=lambda b: b.node_id)
    racks = sorted(by_rack, key=lambda r: (r is None, r or ""))
    ordered: list[BrokerInfo] = []
    for i in range(max(len(v) for v in by_rack.values())):
        ordered += [by_rack[rack][i] for rack in racks if i < len(by_rack[rack])]
    return ordered


def assign_replicas(brokers: list[BrokerInfo], partitions: int, replication_factor: int,
                    first_partition: int = 0, start: int | None = None) -> list[PartitionState]:
    """Round-robin replica lists over the live brokers, rack-aware when racks are set.

    Partition p's replicas are ``replication_factor`` consecutive brokers of the rack-alternated
    order from position ``start + p``: leaders spread evenly, and with as many racks as
    replicas no two replicas of a partition share a rack.
    """
    if replication_factor > len(brokers):
        raise KafkaError(
            ErrorCode.invalid_replication_factor,
            f"Unable to replicate the partition {replication_factor} time(s): The target replication factor of "
            f"{replication_factor} cannot be reached because only {len(brokers)} broker(s) are registered.",
        )
    ordered = rack_alternated(brokers)
    n = len(ordered)
    start = random.randrange(n) if start is None else start
    states = []
    for p in range(first_partition, first_partition + partitions):
        replicas = [ordered[(start + p + i) % n].node_id for i in range(replication_factor)]
        states.append(PartitionState.initial(replicas))
    return states


def elect(state: PartitionState, live: set[int], unclean_allowed: bool,
          shutting_down: set[int] | frozenset[int] = frozenset()) -> PartitionState | None:
    """The state the controller wants for a partition given the live brokers and those in
    controlled shutdown; None if unchanged."""
    eligible = live - shutting_down
    if state.leader in eligible:
        isr = tuple(r for r in state.isr if r in eligible)
        return state.changed(isr=isr) if isr != state.isr and state.leader in isr else None
    if state.leader in live:  # in controlled shutdown: hand over to another in-sync replica if any
        candidates = [r for r in state.replicas if r in state.isr and r in eligible]
        if not candidates:
            return None  # it keeps leading until it stops
        return state.changed(leader=candidates[0], leader_epoch=state.leader_epoch + 1,
                             isr=tuple(r for r in state.isr if r in eligible))
    candidates = ([r for r in state.replicas if r in state.isr and r in eligible]
                  or [r for r in state.replicas if r in state.isr and r in live])
    if candidates:
        leader = candidates[0]
        return state.changed(leader=leader, leader_epoch=state.leader_epoch + 1,
                             isr=tuple(r for r in state.isr if r in live))
    if unclean_allowed:
        live_replicas = [r for r in state.replicas if r in live]
        if live_replicas:
            logger.warning("unclean leader election: %d leads with ISR %s gone", live_replicas[0], state.isr)
            return state.changed(leader=live_replicas[0], leader_epoch=state.leader_epoch + 1, isr=(live_replicas[0],))
    if state.leader != -1:
        # Offline: keep the ISR as it was, so only a replica that was in sync may lead again.
        return state.changed(leader=-1, leader_epoch=state.leader_epoch + 1)
    return None


def advance_reassignment(state: PartitionState, live: set[int],
                         shutting_down: set[int] | frozenset[int] = frozenset()) -> PartitionState | None:
    """Finish a reassignment once every target replica is in the ISR: the leaving replicas go
    (leadership first moves to a target replica if the leader is leaving); None if not yet."""
    target = state.target_replicas
    if not state.reassigning:
        if state.leader == -1 or state.leader in state.replicas:
            return None
        target = state.replicas  # a cancelled reassignment took the leader's replica away
    elif not all(r in state.isr for r in target):
        return None
    isr = tuple(r for r in state.isr if r in target)
    if state.leader in target:
        return state.changed(replicas=target, isr=isr, adding=(), removing=())
    candidates = [r for r in target if r in isr and r in live and r not in shutting_down]
    if not candidates:
        return None
    return state.changed(replicas=target, isr=isr, leader=candidates[0], leader_epoch=state.leader_epoch + 1,
                         adding=(), removing=())


def preferred(state: PartitionState, live: set[int], shutting_down: set[int] | frozenset[int] = frozenset()) -> PartitionState | None:
    """Leadership back to the preferred (first) replica when it is live and in sync; else None."""
    first = state.replicas[0] if state.replicas else -1
    if state.leader in (first, -1) or first not in state.isr or first not in live or first in shutting_down:
        return None
    return state.changed(leader=first, leader_epoch=state.leader_epoch + 1)


class Controller:
    """Runs on the elected broker; see the module docstring."""

    def __init__(self, node_id: int, store: "MetadataStore", config: "BrokerConfig",
                 create_internal_topics: Callable[[int], Awaitable[None]]) -> None:
        """``create_internal_topics(live_brokers)`` creates the internal topics that enough live
        brokers allow and do not exist yet (the broker knows them and their settings)."""
        self.node_id = node_id
        self.store = store
        self.config = config
        self.create_internal_topics = create_internal_topics
        self.epoch = 0
        # Broker epochs this controller has fenced (None until the first pass sets them).
        self._known_epochs: dict[int, int] | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._rebalance_task: asyncio.Task | None = None

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, epoch: int) -> None:
        self.epoch = epoch
        self._known_epochs = None
        self._dirty.set()
        self._task = asyncio.create_task(self._run(), name="controller")
        if self.config["auto.leader.rebalance.enable"]:
            self._rebalance_task = asyncio.create_task(self._rebalance_loop(), name="leader-rebalance")
        logger.info("broker %d is the controller (epoch %d)", self.node_id, epoch)

    def stop(self) -> None:
        if self._rebalance_task is not None:
            self._rebalance_task.cancel()
            self._rebalance_task = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
            logger.info("broker %d is no longer the controller", self.node_id)

    def on_change(self, kind: str, key: object) -> None:
        if kind in ("broker", "topic") or kind == "partition":
            self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                if not await self.reconcile():
                    await asyncio.sleep(RETRY_S)  # a lost compare-and-swap: look again at fresher state
                    self._dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("controller pass failed; retrying")
                await asyncio.sleep(0.5)
                self._dirty.set()

    def _registering(self) -> set[int]:
        """Live brokers whose current registration this controller has not fenced yet.

        A broker that registers again (it restarted, or its lease lapsed) may have lost the
        tail of its log: until one pass has taken it out of every ISR and moved its
        leaderships, as if it had died (Kafka fences a broker that comes back, KIP-966), it
        counts as not live. A controller taking over knows no epochs: a broker named leader or
        in-sync by a state older than its registration is fenced, the others are known."""
        brokers = self.store.brokers
        if self._known_epochs is None:
            states = list(self.store.partitions.values())
            self._known_epochs = {
                node_id: info.epoch for node_id, info in brokers.items()
                if not any(s.version < info.epoch and (s.leader == node_id or node_id in s.isr) for s in states)}
        return {node_id for node_id, info in brokers.items() if self._known_epochs.get(node_id) != info.epoch}

    async def reconcile(self) -> bool:
        """One pass over every partition; False when a write lost a compare-and-swap."""
        registering = self._registering()
        epochs = {node_id: info.epoch for node_id, info in self.store.brokers.items()}
        live = set(epochs) - registering - self.store.offline  # an offline log directory: as if dead
        await self.create_internal_topics(len(live))
        all_done = True
        for (topic, index), state in list(self.store.partitions.items()):
            record = self.store.topics.get(topic)
            if record is None:
                continue
            wanted = (elect(state, live, self.config.topic_value(record.configs, "unclean.leader.election.enable"),
                            self.store.shutting_down)
                      or advance_reassignment(state, live, self.store.shutting_down))
            if wanted is None:
                continue
            stored = await self.store.compare_and_set_partition(topic, index, wanted, self.epoch)
            if stored is None:
                if self.store.controller_id != self.node_id:
                    return True  # deposed; the broker stops us
                all_done = False
                continue
            logger.info("controller: %s-%d leader %d -> %d (epoch %d), isr %s -> %s", topic, index, state.leader,
                        stored.leader, stored.leader_epoch, list(state.isr), list(stored.isr))
        if all_done and registering:
            self._known_epochs.update({node_id: epochs[node_id] for node_id in registering})
            logger.info("controller: brokers %s (re)registered, fenced out of the ISRs and leaderships they had "
                        "before; live again", sorted(registering))
            self._dirty.set()  # now live: the partitions they may lead again (their last in-sync replica)
        if all_done:
            return await self._publish_unfenced(epochs, registering)
        return all_done

    async def _publish_unfenced(self, epochs: dict[int, int], registering: set[int]) -> bool:
        """Tell the leaders which registrations are fenced and let back (``unfenced/<id>``): a
        leader adds a follower to an ISR only if its broker's current registration is one of
        them (ReplicaManager.may_join_isr), as Kafka's controller refuses an ISR naming a fenced
        broker (INELIGIBLE_REPLICA, KIP-903), so the fencing pass does not take it out again.
        The mark of a registration that is gone (the broker's lease lapsed) is deleted: it lets
        nothing back (a broker that returns registers anew), and the store keeps none for
        brokers that left for good."""
        wanted = {node_id: epoch for node_id, epoch in epochs.items()
                  if node_id not in registering and self.store.unfenced.get(node_id) != epoch}
        gone = sorted(node_id for node_id in self.store.unfenced if node_id not in epochs)
        if not wanted and not gone:
            return True
        if gone:
            logger.info("controller: forgetting the unfenced marks of brokers %s (no longer registered)", gone)
        if not await self.store.mark_unfenced(wanted, self.epoch, gone):
            return self.store.controller_id != self.node_id  # deposed: the broker stops us
        return True

    async def _rebalance_loop(self) -> None:
        interval_s = self.config["leader.imbalance.check.interval.seconds"]
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.rebalance_leaders()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("preferred-leader election failed; retrying at the next check")

    async def rebalance_leaders(self) -> int:
        """Preferred-leader election over every partition; the number of leaders moved.

        Kafka moves leaders only on brokers whose share of non-preferred leaders passes
        ``leader.imbalance.per.broker.percentage``; we move every one whose preferred replica
        is back in sync (one threshold less, and leaders spread as placement intended)."""
        live = set(self.store.brokers) - self._registering() - self.store.offline
        moved = 0
        for (topic, index), state in list(self.store.partitions.items()):
            if topic not in self.store.topics:
                continue
            wanted = preferred(state, live, self.store.shutting_down)
            if wanted is None:
                continue
            stored = await self.store.compare_and_set_partition(topic, index, wanted, self.epoch)
            if stored is not None:
                moved += 1
                logger.info("controller: %s-%d leader %d -> preferred replica %d (epoch %d)", topic, index,
                            state.leader, stored.leader, stored.leader_epoch)
        return moved

"""The broker's delay topics (issue 14): for each partition of a topic with
``tidelog.delay.target.topic`` that this broker leads, a ``DelayMover`` (delay_mover.py) over the
Partition objects, stepped when records are appended to it and when the next one is due.

The target partition (p mod the target's partitions) must be led here too: in a cluster whose
leaders differ, that mover waits (logged once) until leadership brings them together (moving to a
remote leader is not built yet). A mover whose delay partition this broker no longer leads is
dropped; the next leader's mover goes on from the target's producer state. Index files live in
``<data dir>/.delay-index/<topic id>-<partition>``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Awaitable, Callable

from tidelog.clock import wall_clock_ms
from tidelog.cluster.waiters import wait_for_data
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.delay_index import DelayIndex
from tidelog.queues.delay_mover import DelayMover

__all__ = ["DelayTopics"]

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.2  # the longest wait between two looks at the delay topics (new ones, config changes, leadership)
WRITE_TIMEOUT_S = 30.0
INDEX_DIR = ".delay-index"


class _Source:
    def __init__(self, partition) -> None:
        self.partition = partition

    def log_start_offset(self) -> int:
        return self.partition.log.log_start_offset

    def high_watermark(self) -> int:
        return self.partition.high_watermark

    def read(self, offset: int, max_bytes: int):
        result = self.partition.read(offset, max_bytes, True, -1)
        if result.error != ErrorCode.none:
            raise KafkaError(result.error, f"reading delay partition at {offset}")
        return result.records


class _Target:
    def __init__(self, partition) -> None:
        self.partition = partition

    async def append(self, batch: bytes) -> None:
        appended = self.partition.append_as_leader(memoryview(bytearray(batch)), required_acks=-1)
        error = await self.partition.wait_acknowledged(appended.end_offset, -1, WRITE_TIMEOUT_S)
        if error != ErrorCode.none:
            raise KafkaError(error, "appending due records to the target")

    def producer_last_batches(self) -> list[bytes]:
        out = []
        for entry in list(self.partition.producer_state.producers.values()):
            if not entry.batches:
                continue
            base_offset = entry.batches[-1][2]
            if base_offset < self.partition.log.log_start_offset:
                continue
            result = self.partition.read(base_offset, 1, True, -1)
            if result.error == ErrorCode.none and result.records:
                out.append(bytes(result.records))
        return out


class DelayTopics:
    def __init__(self, metadata, replicas, config, data_dir: Path, new_producer_id: Callable[[], Awaitable[int]],
                 clock_ms: Callable[[], int] = wall_clock_ms, metrics=None) -> None:
        self.metadata = metadata
        self.replicas = replicas
        self.config = config
        self.index_root = Path(data_dir) / INDEX_DIR
        self.new_producer_id = new_producer_id
        self.clock_ms = clock_ms
        self.metrics = metrics  # BrokerMetrics: tidelog_delay_topic_records{topic,event}
        self.movers: dict[tuple[str, int], DelayMover] = {}
        self._waiting_for_target: set[tuple[str, int]] = set()
        self._task: asyncio.Task | None = None
        self._first_sync = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tidelog-delay-topics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def counts(self) -> dict[str, int]:
        return {"moved": sum(m.moved for m in self.movers.values()), "lost": sum(m.lost for m in self.movers.values())}

    async def _run(self) -> None:
        while True:
            try:
                await self._sync()
                wait_s = IDLE_WAIT_S
                for mover in list(self.movers.values()):
                    moved, lost = mover.moved, mover.lost
                    try:
                        while await mover.step() or mover._rebuild_at is not None:
                            await asyncio.sleep(0)  # let requests in between steps of a backlog
                    except (KafkaError, OSError) as e:
                        logger.warning("delay mover %s-%d: %s (retrying)", mover.origin_topic, mover.origin_partition, e)
                        continue
                    finally:
                        self._count(mover, mover.moved - moved, mover.lost - lost)
                    due = mover.next_due_ms()
                    if due is not None:
                        wait_s = min(wait_s, max(0.0, (due - self.clock_ms()) / 1000))
                sources = [m.source.partition for m in self.movers.values()]
                if sources:
                    await wait_for_data(sources, wait_s)
                else:
                    await asyncio.sleep(wait_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the service must outlive one bad step
                logger.exception("delay topics: unexpected error")
                await asyncio.sleep(IDLE_WAIT_S)

    def _count(self, mover: DelayMover, moved: int, lost: int) -> None:
        if lost:
            logger.warning("delay topic %s-%d: %d records were removed by retention before they were due",
                           mover.origin_topic, mover.origin_partition, lost)
        if self.metrics is None:
            return
        if moved:
            self.metrics.delay_topic_records.labels(mover.origin_topic, "moved").inc(moved)
        if lost:
            self.metrics.delay_topic_records.labels(mover.origin_topic, "lost").inc(lost)

    async def _sync(self) -> None:
        """Movers for the delay partitions led here (with their target led here), none for others."""
        wanted: dict[tuple[str, int], tuple] = {}
        for name, record in list(self.metadata.topics.items()):
            target_name = record.configs.get("tidelog.delay.target.topic")
            if not target_name:
                continue
            target = self.metadata.topics.get(target_name)
            if target is None or target.partitions <= 0:
                continue
            for p in range(record.partitions):
                source = self.replicas.get(name, p)
                if source is None or not source.leading:
                    continue
                target_partition = self.replicas.get(target_name, p % target.partitions)
                if target_partition is None or not target_partition.leading:
                    if (name, p) not in self._waiting_for_target:
                        self._waiting_for_target.add((name, p))
                        logger.warning("delay topic %s-%d: its target %s-%d is not led here; waiting", name, p,
                                       target_name, p % target.partitions)
                    continue
                self._waiting_for_target.discard((name, p))
                wanted[(name, p)] = (record, source, target_partition)
        gone = [k for k in self.movers if k not in wanted or self.movers[k].source.partition is not wanted[k][1]
                or self.movers[k].target.partition is not wanted[k][2]]
        for key in gone:
            del self.movers[key]
        if gone or self._first_sync:
            self._first_sync = False
            self._remove_unknown_indexes()
        for (name, p), (record, source, target_partition) in wanted.items():
            if (name, p) in self.movers:
                self.movers[(name, p)].settings = self.movers[(name, p)].settings.__class__(
                    delay_ms=self.config.topic_value(record.configs, "tidelog.delay.ms"))
                continue
            mover = DelayMover(name, p, _Source(source), _Target(target_partition),
                               DelayIndex(self.index_root / f"{record.topic_id.hex}-{p}"), await self.new_producer_id(),
                               self.clock_ms, delay_ms=self.config.topic_value(record.configs, "tidelog.delay.ms"))
            mover.recover()
            self.movers[(name, p)] = mover

    def _remove_unknown_indexes(self) -> None:
        """Index directories of topics that no longer exist go (by topic id: a topic deleted and
        created again under its name starts afresh)."""
        ids = {record.topic_id.hex for record in list(self.metadata.topics.values())}
        for directory in self.index_root.glob("*") if self.index_root.exists() else ():
            topic_id, _, _partition = directory.name.rpartition("-")
            if topic_id not in ids:
                shutil.rmtree(directory, ignore_errors=True)

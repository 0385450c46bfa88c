"""Idempotent producer state of one partition: each producer id's epoch and its last five batches.

Used by Produce to deduplicate retried batches (answered with the offsets they got the first
time) and to reject gaps (OUT_OF_ORDER_SEQUENCE_NUMBER) and stale epochs
(INVALID_PRODUCER_EPOCH), as Kafka's ProducerStateManager / ProducerAppendInfo do. A producer
this partition has no state for (new, expired, or whose batches were all deleted by retention
or DeleteRecords before a restart) may start at any sequence (KIP-360): refusing it would be
fatal to the client. An entry expires ``producer.id.expiration.ms`` after the producer's last
batch (``remove_expired``, run by the broker every
``producer.id.expiration.check.interval.ms``), so memory does not grow with every producer id
ever seen. Producer ids at or above ``BROKER_PRODUCER_IDS`` (2^62) are the broker's own producers,
one per delay partition (queues/delay_mover.py: its state here is the mover's progress marker, and
there are as many as delay partitions, not clients): they never expire, and their time is their
last batch's own timestamp (Kafka's rule for every producer). A client may send any id, so only the
``BROKER_PRODUCERS_KEPT`` most recent of them are kept that way: memory stays bounded. The time of a batch is when it was appended here; batches replayed from the log or
appended as a follower count by their max timestamp (not later than now), as Kafka's do.

On disk: ``producer-state.json`` in the partition directory, written on clean shutdown:
``{"offset": N, "producers": {pid: [epoch, [[first_seq, last_seq, base_offset, last_offset_delta], ...],
last_timestamp_ms]}}``, the state of the log below offset N. On open the state is loaded
(expired entries dropped) and the batches from N to the log end are replayed from their
headers, so an unclean shutdown only costs a longer scan.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path

from tidelog.clock import wall_clock_ms
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import BatchInfo
from tidelog.storage.checkpoint import write_checkpoint_file
from tidelog.storage.log_scan import batch_headers

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "producer-state.json"
BATCHES_KEPT = 5  # Kafka keeps the metadata of the last five batches per producer
SEQUENCE_WRAP = 2**31
BROKER_PRODUCER_IDS = 1 << 62  # the delay movers' producer ids are at or above this; allocated ones count up from 0
BROKER_PRODUCERS_KEPT = 1000  # at most this many of those never expire (the most recent): a client can send any id


class ProducerEntry:
    __slots__ = ("epoch", "batches", "last_timestamp_ms")

    def __init__(self, epoch: int, last_timestamp_ms: int = -1) -> None:
        self.epoch = epoch
        # (first_seq, last_seq, base_offset, last_offset_delta), oldest first
        self.batches: deque[tuple[int, int, int, int]] = deque(maxlen=BATCHES_KEPT)
        self.last_timestamp_ms = last_timestamp_ms


def _last_sequence(info: BatchInfo) -> int:
    return (info.base_sequence + info.last_offset_delta) % SEQUENCE_WRAP


class ProducerState:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, info: BatchInfo) -> int | None:
        """Validate an idempotent batch before it is appended.

        Returns the base offset it was stored at if it is a duplicate of one of the producer's
        last five batches, None if it is new. Raises KafkaError on a fenced epoch or a gap.
        """
        if info.producer_id < 0:
            return None
        entry = self.producers.get(info.producer_id)
        if entry is None:  # no state (KIP-360): any sequence starts it
            return None
        if info.producer_epoch < entry.epoch:
            raise KafkaError(
                ErrorCode.invalid_producer_epoch,
                f"producer {info.producer_id} epoch {info.producer_epoch} is older than the current {entry.epoch}",
            )
        if info.producer_epoch > entry.epoch:
            if info.base_sequence != 0:
                raise KafkaError(
                    ErrorCode.out_of_order_sequence_number,
                    f"producer {info.producer_id} new epoch {info.producer_epoch} starts at sequence {info.base_sequence}, not 0",
                )
            return None
        last_sequence = _last_sequence(info)
        for first_seq, last_seq, base_offset, _ in entry.batches:
            if first_seq == info.base_sequence and last_seq == last_sequence:
                return base_offset
        if entry.batches:
            expected = (entry.batches[-1][1] + 1) % SEQUENCE_WRAP
            if info.base_sequence != expected:
                raise KafkaError(
                    ErrorCode.out_of_order_sequence_number,
                    f"producer {info.producer_id} sent sequence {info.base_sequence}, expected {expected}",
                )
        return None

    def update(self, info: BatchInfo, base_offset: int, now_ms: int | None = None) -> None:
        """Record an appended batch of an idempotent producer.

        ``now_ms`` is the time of a batch appended as leader; without it (replay, follower) the
        batch counts by its max timestamp, not later than now.
        """
        if info.producer_id < 0 or info.is_control:  # a transaction marker carries no sequence
            return
        entry = self.producers.get(info.producer_id)
        if entry is None or info.producer_epoch > entry.epoch:
            entry = self.producers[info.producer_id] = ProducerEntry(info.producer_epoch)
        entry.batches.append((info.base_sequence, _last_sequence(info), base_offset, info.last_offset_delta))
        if info.producer_id >= BROKER_PRODUCER_IDS:
            # A delay mover's (never expired): its last batch's own time, by the mover's clock, so
            # that a mover on another broker finds the batch by it (ListOffsets) whatever this
            # broker's clock says.
            entry.last_timestamp_ms = info.max_timestamp
            return
        timestamp_ms = now_ms if now_ms is not None else min(info.max_timestamp, wall_clock_ms())
        if timestamp_ms > entry.last_timestamp_ms:
            entry.last_timestamp_ms = timestamp_ms

    def remove_expired(self, now_ms: int, expiration_ms: int, keep=None) -> int:
        """Forget producers whose last batch is ``expiration_ms`` old or older, except the broker's
        own and those ``keep(producer_id)`` is true for (an open transaction); return how many."""
        brokers = [pid for pid in self.producers if pid >= BROKER_PRODUCER_IDS]
        if len(brokers) > BROKER_PRODUCERS_KEPT:
            brokers.sort(key=lambda pid: self.producers[pid].last_timestamp_ms)
            brokers = brokers[-BROKER_PRODUCERS_KEPT:]
        never = set(brokers)
        expired = [pid for pid, e in self.producers.items() if now_ms - e.last_timestamp_ms >= expiration_ms
                   and pid not in never and (keep is None or not keep(pid))]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    # --- persistence -----------------------------------------------------------------
    def snapshot(self, partition_dir: Path, offset: int) -> tuple[Path, str]:
        """The snapshot file and its content as of ``offset`` (the log's end), for a caller that
        writes many at once (LogManager.write_checkpoints)."""
        data = {
            "offset": offset,
            "producers": {str(pid): [e.epoch, [list(b) for b in e.batches], e.last_timestamp_ms]
                          for pid, e in self.producers.items()},
        }
        return Path(partition_dir) / SNAPSHOT_FILE, json.dumps(data)

    def save(self, partition_dir: Path, offset: int) -> None:
        write_checkpoint_file(*self.snapshot(partition_dir, offset))

    @classmethod
    def load(cls, log, expiration_ms: int | None = None) -> "ProducerState":
        """The state of ``log``: its snapshot, if any, plus a replay of the batches after it,
        without the producers already expired (``expiration_ms``)."""
        state = cls()
        start = log.log_start_offset
        path = Path(log.dir) / SNAPSHOT_FILE
        now_ms = wall_clock_ms()
        try:
            data = json.loads(path.read_text())
            if log.log_start_offset <= data["offset"] <= log.log_end_offset:
                for pid, (epoch, batches, *rest) in data["producers"].items():
                    # A snapshot written before entries had a time: count them as seen now.
                    entry = state.producers[int(pid)] = ProducerEntry(epoch, int(rest[0]) if rest else now_ms)
                    entry.batches.extend(tuple(b) for b in batches)
                start = data["offset"]
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("%s: unreadable producer state snapshot (%s), rebuilding from the log", log.dir, e)
        replayed = state._replay(log, start)
        if replayed:
            logger.info("%s: producer state rebuilt from %d batches after offset %d", log.dir, replayed, start)
        if expiration_ms is not None:
            state.remove_expired(now_ms, expiration_ms)
        return state

    def _replay(self, log, offset: int) -> int:
        """Every producer batch's header from ``offset`` (the records are not read)."""
        replayed = 0
        for _, _, info in batch_headers(log, offset):
            self.update(info, info.base_offset)
            replayed += 1
        return replayed

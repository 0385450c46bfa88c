"""A partition log's configuration (``LogConfig``), from its topic's configs and the broker's defaults.

The durability profiles (``durability.profile``, broker default ``log.durability.profile``) say
when an appended batch counts as durable, so when a producer may be acknowledged and a consumer
may read it:

- ``throughput``: once written to the page cache; replication is what keeps it (as Kafka does);
- ``balanced``: after the next group fsync, which starts as soon as none is running (or
  ``flush.ms`` after the first write, when that is above 0);
- ``durable``: after an fsync of its own, before the acknowledgement.

A config change gives the log a new LogConfig (``PartitionLog.set_config``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DURABILITY_PROFILES = ("throughput", "balanced", "durable")


@dataclass
class LogConfig:
    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    retention_ms: int = 14 * 24 * 3600 * 1000  # -1 = unlimited
    retention_bytes: int = -1  # -1 = unlimited, per partition
    durability: str = "balanced"  # "throughput" | "balanced" | "durable"
    flush_interval_ms: int = 0  # balanced: how long a group commit lingers for more writes
    segment_jitter_ms: int = 0
    file_delete_delay_ms: int = 60_000
    # cleanup.policy: delete (retention) and/or compact (storage/cleaner.py); neither keeps everything
    delete: bool = True
    compact: bool = False
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = (1 << 63) - 1
    min_cleanable_dirty_ratio: float = 0.5
    segment_index_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_PROFILES:
            raise ValueError(f"durability must be one of {DURABILITY_PROFILES}, not {self.durability!r}")

    @property
    def max_segment_ms(self) -> int:
        """segment.ms, or max.compaction.lag.ms when shorter on a compacted log (the active
        segment is never cleaned, so it must roll for its records to be), as Kafka's."""
        return min(self.segment_ms, self.max_compaction_lag_ms) if self.compact else self.segment_ms

    def random_segment_jitter_ms(self) -> int:
        """How much sooner than max_segment_ms a new segment rolls (segment.jitter.ms), so that
        the partitions of a topic do not all roll at once."""
        return random.randrange(min(self.segment_jitter_ms, self.segment_ms)) if self.segment_jitter_ms > 0 else 0

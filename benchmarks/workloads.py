"""The workloads: what is produced and how it is read back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str
    record_bytes: int
    acks: str
    partitions: int = 1
    consumers: int = 0  # 0: one consumer with assign(); N: a group of N subscribe()d consumers
    share: bool = False  # the N consumers are ShareConsumers of a share group (benchmarks/share_groups.py)
    rate: int = 0  # >0: an end-to-end latency run at this many records/s ...
    seconds: float = 0.0  # ... for this long
    linger_ms: float = 1.0  # the latency producer's linger.ms (kafka_load.LATENCY_LINGER_MS; 0: send at once)

    @property
    def is_latency(self) -> bool:
        return self.rate > 0

    @property
    def has_ceiling(self) -> bool:
        """Throughput with one assigned consumer over at most 16 partitions: the client-ceiling
        references (producer into nothing, consumer against the mock cluster) measure it."""
        return self.consumers == 0 and not self.is_latency and self.partitions <= 16

    @property
    def is_basic(self) -> bool:
        """One partition, one consumer, throughput: what every peer's client can run."""
        return self.partitions == 1 and self.consumers == 0 and not self.is_latency

    def describe(self) -> str:
        if self.is_latency:
            return (f"{self.record_bytes} B records, acks={self.acks}, {self.rate:,}/s for {self.seconds:g} s, "
                    f"producer linger.ms={self.linger_ms:g}, end-to-end latency to a consumer in the same process")
        reader = f"a group of {self.consumers} consumers (subscribe)" if self.consumers else "one consumer (assign)"
        if self.share:
            reader = f"a share group of {self.consumers} ShareConsumer(s) (implicit acknowledgement)"
        return (f"{self.record_bytes} B records, acks={self.acks}, {self.partitions} partition(s), read by {reader}")


WORKLOADS = {w.name: w for w in (
    Workload("1k-acks-all", 1024, "all"),
    Workload("100b-acks-1", 100, "1"),
    Workload("1k-acks-1", 1024, "1"),
    Workload("100b-acks-all", 100, "all"),
    Workload("1k-acks-all-p16", 1024, "all", partitions=16),
    Workload("100b-acks-1-p16", 100, "1", partitions=16),
    Workload("1k-acks-all-p256", 1024, "all", partitions=256),
    Workload("1k-p6-group3", 1024, "all", partitions=6, consumers=3),
    Workload("1k-p6-share1", 1024, "all", partitions=6, consumers=1, share=True),
    Workload("1k-p6-share3", 1024, "all", partitions=6, consumers=3, share=True),
    Workload("lat-5k", 1024, "all", rate=5_000, seconds=10),
    Workload("lat-20k", 1024, "all", rate=20_000, seconds=10),
    Workload("lat-50k", 1024, "all", rate=50_000, seconds=10),
    # The same shapes as a user who chooses latency sets the producer: linger.ms=0, a request
    # as soon as the previous one is out (records that arrive meanwhile share the next).
    Workload("lat-5k-linger0", 1024, "all", rate=5_000, seconds=10, linger_ms=0),
    Workload("lat-20k-linger0", 1024, "all", rate=20_000, seconds=10, linger_ms=0),
)}
DEFAULT_WORKLOADS = ("1k-acks-all,100b-acks-1,1k-acks-all-p16,100b-acks-1-p16,1k-acks-all-p256,1k-p6-group3,1k-p6-share1,"
                     "1k-p6-share3,lat-5k,lat-20k,lat-50k,lat-5k-linger0,lat-20k-linger0")

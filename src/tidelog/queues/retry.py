"""Retry back-off of share groups (issue 14): a record released by its consumer, or whose lock ran
out, becomes Available again only after a delay that grows with its delivery count, from the group
configs ``tidelog.retry.backoff.initial.ms`` (0, the default: at once, as Kafka), ``.multiplier``
and ``.max.ms``: after delivery n the delay is min(max, initial x multiplier^(n-1)). A RELEASE
that names its own delay (the HTTP API's release) waits the longer of the two. The deadline is
persisted with the release (state_records.py: a tagged field of the Available state batch), so it
holds across a restart or a failover.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryBackoff"]


@dataclass(frozen=True)
class RetryBackoff:
    """SharePartitionConfig.redelivery_delay_ms: delivery count -> milliseconds."""

    initial_ms: int
    multiplier: float = 2.0
    max_ms: int = 300_000

    def __call__(self, delivery_count: int) -> int:
        if self.initial_ms <= 0:
            return 0
        exponent = max(0, delivery_count - 1)
        if self.multiplier > 1 and exponent > 64:
            return self.max_ms
        return int(min(self.max_ms, self.initial_ms * self.multiplier ** exponent))

    @classmethod
    def from_group(cls, value) -> "RetryBackoff | None":
        """From a group's configs (``value(name)`` is BrokerConfig.group_value bound to them); None
        when the initial back-off is 0."""
        initial = value("tidelog.retry.backoff.initial.ms")
        if initial <= 0:
            return None
        return cls(initial, value("tidelog.retry.backoff.multiplier"), value("tidelog.retry.backoff.max.ms"))

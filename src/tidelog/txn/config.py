"""The transaction coordinator's settings, with Kafka's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TransactionConfig"]


@dataclass(frozen=True)
class TransactionConfig:
    """The coordinator's settings, Kafka's names and defaults."""

    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 604_800_000
    state_log_num_partitions: int = 50
    abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    request_timeout_ms: int = 30_000  # tombstone appends
    state_log_value_version: int = 0  # 1 once transaction.version 1 is served
    max_tombstones_per_append: int = 1000

    @classmethod
    def from_broker_config(cls, config) -> "TransactionConfig":
        """From tidelog.config.BrokerConfig (anything with ``[name]``)."""
        return cls(
            transaction_max_timeout_ms=config["transaction.max.timeout.ms"],
            transactional_id_expiration_ms=config["transactional.id.expiration.ms"],
            state_log_num_partitions=config["transaction.state.log.num.partitions"],
            abort_timed_out_transaction_cleanup_interval_ms=config["transaction.abort.timed.out.transaction.cleanup.interval.ms"],
            remove_expired_transaction_cleanup_interval_ms=config["transaction.remove.expired.transaction.cleanup.interval.ms"],
        )

"""The group coordinator's settings, read once from the broker configuration.

Classic groups: ``group.initial.rebalance.delay.ms`` and the session timeout bounds
(``group.min/max.session.timeout.ms``). Consumer-protocol groups (KIP-848): the
``group.consumer.*`` heartbeat interval, session timeout (each within its min/max bounds),
maximum size and server-side assignors. Offsets: ``offsets.retention.minutes``, the expiry
check interval and ``offset.metadata.max.bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidelog.groups.assignors import parse_assignor_list


@dataclass
class GroupSettings:
    initial_rebalance_delay_ms: int = 3000
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1800000
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600000
    offset_metadata_max_bytes: int = 4096
    # The consumer protocol (KIP-848).
    consumer_heartbeat_interval_ms: int = 5000
    consumer_session_timeout_ms: int = 45000
    consumer_max_size: int = 2147483647
    consumer_assignors: tuple[str, ...] = ("uniform", "range")

    @classmethod
    def from_config(cls, config) -> "GroupSettings":
        values = config.values
        defaults = cls()

        def bounded(name: str, default: int) -> int:
            value = values.get(name, default)
            low = values.get(name.replace("group.consumer.", "group.consumer.min."), value)
            high = values.get(name.replace("group.consumer.", "group.consumer.max."), value)
            if not low <= value <= high:
                raise ValueError(f"{name}={value} must be between {low} and {high} "
                                 f"(group.consumer.min/max.{name[len('group.consumer.'):]})")
            return value

        heartbeat_ms = bounded("group.consumer.heartbeat.interval.ms", defaults.consumer_heartbeat_interval_ms)
        session_ms = bounded("group.consumer.session.timeout.ms", defaults.consumer_session_timeout_ms)
        if heartbeat_ms >= session_ms:
            raise ValueError("group.consumer.heartbeat.interval.ms must be less than group.consumer.session.timeout.ms")
        return cls(
            consumer_heartbeat_interval_ms=heartbeat_ms,
            consumer_session_timeout_ms=session_ms,
            consumer_max_size=values.get("group.consumer.max.size", defaults.consumer_max_size),
            consumer_assignors=tuple(parse_assignor_list(values.get("group.consumer.assignors", "uniform,range"))),
            initial_rebalance_delay_ms=values.get("group.initial.rebalance.delay.ms", defaults.initial_rebalance_delay_ms),
            min_session_timeout_ms=values.get("group.min.session.timeout.ms", defaults.min_session_timeout_ms),
            max_session_timeout_ms=values.get("group.max.session.timeout.ms", defaults.max_session_timeout_ms),
            offsets_retention_ms=values.get("offsets.retention.minutes", 10080) * 60 * 1000,
            offsets_retention_check_interval_ms=values.get(
                "offsets.retention.check.interval.ms", defaults.offsets_retention_check_interval_ms),
            offset_metadata_max_bytes=values.get("offset.metadata.max.bytes", defaults.offset_metadata_max_bytes),
        )

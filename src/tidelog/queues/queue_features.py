"""Issue 14's queue features for a broker's share-partitions: what ``ShareManager.acquire`` asks for
a selection policy per acquisition (``QueueFeatures.policy``), the settings behind it, and the
per-share-partition caches.

``QueueFeatures`` keeps one ``AttrCache`` per share-partition (record attributes by batch,
bounded by the window) and the compiled filters by expression; ``settings_for`` reads the
topic's tidelog.* configs and the group's ``tidelog.filter`` (through the collaborator given,
``configs(key) -> (topic configs, group configs)``). ``on_counts(key, counts)`` gets the
bad-input counters (invalid_priority, invalid_delay, invalid_ttl) and ``filter_errors``.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

from tidelog.queues.filters import RecordFilter, compile_filter
from tidelog.queues.priority import QueuePolicy
from tidelog.queues.record_attrs import AttrCache, QueueSettings
from tidelog.queues.state_records import ShareStateKey

__all__ = ["QueueFeatures"]

logger = logging.getLogger(__name__)

ConfigsOf = Callable[[ShareStateKey], tuple[Mapping[str, str], Mapping[str, str]]]


class QueueFeatures:
    def __init__(self, broker_config, configs: ConfigsOf,
                 on_counts: Callable[[ShareStateKey, dict[str, int]], None] | None = None) -> None:
        self._broker_config = broker_config
        self._configs = configs
        self._on_counts = on_counts
        self._caches: dict[ShareStateKey, AttrCache] = {}
        self._filters: dict[str, RecordFilter | None] = {}

    def settings_for(self, key: ShareStateKey) -> QueueSettings:
        topic_configs, group_configs = self._configs(key)
        topic = lambda name: self._broker_config.topic_value(dict(topic_configs), name)  # noqa: E731
        expression = self._broker_config.group_value(dict(group_configs), "tidelog.filter")
        record_filter = self._filter(expression)
        return QueueSettings(
            priority_enabled=topic("tidelog.priority.enable"), priority_header=topic("tidelog.priority.header"),
            default_priority=topic("tidelog.priority.default"),
            lookahead_records=topic("tidelog.priority.lookahead.records"), aging_ms=topic("tidelog.priority.aging.ms"),
            delay_ms=topic("tidelog.delay.ms"), ttl_ms=topic("tidelog.ttl.ms"), matches=record_filter,
            filter_source=expression if record_filter is not None else "")

    def _filter(self, expression: str) -> RecordFilter | None:
        if expression not in self._filters:
            if len(self._filters) > 256:
                self._filters.clear()
            try:
                self._filters[expression] = compile_filter(expression)
            except ValueError as e:  # validated when set; a stored one that no longer compiles filters nothing
                logger.warning("share group filter %r does not compile, not applied: %s", expression, e)
                self._filters[expression] = None
        return self._filters[expression]

    def policy(self, key: ShareStateKey, data, batches, start_offset: int, last_offset: int) -> QueuePolicy:
        """The policy of one acquisition over a read (``data``, its ``parse_log_batches``)."""
        settings = self.settings_for(key)
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = AttrCache()
        cache.prune(start_offset)
        attrs = cache.runs(data, batches, settings, start_offset, last_offset)
        counts = cache.take_counts()
        if settings.matches is not None and settings.matches.errors:
            counts["filter_errors"] = settings.matches.errors
            settings.matches.errors = 0
        if counts and self._on_counts is not None:
            self._on_counts(key, counts)
        policy = QueuePolicy(settings, attrs)
        policy.lookahead_records = settings.lookahead_records
        return policy

    def forget(self, key: ShareStateKey) -> None:
        self._caches.pop(key, None)

    def cached_batches(self) -> int:
        return sum(len(c) for c in self._caches.values())

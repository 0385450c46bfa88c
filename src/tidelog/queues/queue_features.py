"""Issue 14's queue features for a broker's share-partitions: what ``ShareManager.acquire`` asks for
a selection policy per acquisition (``QueueFeatures.policy``), the settings behind it, and the
per-share-partition caches.

``QueueFeatures`` keeps one ``AttrCache`` per share-partition (record attributes by batch,
bounded by the window; dropped by ``forget`` when the ShareManager unloads the share-partition:
leadership lost, group or topic deleted, offsets altered; at most ``MAX_CACHED_PARTITIONS``, the
least recently used going first) and the compiled filters by expression; ``settings_for`` reads the
topic's tidelog.* configs and the group's ``tidelog.filter`` (through the collaborator given,
``configs(key) -> (topic configs, group configs)``), and keeps what it made per share-partition
while those overrides stay the same (dropped by ``forget`` too; at most ``MAX_CACHED_PARTITIONS``).
``on_counts(key, counts)`` gets the bad-input counters (invalid_priority, invalid_delay,
invalid_ttl) and ``filter_errors``.
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

MAX_CACHED_PARTITIONS = 4096
ConfigsOf = Callable[[ShareStateKey], tuple[Mapping[str, str], Mapping[str, str]]]


class QueueFeatures:
    def __init__(self, broker_config, configs: ConfigsOf,
                 on_counts: Callable[[ShareStateKey, dict[str, int]], None] | None = None) -> None:
        self._broker_config = broker_config
        self._configs = configs
        self._on_counts = on_counts
        self._caches: dict[ShareStateKey, AttrCache] = {}
        self._filters: dict[str, RecordFilter | None] = {}
        # settings_for's: the overrides they were made from (copies) and the settings, by share-partition
        self._settings: dict[ShareStateKey, tuple[dict[str, str], dict[str, str], QueueSettings]] = {}

    def settings_for(self, key: ShareStateKey) -> QueueSettings:
        """The share-partition's settings, made again only when its topic's or group's overrides
        changed (an acquisition asks twice: its look-ahead before the read, its policy after; making
        them reads eight topic configs through their validators). The broker's own settings do not
        change while it runs."""
        topic_configs, group_configs = self._configs(key)
        cached = self._settings.get(key)
        if cached is not None and cached[0] == topic_configs and cached[1] == group_configs:
            return cached[2]
        settings = self._make_settings(topic_configs, group_configs)
        if len(self._settings) >= MAX_CACHED_PARTITIONS:
            self._settings.clear()
        self._settings[key] = (dict(topic_configs), dict(group_configs), settings)
        return settings

    def _make_settings(self, topic_configs: Mapping[str, str], group_configs: Mapping[str, str]) -> QueueSettings:
        topic = lambda name: self._broker_config.topic_value(dict(topic_configs), name)  # noqa: E731
        # The stored text as it is (checked when it was set): group_value would run the config's
        # validator, a CEL compile (~0.6 ms), at every acquisition. _filter compiles it once.
        expression = group_configs.get("tidelog.filter")
        if expression is None:
            expression = self._broker_config.group_value({}, "tidelog.filter")
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

    def lookahead_records(self, key: ShareStateKey) -> int:
        """The look-ahead ``policy`` will give the share-partition's next acquisition (asked before its read)."""
        settings = self.settings_for(key)
        return settings.lookahead_records if settings.reorders else 0

    def policy(self, key: ShareStateKey, data, batches, start_offset: int, last_offset: int) -> QueuePolicy:
        """The policy of one acquisition over a read (``data``, its ``parse_log_batches``)."""
        settings = self.settings_for(key)
        cache = self._caches.pop(key, None)  # re-inserted last: the dict's order is the recency
        if cache is None:
            cache = AttrCache()
            while len(self._caches) >= MAX_CACHED_PARTITIONS:
                del self._caches[next(iter(self._caches))]
        self._caches[key] = cache
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

    def describe(self, key: ShareStateKey, due: list[tuple[int, int]], waiting: int) -> dict:
        """For the HTTP API, the console and the CLI: the tidelog.* settings in force for a
        share-partition, and its Available records (``due``: ranges acquirable now, from
        ``SharePartition.available``) by priority where priority is on: the records' own priorities
        as the attribute cache knows them (records it has not looked at yet count at the default).
        ``delayed``: Available records waiting for their time (``waiting``)."""
        settings = self.settings_for(key)
        out: dict = {"settings": {
            "tidelog.priority.enable": settings.priority_enabled, "tidelog.priority.header": settings.priority_header,
            "tidelog.priority.default": settings.default_priority,
            "tidelog.priority.lookahead.records": settings.lookahead_records,
            "tidelog.priority.aging.ms": settings.aging_ms, "tidelog.delay.ms": settings.delay_ms,
            "tidelog.ttl.ms": settings.ttl_ms, "tidelog.filter": settings.filter_source},
            "delayed": waiting, "available_by_priority": None}
        if settings.priority_enabled:
            counts: dict[int, int] = {}
            cache = self._caches.get(key)
            runs = sorted(run for batch in (cache.batches() if cache is not None else ()) for run in batch)
            j = 0
            for first, last in due:
                position = first
                while position <= last:
                    while j < len(runs) and runs[j].last < position:
                        j += 1
                    run = runs[j] if j < len(runs) else None
                    if run is None or run.first > position:  # not looked at: the default priority
                        end = last if run is None else min(last, run.first - 1)
                        priority = settings.default_priority
                    else:
                        end = min(last, run.last)
                        priority = run.priority
                    counts[priority] = counts.get(priority, 0) + end - position + 1
                    position = end + 1
            out["available_by_priority"] = {str(p): counts[p] for p in sorted(counts, reverse=True)}
        return out

    def forget(self, key: ShareStateKey) -> None:
        self._caches.pop(key, None)
        self._settings.pop(key, None)

    def cached_batches(self) -> int:
        return sum(len(c) for c in self._caches.values())

    def cached_partitions(self) -> int:
        return len(self._caches)

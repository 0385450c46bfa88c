"""Which topics were deleted, as the metadata store tells every broker (Kafka's broker metadata
publisher hands the group coordinator a topics delta's deleted topics).

The store's listeners hear "topic" with a name when a topic is created, reconfigured, grown or
deleted; a deletion is a name whose record is gone, or whose record now has another topic id (a
topic deleted and created again between two looks, as an etcd watch may show it). ``TopicDeletions``
remembers each topic's last record and calls ``on_deleted(record)`` once per deleted topic, on every
broker: the group coordinator and the share groups act on it where they live. After the store
reloads (an etcd watch compacted away) it says "controller": then every name is looked at.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore, TopicRecord

logger = logging.getLogger(__name__)


class TopicDeletions:
    """See the module docstring."""

    def __init__(self, store: "MetadataStore", on_deleted: Callable[["TopicRecord"], None]) -> None:
        self.store = store
        self.on_deleted = on_deleted
        self._known: dict[str, "TopicRecord"] = dict(store.topics)
        store.add_listener(self._on_change)

    def _on_change(self, kind: str, key: object) -> None:
        if kind == "topic":
            self._look(str(key))
        elif kind == "controller":
            for name in set(self._known) | set(self.store.topics):
                self._look(name)

    def _look(self, name: str) -> None:
        record = self.store.topics.get(name)
        known = self._known.get(name)
        if record is None:
            self._known.pop(name, None)
        else:
            self._known[name] = record
        if known is not None and (record is None or record.topic_id != known.topic_id):
            try:
                self.on_deleted(known)
            except Exception:  # noqa: BLE001 - the store's other listeners still run
                logger.exception("acting on the deletion of topic %s failed", name)

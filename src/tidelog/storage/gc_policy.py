"""The cyclic garbage collector in a broker process: young collections rarer, and the logs kept
out of the full ones.

A broker holds ~55 tracked objects a partition that live as long as it does (its log, segments,
indexes, Partition, metric children): ~556,000 with 10,000 partitions. CPython's full collection
walks every tracked object, and it runs whenever the objects promoted since the last one reach a
quarter of those that survived it. Under a produce load each request's objects outlive the
young collections (they wait for the group commit), so they were promoted by the thousand: with
10,000 partitions a full collection came every ~12,000 records and took 0.3-1 s, most of the
broker's CPU while producing over all of them (BENCHMARKS.md, "Many partitions").

``enable()`` (``tidelog serve``) does two things. The youngest generation is collected every
``YOUNG_THRESHOLD`` allocations instead of 700: most request objects are gone by then, so few are
promoted and full collections become rare (a young collection walks only young objects that
are still alive, so it stays short). And ``gc.freeze()`` runs once the broker has started and
whenever logs are created: every object alive then moves to a permanent generation that
collections skip (a list splice, not a walk). A frozen object is still freed by reference
counting, but a reference cycle of frozen objects that becomes garbage is not collected: so a
deletion of logs unfreezes, collects once (their cycles go) and freezes again. Each is done once
per turn of the event loop however many logs a request creates or deletes. Disabled (the
default: tests and embedded brokers), nothing here touches the collector.

Not thread-safe; the event loop calls it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

__all__ = ["collect_soon", "disable", "enable", "freeze_soon"]

logger = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation (CPython: 700)

_enabled = False
_scheduled: str | None = None  # "freeze", or "collect" (unfreeze, collect, freeze), due this turn


_default_thresholds = gc.get_threshold()


def enable() -> None:
    global _enabled
    _enabled = True
    gc.set_threshold(YOUNG_THRESHOLD, *_default_thresholds[1:])


def disable() -> None:
    """Back to CPython's defaults (and unfreeze what was frozen): for tests."""
    global _enabled, _scheduled
    _enabled, _scheduled = False, None
    gc.set_threshold(*_default_thresholds)
    gc.unfreeze()


def freeze_soon() -> None:
    """Objects that live as long as the broker were made (logs opened or created, the broker
    started): freeze what is alive once this turn of the event loop is done."""
    _schedule("freeze")


def collect_soon() -> None:
    """Logs were deleted: collect their cycles (everything unfrozen once), then freeze again."""
    _schedule("collect")


def _schedule(what: str) -> None:
    global _scheduled
    if not _enabled:
        return
    if _scheduled is not None:
        if what == "collect":
            _scheduled = "collect"
        return
    _scheduled = what
    try:
        asyncio.get_running_loop().call_soon(_run)
    except RuntimeError:  # no loop (a synchronous caller): now
        _run()


def _run() -> None:
    global _scheduled
    what, _scheduled = _scheduled, None
    if what is None or not _enabled:
        return
    if what == "collect":
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        logger.info("garbage collection after deleting logs: %d objects freed in %.2f s", collected,
                    time.perf_counter() - started)
    gc.freeze()

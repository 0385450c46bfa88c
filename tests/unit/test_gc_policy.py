"""storage/gc_policy.py: a broker's logs kept out of full garbage collections (issue 19.4)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from tidelog.storage import gc_policy
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager


class Node:
    """A tracked object that can be put in a reference cycle and watched with a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def frozen(obj) -> bool:
    """Whether ``obj`` is in the permanent generation (gc.get_objects lists only the others)."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


@pytest.fixture
def policy():
    gc_policy.enable()
    try:
        yield gc_policy
    finally:
        gc_policy.disable()


def test_disabled_by_default_nothing_is_frozen(tmp_path):
    assert gc.get_threshold() == gc_policy._default_thresholds
    # CPython 3.12 starts with objects of its own in the permanent generation (375 on 3.12.1;
    # 0 on 3.11 and 3.13): nothing of ours may be added to them.
    frozen_at_start = gc.get_freeze_count()

    async def run():
        manager = LogManager(tmp_path, LogConfig())
        log = manager.create("t", 0)
        await asyncio.sleep(0)
        return manager, log

    manager, log = asyncio.run(run())
    assert gc.get_freeze_count() == frozen_at_start and not frozen(log.segments)
    manager.delete_topic("t")


def test_logs_created_are_frozen_once_per_loop_turn(tmp_path, policy, monkeypatch):
    assert gc.get_threshold()[0] == gc_policy.YOUNG_THRESHOLD  # young collections rarer
    freezes = []
    real_freeze = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(1) or real_freeze())

    async def run():
        manager = LogManager(tmp_path, LogConfig())
        logs = [manager.create("t", p) for p in range(20)]
        assert freezes == [] and not frozen(logs[0].segments)  # not before this turn ends
        await asyncio.sleep(0)
        return manager, logs

    manager, logs = asyncio.run(run())
    assert freezes == [1]  # twenty logs, one freeze
    assert all(frozen(log.segments) for log in logs)


def test_deleting_logs_collects_frozen_cycles(tmp_path, policy):
    async def run():
        manager = LogManager(tmp_path, LogConfig())
        manager.create("t", 0)
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle frozen with the log: garbage the collector would never see
        await asyncio.sleep(0)
        assert frozen(a)
        watch = weakref.ref(a)
        del a, b
        gc.collect()
        assert watch() is not None  # frozen: not collected
        manager.delete_topic("t")
        await asyncio.sleep(0)
        return watch

    watch = asyncio.run(run())
    assert watch() is None  # the deletion unfroze and collected it
    assert gc.get_freeze_count() > 0  # and froze what is alive again

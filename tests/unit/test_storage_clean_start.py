"""Starts of many logs (issue 19, item 4). After a clean stop the clean-shutdown marker holds the
logs as the stop left them, so a start opens them without reading a file of theirs; each
segment's file (its size checked) and indexes (checked whole) are read at their first use. After
a crash each log's active segment is read once and no index file is touched."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from tidelog.storage.errors import StorageError
from tidelog.storage.leader_epoch import EPOCH_FILE, LeaderEpochCache
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import CLEAN_SHUTDOWN_FILE, LogManager

from .storage_helpers import all_offsets, append

CONFIG = LogConfig(segment_bytes=2_000, index_interval_bytes=64)


def manager_at(path) -> LogManager:
    manager = LogManager(path, CONFIG)
    manager.open_all({})
    return manager


def fill(path, partitions: int = 4, batches: int = 30) -> dict:
    """Logs of several segments each, with index entries and a leader-epoch file; stopped cleanly.
    Returns what each log looked like before the stop."""

    async def run():
        manager = manager_at(path)
        for p in range(partitions):
            log = manager.create("t", p)
            cache = LeaderEpochCache(log)
            cache.assign(3, 0)
            for i in range(batches):
                append(log, count=2, value_size=40, timestamp_ms=10_000 + i, tag=i)
        seen = {log.partition: describe(log) for log in manager.logs()}
        await manager.close()
        return seen

    return asyncio.run(run())


def describe(log) -> tuple:
    return (log.log_start_offset, log.log_end_offset, [s.base_offset for s in log.segments], all_offsets(log),
            [log.offset_for_timestamp(10_000 + i) for i in range(0, 30, 4)],
            [(list(s.offset_index.keys), list(s.offset_index.values)) for s in log.segments])


def test_a_clean_start_reads_no_file_of_a_log_until_it_is_used(tmp_path, monkeypatch):
    before = fill(tmp_path)
    marker = json.loads((tmp_path / CLEAN_SHUTDOWN_FILE).read_text())
    assert sorted(marker["logs"]) == [f"t-{p}" for p in range(4)]
    opened = []
    real_open, real_listdir = os.open, os.listdir
    monkeypatch.setattr(os, "open", lambda path, *args, **kw: opened.append(str(path)) or real_open(path, *args, **kw))
    monkeypatch.setattr(os, "listdir", lambda path=".": opened.append(str(path)) or real_listdir(path))
    manager = manager_at(tmp_path)
    assert [p for p in opened if "/t-" in p] == []  # nothing under a partition directory
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    logs = {log.partition: log for log in manager.logs()}
    assert all(log.durable_offset == log.log_end_offset for log in logs.values())
    assert LeaderEpochCache(logs[0]).entries == [(3, 0)] and not [p for p in opened if EPOCH_FILE in p]
    assert {p: describe(log) for p, log in logs.items()} == before  # read at first use: the same
    for log in logs.values():  # and it goes on: appends, a roll, a clean stop, a start
        for i in range(30, 40):
            append(log, count=2, value_size=40, timestamp_ms=10_000 + i, tag=i)
    after = {p: describe(log) for p, log in logs.items()}
    asyncio.run(manager.close())
    again = manager_at(tmp_path)
    assert {log.partition: describe(log) for log in again.logs()} == after
    asyncio.run(again.close())
    os.unlink(tmp_path / CLEAN_SHUTDOWN_FILE)  # as after a SIGKILL: every log read and recovered
    recovered = manager_at(tmp_path)
    assert {log.partition: describe(log) for log in recovered.logs()} == after


def test_a_log_the_marker_does_not_describe_is_read(tmp_path):
    before = fill(tmp_path, partitions=3)
    marker_path = tmp_path / CLEAN_SHUTDOWN_FILE
    marker = json.loads(marker_path.read_text())
    del marker["logs"]["t-1"]
    marker_path.write_text(json.dumps(marker))
    manager = manager_at(tmp_path)
    assert {log.partition: describe(log) for log in manager.logs()} == before
    asyncio.run(manager.close())
    marker_path.write_text("")  # the empty marker of older versions: every log is read
    assert {log.partition: describe(log) for log in manager_at(tmp_path).logs()} == before


def test_a_segment_changed_while_the_broker_was_stopped_takes_the_directory_offline(tmp_path):
    fill(tmp_path, partitions=1)
    active = sorted((tmp_path / "t-0").glob("*.log"))[-1]
    with open(active, "ab") as f:
        f.write(b"\0" * 7)
    manager = manager_at(tmp_path)
    log = manager.get("t", 0)
    with pytest.raises(StorageError):
        append(log)
    assert manager.offline and "changed while the broker was stopped" in manager.offline_reason


def test_an_index_broken_while_the_broker_was_stopped_is_rebuilt_at_its_first_use(tmp_path, caplog):
    before = fill(tmp_path, partitions=1)
    index = sorted((tmp_path / "t-0").glob("*.index"))[0]
    index.write_bytes(index.read_bytes()[:-3])  # torn
    manager = manager_at(tmp_path)
    assert "rebuilding" not in caplog.text
    assert describe(manager.get("t", 0)) == before[0]
    assert "index files missing or inconsistent, rebuilding them" in caplog.text
    asyncio.run(manager.close())
    caplog.clear()
    assert describe(manager_at(tmp_path).get("t", 0)) == before[0]
    assert "rebuilding" not in caplog.text  # the close wrote the rebuilt file


def test_a_start_after_a_crash_reads_each_active_segment_once_and_no_index_file(tmp_path, monkeypatch):
    """After a SIGKILL each log costs a listing and its active segment's file, read once: its
    index files are neither read nor rewritten (they are settled at their next write), and none
    is emptied (freeing an index file's block cost ~2.4 ms on ext4 with discard, twice a log)."""
    fill(tmp_path, partitions=5, batches=10)  # one segment each, with index entries
    os.unlink(tmp_path / CLEAN_SHUTDOWN_FILE)
    opened, truncated = [], []
    real_open, real_ftruncate = os.open, os.ftruncate
    monkeypatch.setattr(os, "open", lambda path, *args, **kw: opened.append(str(path)) or real_open(path, *args, **kw))
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: truncated.append(size) or real_ftruncate(fd, size))
    manager = manager_at(tmp_path)
    assert sorted(p.rsplit("/", 2)[-2] for p in opened if p.endswith(".log")) == [f"t-{p}" for p in range(5)]
    assert [p for p in opened if p.endswith("index")] == [] and truncated == []
    assert all(log.log_end_offset == 20 == log.durable_offset for log in manager.logs())


@pytest.mark.parametrize("active", [True, False])
def test_a_segment_opened_from_a_clean_stops_account_has_every_field_a_new_one_has(tmp_path, active):
    """from_state builds a segment without __init__: a field added to one and not the other broke
    Fetch after every clean restart ('LogSegment' object has no attribute 'released')."""
    from tidelog.storage.segment import LogSegment

    made = LogSegment(tmp_path, 0)
    reopened = LogSegment.from_state(tmp_path, made.state(), None, 4096, active)
    assert sorted(vars(reopened)) == sorted(vars(made))
    made.close()


def test_other_components_directories_are_not_reported_as_unexpected(tmp_path, caplog):
    """The delay topics' index (``.delay-index``) and the metadata (``__tidelog_meta``) live in the
    data directory beside the logs: a start passes them by without a WARNING; a stray directory is
    still named."""
    fill(tmp_path, partitions=1, batches=2)
    os.rename(tmp_path / "t-0", tmp_path / ".t-0")  # a topic may be named ".t": its log is still a log
    (tmp_path / ".delay-index").mkdir()
    (tmp_path / "__tidelog_meta").mkdir()
    (tmp_path / "stray").mkdir()
    caplog.set_level("WARNING", logger="tidelog")

    async def run():
        manager = manager_at(tmp_path)
        topics = [(log.topic, log.partition) for log in manager.logs()]
        await manager.close()
        return topics

    assert asyncio.run(run()) == [(".t", 0)]
    unexpected = [r.getMessage() for r in caplog.records if "unexpected directory" in r.getMessage()]
    assert unexpected == [f"ignoring unexpected directory {tmp_path / 'stray'}"]

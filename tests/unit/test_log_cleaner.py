"""The log cleaner on real segment files: what survives a cleaning, and what it never changes."""

from __future__ import annotations

import time

import pytest

from tidelog.protocol.control_records import build_end_txn_marker_batch
from tidelog.protocol.records import build_batch, iter_records, parse_batch_header
from tidelog.storage.cleaner_manager import CHECKPOINT_FILE, CleanerConfig, read_cleaner_checkpoint
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager

from .storage_helpers import batch_spans

NOW_MS = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


def compacted(**overrides) -> LogConfig:
    settings = dict(segment_bytes=600, index_interval_bytes=64, compact=True, delete=False, durability="throughput",
                    min_cleanable_dirty_ratio=0.0, segment_ms=1 << 60)
    settings.update(overrides)
    return LogConfig(**settings)


@pytest.fixture
def manager(tmp_path):
    manager = LogManager(tmp_path, compacted(), cleaner_config=CleanerConfig(dedupe_buffer_bytes=1 << 20))
    yield manager
    for log in manager.logs():
        log.close()


def put(log, *records, timestamp_ms=NOW_MS, **batch_fields) -> int:
    """Append one batch of (key, value) records; return its base offset."""
    batch = bytearray(build_batch([(k, v, []) for k, v in records], timestamp_ms=timestamp_ms, **batch_fields))
    return log.append(memoryview(batch), parse_batch_header(batch), now_ms=timestamp_ms)


def read_all(log) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record from the log start, through empty batches and gaps."""
    found, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20, True)
        if not data:
            break
        found += [(r.offset, r.key, r.value) for r in iter_records(data) if r.offset >= offset]
        offset = batch_spans(data)[-1][1] + 1
    return found


def batches(log) -> list:
    """Every batch header in the log."""
    headers, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = memoryview(log.read(offset, 1 << 20, True))
        pos = 0
        while pos < len(data):
            info = parse_batch_header(data, pos)
            headers.append(info)
            pos += info.size
        offset = headers[-1].last_offset + 1
    return headers


def test_keeps_the_latest_value_per_key_with_offsets_and_order_unchanged(manager):
    log = manager.create("t", 0, compacted())
    for round_ in range(12):
        for key in (b"a", b"b", b"c"):
            put(log, (key, b"%s-%d" % (key, round_)))
    put(log, (b"a", b"active"))  # may land in the active segment, which is never cleaned
    before = read_all(log)
    active_base = log.segments[-1].base_offset
    assert len(log.segments) > 3
    result = manager.cleaner.clean_now(log, NOW_MS)
    assert result is not None and result.groups
    after = read_all(log)
    latest_below_active = {key: (offset, key, value) for offset, key, value in before if offset < active_base}
    assert [r for r in after if r[0] < active_base] == sorted(latest_below_active.values())
    assert [r for r in after if r[0] >= active_base] == [r for r in before if r[0] >= active_base]
    assert [r[0] for r in after] == sorted(r[0] for r in after)  # order kept
    assert set(after) <= set(before)  # offsets, keys and values as they were
    assert log.log_end_offset == before[-1][0] + 1


def test_a_tombstone_survives_the_first_cleaning_then_goes_after_delete_retention(manager):
    log = manager.create("t", 0, compacted(delete_retention_ms=DAY_MS))
    put(log, (b"gone", b"v1"), (b"kept", b"v1"))
    put(log, (b"gone", None))
    for i in range(10):
        put(log, (b"filler", b"%d" % i))
    manager.cleaner.clean_now(log, NOW_MS)
    assert (2, b"gone", None) in read_all(log) and not any(r[1] == b"gone" and r[2] for r in read_all(log))
    tombstone_batch = next(b for b in batches(log) if b.base_offset == 2)
    assert tombstone_batch.attributes & 0x40 and tombstone_batch.base_timestamp == NOW_MS + DAY_MS  # its delete horizon
    assert manager.cleaner.states[("t", 0)].next_delete_horizon_ms == NOW_MS + DAY_MS
    manager.cleaner.clean_now(log, NOW_MS + DAY_MS - 1)
    assert (2, b"gone", None) in read_all(log)
    manager.cleaner.clean_now(log, NOW_MS + DAY_MS)
    assert not any(r[1] == b"gone" for r in read_all(log))
    assert (1, b"kept", b"v1") in read_all(log)
    # the record timestamps survived the horizon rewrite
    assert all(r.timestamp == NOW_MS for r in iter_records(log.read(0, 1 << 20, True)))


def test_an_idempotent_producers_last_batch_stays_even_when_emptied(manager):
    log = manager.create("t", 0, compacted())
    put(log, (b"k", b"1"), producer_id=7, producer_epoch=2, base_sequence=0)
    put(log, (b"k", b"2"), (b"j", b"2"), producer_id=7, producer_epoch=2, base_sequence=1)
    for i in range(10):
        put(log, (b"k", b"%d" % (10 + i)))
    manager.cleaner.active_producers = lambda _log: {7: (2, 2)}
    manager.cleaner.clean_now(log, NOW_MS)
    kept = [b for b in batches(log) if b.producer_id == 7]
    assert [(b.base_offset, b.last_offset_delta, b.base_sequence, b.producer_epoch) for b in kept] == [(1, 1, 1, 2)]
    assert kept[0].record_count == 1  # j stays; k was superseded
    assert not any(r[1] == b"k" and r[0] < 3 for r in read_all(log))


def test_records_of_aborted_transactions_go_and_markers_stay_while_needed(manager, tmp_path):
    from tidelog.storage.txn_index import AbortedTxn, TransactionIndex

    log = manager.create("t", 0, compacted(delete_retention_ms=1000))
    put(log, (b"x", b"aborted"), producer_id=5, producer_epoch=0, base_sequence=0, is_transactional=True)
    marker = bytearray(build_end_txn_marker_batch(5, 0, 0, committed=False, timestamp_ms=NOW_MS))
    abort_offset = log.append(memoryview(marker), parse_batch_header(marker))
    TransactionIndex(log.dir / ("%020d.txnindex" % log.segments[-1].base_offset), log.segments[-1].base_offset).append(
        AbortedTxn(5, 0, abort_offset, abort_offset + 1))
    put(log, (b"y", b"committed"), producer_id=6, producer_epoch=0, base_sequence=0, is_transactional=True)
    marker = bytearray(build_end_txn_marker_batch(6, 0, 0, committed=True, timestamp_ms=NOW_MS))
    log.append(memoryview(marker), parse_batch_header(marker))
    for i in range(12):
        put(log, (b"filler", b"%d" % i))
    manager.cleaner.clean_now(log, NOW_MS)
    records = read_all(log)
    assert not any(r[1] == b"x" for r in records)
    assert (2, b"y", b"committed") in records
    markers = [b for b in batches(log) if b.is_control]
    assert [(b.base_offset, b.record_count, b.attributes & 0x40) for b in markers] == [(1, 1, 0), (3, 1, 0)]
    # the next cleaning finds the aborted transaction empty: its marker gets a delete horizon,
    # and goes with the first cleaning after it; the committed one stays with its data
    manager.cleaner.clean_now(log, NOW_MS)
    markers = [b for b in batches(log) if b.is_control]
    assert [(b.base_offset, b.attributes & 0x40) for b in markers] == [(1, 0x40), (3, 0)]
    assert markers[0].base_timestamp == NOW_MS + 1000
    manager.cleaner.clean_now(log, NOW_MS + 1000)
    assert [b.base_offset for b in batches(log) if b.is_control] == [3]
    assert (2, b"y", b"committed") in read_all(log)


def test_small_segments_are_grouped_into_one_cleaned_segment(manager):
    log = manager.create("t", 0, compacted(segment_bytes=400))
    for i in range(40):
        put(log, (b"same", b"%d" % i))
    segments_before = len(log.segments)
    for _ in range(3):  # each segment shrinks to its last (emptied) batch, then they fit in one
        manager.cleaner.clean_now(log, NOW_MS)
    assert len(log.segments) == 2  # one cleaned segment, then the active one
    assert segments_before > 5
    assert [r[1:] for r in read_all(log)][-2:] in ([(b"same", b"38"), (b"same", b"39")], [(b"same", b"39")])


def test_a_full_offset_map_cleans_part_of_the_dirty_section_and_the_next_cleaning_goes_on(tmp_path):
    manager = LogManager(tmp_path, compacted(), cleaner_config=CleanerConfig(dedupe_buffer_bytes=24 * 64, load_factor=0.5))
    log = manager.create("t", 0, compacted(segment_bytes=2000))
    for i in range(200):
        put(log, (b"k%d" % (i % 100), b"%d" % i))
    first = manager.cleaner.clean_now(log, NOW_MS)
    assert first.next_dirty_offset < log.segments[-1].base_offset  # 32 keys fit, not 100
    assert read_cleaner_checkpoint(tmp_path / CHECKPOINT_FILE) == {("t", 0): first.next_dirty_offset}
    while manager.cleaner.clean_now(log, NOW_MS).next_dirty_offset < log.segments[-1].base_offset:
        pass
    values = {key: value for _, key, value in read_all(log)}
    assert values == {b"k%d" % k: b"%d" % (100 + k) for k in range(100)}
    assert len(read_all(log)) < 150
    log.close()


def test_records_without_a_key_are_removed(manager):
    log = manager.create("t", 0, compacted())
    put(log, (None, b"no key"), (b"k", b"v"))
    for i in range(10):
        put(log, (b"f", b"%d" % i))
    result = manager.cleaner.clean_now(log, NOW_MS)
    assert result.stats.keyless_records_removed == 1
    assert [r for r in read_all(log) if r[0] < 2] == [(1, b"k", b"v")]


def test_compressed_batches_are_rewritten_in_their_codec(manager):
    from tidelog.protocol.compression import COMPRESSION_ZSTD

    log = manager.create("t", 0, compacted())
    put(log, (b"a", b"1"), (b"b", b"1"), (b"c", b"1"), compression=COMPRESSION_ZSTD)
    put(log, (b"b", b"2"))
    for i in range(10):
        put(log, (b"f", b"%d" % i))
    manager.cleaner.clean_now(log, NOW_MS)
    first = batches(log)[0]
    assert first.compression == COMPRESSION_ZSTD and first.record_count == 2 and first.last_offset_delta == 2
    assert [r for r in read_all(log) if r[0] < 4] == [(0, b"a", b"1"), (2, b"c", b"1"), (3, b"b", b"2")]


def test_nothing_at_or_above_the_high_watermark_or_min_compaction_lag_is_cleaned(manager):
    log = manager.create("t", 0, compacted(min_compaction_lag_ms=60_000))
    for i in range(20):
        put(log, (b"k", b"%d" % i), timestamp_ms=NOW_MS - 120_000 if i < 10 else NOW_MS)
    first_dirty, uncleanable = manager.cleaner.cleanable_offsets(log, NOW_MS)
    young = next(s for s in log.segments if s.max_timestamp > NOW_MS - 60_000)
    assert (first_dirty, uncleanable) == (0, young.base_offset)
    manager.cleaner.high_watermark = lambda _log: 3
    assert manager.cleaner.cleanable_offsets(log, NOW_MS) == (0, 3)


class Crash(Exception):
    pass


def test_a_crash_at_any_point_of_a_swap_leaves_the_old_segments_or_the_new_ones(tmp_path, monkeypatch):
    """Stop the swap before each rename and directory fsync in turn, as a SIGKILL would, then
    reopen: each group of segments reads exactly as before the cleaning or exactly as after it
    (groups are swapped one by one, and each is a valid compaction on its own)."""
    from tidelog.storage import segment_files
    from tidelog.storage.log import PartitionLog

    def fill(log):
        for i in range(30):
            put(log, (b"k%d" % (i % 4), b"%d" % i), (b"u%d" % i, b"x"))

    reference = LogManager(tmp_path / "reference", compacted())
    log = reference.create("t", 0, compacted())
    fill(log)
    before = read_all(log)
    groups = [(g.base_offset, g.next_offset) for g in reference.cleaner.clean_now(log, NOW_MS).groups]
    after = read_all(log)
    assert len(groups) > 1

    def in_group(records, group):
        return [r for r in records if group[0] <= r[0] < group[1]]

    log.close()
    assert after != before
    real_rename, real_fsync_dir = segment_files._rename, segment_files.fsync_dir
    point = 0
    while True:
        point += 1
        directory = tmp_path / f"crash-{point}"
        manager = LogManager(directory, compacted())
        log = manager.create("t", 0, compacted())
        fill(log)
        steps = []

        def step(real):
            def wrapped(*args):
                if len(steps) + 1 == point:
                    raise Crash()
                steps.append(args)
                return real(*args)
            return wrapped

        monkeypatch.setattr(segment_files, "_rename", step(real_rename))
        monkeypatch.setattr(segment_files, "fsync_dir", step(real_fsync_dir))
        try:
            manager.cleaner.clean_now(log, NOW_MS)
            crashed = False
        except Crash:
            crashed = True
        monkeypatch.setattr(segment_files, "_rename", real_rename)
        monkeypatch.setattr(segment_files, "fsync_dir", real_fsync_dir)
        for segment in log.segments:
            segment.close()
        reopened = PartitionLog.open(directory / "t-0", "t", 0, compacted(), recover=True)
        records = read_all(reopened)
        for group in groups:
            assert in_group(records, group) in (in_group(before, group), in_group(after, group)), f"crash at step {point}"
        assert [r for r in records if r[0] >= groups[-1][1]] == [r for r in before if r[0] >= groups[-1][1]]
        leftovers = [p.name for p in (directory / "t-0").iterdir() if p.suffix in (".cleaned", ".swap", ".deleted")]
        assert leftovers == []
        reopened.close()
        if not crashed:
            break
    assert point > 10  # every rename and fsync of a multi-group swap was a crash point


def test_the_cleaner_runs_in_a_worker_process_and_swaps_results_in_on_the_loop(tmp_path):
    import asyncio
    import os

    async def run():
        manager = LogManager(tmp_path, compacted(), cleaner_config=CleanerConfig(backoff_ms=20, dedupe_buffer_bytes=1 << 20))
        await manager.start()
        log = manager.create("t", 0, compacted())
        for i in range(60):
            put(log, (b"k%d" % (i % 3), b"%d" % i), timestamp_ms=None)
        while manager.cleaner.totals.runs["cleaned"] == 0:  # woken by the rolls
            await asyncio.sleep(0.02)
        state = manager.cleaner.states[("t", 0)]
        workers = list(manager.cleaner._executor._processes)
        assert workers and os.getpid() not in workers
        assert state.runs >= 1 and state.last_cleaned_ms and state.first_dirty_offset > 0
        latest = {}
        for offset, key, value in read_all(log):
            latest[key] = value
        assert latest == {b"k0": b"57", b"k1": b"58", b"k2": b"59"}
        assert len(read_all(log)) < 20
        await manager.close()
        assert all(not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
                   for pid in workers)

    asyncio.run(run())


def test_a_followers_log_keeps_its_leaders_offsets_across_compaction_gaps(tmp_path):
    from tidelog.storage.log import PartitionLog

    log = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted(segment_bytes=200), recover=False)
    for base_offset in (0, 7, 8, 30, 31):  # what a compacted leader sends: gaps between batches
        batch = bytearray(build_batch([(b"k%d" % base_offset, b"v", [])], timestamp_ms=NOW_MS))
        assert log.append(memoryview(batch), parse_batch_header(batch), base_offset=base_offset) == base_offset
    assert log.log_end_offset == 32
    assert [r[0] for r in read_all(log)] == [0, 7, 8, 30, 31]
    assert [r[0] for r in iter_records(log.read(9, 1 << 20, True))][:1] == [30]  # a read in a gap gets the next batch
    log.close()
    reopened = PartitionLog.open(tmp_path / "t-0", "t", 0, compacted(segment_bytes=200), recover=True)
    assert [r[0] for r in read_all(reopened)] == [0, 7, 8, 30, 31] and reopened.log_end_offset == 32
    reopened.close()


def test_a_past_delete_horizon_does_not_make_the_cleaner_spin(manager):
    from tidelog.storage.cleaner_manager import CleaningState

    log = manager.create("t", 0, compacted())
    put(log, (b"k", b"v"))  # nothing cleanable: all in the active segment
    manager.cleaner.states[("t", 0)] = CleaningState(next_delete_horizon_ms=1)  # long past
    assert manager.cleaner._next_wait_s() == manager.cleaner.config.backoff_ms / 1000
    manager.cleaner.states[("t", 0)].next_delete_horizon_ms = int(time.time() * 1000) + 2000
    assert 1.9 < manager.cleaner._next_wait_s() <= 2.01


def test_a_failing_cleaning_is_retried_after_the_backoff_not_at_once(tmp_path, monkeypatch):
    """A full disk fails a cleaning but leaves the log cleanable: the runner waits for
    log.cleaner.backoff.ms before the next try instead of recopying the log in a loop."""
    import asyncio
    import errno
    from concurrent.futures import ThreadPoolExecutor

    from tidelog.storage import cleaner_manager

    attempts = []

    def disk_full(job, settings):
        attempts.append(job.name)
        raise OSError(errno.ENOSPC, "No space left on device")

    async def run():
        manager = LogManager(tmp_path, compacted(), cleaner_config=CleanerConfig(backoff_ms=300))
        monkeypatch.setattr(cleaner_manager, "_clean_in_worker", disk_full)
        monkeypatch.setattr(manager.cleaner, "_workers", lambda: ThreadPoolExecutor(1))
        log = manager.create("t", 0, compacted())
        for i in range(30):
            put(log, (b"k", b"%d" % i))
        await manager.start()
        await asyncio.sleep(1.0)
        await manager.close()
        return manager.cleaner.totals

    totals = asyncio.run(run())
    assert 2 <= len(attempts) <= 5, attempts
    assert totals.runs["failed"] == len(attempts) and "No space left" in totals.last_error


def test_a_worker_releases_its_offset_map_after_each_cleaning(manager, monkeypatch):
    """A cleaner worker lives on between cleanings; its offset map, grown to the keys of the last
    dirty section (up to log.cleaner.dedupe.buffer.size), is released when the cleaning ends."""
    from tidelog.storage import cleaner_manager

    log = manager.create("t", 0, compacted(segment_bytes=64 * 1024))
    for batch in range(20):  # 10,000 keys in several segments
        put(log, *[(b"key-%d" % (batch * 500 + i), b"v") for i in range(500)])
    cleaner = manager.cleaner
    first_dirty, uncleanable = cleaner.cleanable_offsets(log, NOW_MS)
    first_uncleanable, _, _ = cleaner._cleanable_bytes(log, first_dirty, uncleanable)
    job = cleaner._plan(log, first_dirty, first_uncleanable, NOW_MS).job
    monkeypatch.setattr(cleaner_manager, "_worker_cleaner", None)
    result = cleaner_manager._clean_in_worker(job, cleaner._worker_settings())
    offset_map = cleaner_manager._worker_cleaner.offset_map
    assert result.stats.map_utilization * offset_map.max_slots > 5000  # the map grew to hold the keys
    assert offset_map.slots == 4096 and offset_map.size == 0, "the worker kept its grown offset map"
    log.close()

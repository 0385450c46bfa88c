"""The fetch session cache's slots and eviction (Kafka's FetchSessionCache rules), and the
fetching side's requests (Kafka's FetchSessionHandler), on a clock the test moves."""

from __future__ import annotations

from tidelog.cluster.fetch_sessions import (
    FetchSessionCache, PartitionFetch, SessionRequests, next_epoch)
from tidelog.protocol.errors import ErrorCode

EVICTION_MS = 1000


def _partitions(count: int) -> list:
    return [(("t", index), PartitionFetch(0, 1024)) for index in range(count)]


def test_a_full_cache_refuses_a_new_session_until_one_is_idle_or_old():
    cache = FetchSessionCache(2, EVICTION_MS)
    first = cache.create(False, False, _partitions(1), now_ms=0)
    second = cache.create(False, False, _partitions(1), now_ms=10)
    assert first.session_id != second.session_id and len(cache) == 2
    cache.touch(first, 900)
    assert cache.create(False, False, _partitions(5), now_ms=1000) is None  # none idle or old: no slot
    # ``second`` has been idle longer than the eviction time: the least recently used goes.
    third = cache.create(False, False, _partitions(1), now_ms=1011)
    assert third is not None and cache.get(second.session_id) is None and cache.evictions == 1
    # Nothing idle, but ``first`` is older than the eviction time: a session at least as large takes its slot,
    # a smaller one does not.
    cache.touch(first, 1500)
    cache.touch(third, 1500)
    assert cache.create(False, False, [], now_ms=1600) is None
    fourth = cache.create(False, False, _partitions(1), now_ms=1600)
    assert fourth is not None and cache.get(first.session_id) is None


def test_a_followers_session_takes_a_consumers_slot_never_the_reverse():
    cache = FetchSessionCache(1, EVICTION_MS)
    follower = cache.create(True, False, _partitions(1), now_ms=0)
    assert cache.create(False, False, _partitions(100), now_ms=10) is None
    cache = FetchSessionCache(1, EVICTION_MS)
    consumer = cache.create(False, False, _partitions(100), now_ms=0)
    follower = cache.create(True, False, _partitions(1), now_ms=10)
    assert follower is not None and cache.get(consumer.session_id) is None


def test_zero_slots_keep_no_session():
    assert FetchSessionCache(0, EVICTION_MS).create(False, False, _partitions(1), now_ms=0) is None


def test_epochs_wrap_to_one():
    assert [next_epoch(e) for e in (0, 1, 2**31 - 1)] == [1, 2, 1]


def test_requests_send_changes_and_forget_what_is_no_longer_wanted():
    requests = SessionRequests()
    wanted = {("t", 0): PartitionFetch(5, 1024), ("t", 1): PartitionFetch(7, 1024)}
    assert requests.build(wanted) == (wanted, []) and (requests.session_id, requests.epoch) == (0, 0)
    assert requests.response(ErrorCode.none, 42)
    assert (requests.session_id, requests.epoch) == (42, 1)
    changed = {("t", 0): PartitionFetch(9, 1024), ("t", 2): PartitionFetch(0, 1024)}
    assert requests.build(changed) == (changed, [("t", 1)])
    assert requests.response(ErrorCode.none, 42) and requests.epoch == 2
    assert requests.build(changed) == ({}, [])
    # A wrong epoch: the next request is full and names the session (closing it); an unknown
    # session: a new one from scratch; a lost connection: full, closing it.
    assert not requests.response(ErrorCode.invalid_fetch_session_epoch, 0)
    assert (requests.session_id, requests.epoch) == (42, 0) and requests.build(changed) == (changed, [])
    assert not requests.response(ErrorCode.fetch_session_id_not_found, 0)
    assert (requests.session_id, requests.epoch) == (0, 0)
    requests.response(ErrorCode.none, 43)
    requests.failed()
    assert (requests.session_id, requests.epoch) == (43, 0)
    # A full fetch answered without a session (the broker's cache is full): full again.
    assert requests.response(ErrorCode.none, 0) and (requests.session_id, requests.epoch) == (0, 0)

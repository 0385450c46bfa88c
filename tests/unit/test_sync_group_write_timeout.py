"""A classic group's SyncGroup whose group-metadata write timed out (REQUEST_TIMED_OUT: the
__consumer_offsets write not durable and in its ISR within offsets.commit.timeout.ms, which
since edb38a0 also bounds the flush, so a slow disk on a single broker gets there) answers
REBALANCE_IN_PROGRESS, as Kafka's GroupMetadataManager.storeGroup maps a timed-out append:
every client rejoins on it, while the Java consumer takes REQUEST_TIMED_OUT on SyncGroup for an
unexpected error and throws. Failed before (REQUEST_TIMED_OUT was passed through)."""

from __future__ import annotations

from tidelog.protocol.errors import ErrorCode, KafkaError

from .test_group_coordinator import FailingLog, form_group, run


def test_a_sync_whose_group_write_timed_out_answers_rebalance_in_progress():
    async def scenario(c):
        results, syncs = await form_group(c, 2)
        return [s.error for s in syncs]

    timed_out = KafkaError(ErrorCode.request_timed_out, "__consumer_offsets write not replicated: request_timed_out")
    assert run(scenario, FailingLog(timed_out)) == [ErrorCode.rebalance_in_progress] * 2


def test_other_write_failures_answer_as_before():
    async def scenario(c):
        results, syncs = await form_group(c, 1)
        return [s.error for s in syncs]

    moved = KafkaError(ErrorCode.not_coordinator, "__consumer_offsets write not replicated: not_leader_or_follower")
    assert run(scenario, FailingLog(moved)) == [ErrorCode.not_coordinator]

"""At a group-commit job's end the answers it allows go out before the next job starts
(storage/manager.py ``_job_finished``): the next job, what was written while this one ran, is
handed to its fsync thread a loop turn later, behind the parked consumer Fetch's answer and the
Produce requests' steps. Handing it over wakes the fsync thread, which on a busy machine takes
the loop's CPU for the fsync's own part, and the answers waited for it; and a consumer answered
first has its next Fetch parked before that job ends (latency_trace: the records whose job ended
with no Fetch parked fell by half at linger.ms=0). The one-job-at-a-time rule is unchanged:
the next job still starts only after this one's outcome is accounted for. Real clients over real
sockets: tests/integration/test_produce_consume.py."""

from __future__ import annotations

import asyncio

from tests.unit.test_fetch_at_once import _fetch_frame, _Leader, _produce_frame, _values, _wait_until
from tests.unit.test_partition import leader
from tests.unit.test_replica_backlog import _receive, _Socket
from tidelog.handlers.registry import load_all
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager
from tidelog.server.connection import KafkaConnection


class _Noting(_Socket):
    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events

    def writelines(self, parts) -> None:
        self.events.append("answer")
        super().writelines(parts)

    def write(self, data) -> None:
        self.events.append("answer")
        super().write(data)


def test_a_parked_fetch_is_answered_before_the_next_job_starts(tmp_path):
    load_all()

    async def main():
        logs = LogManager(tmp_path, LogConfig(durability="balanced", flush_interval_ms=0))
        logs.open_all({})
        logs.partitions = {}
        logs.on_durable = lambda log: logs.partitions[(log.topic, log.partition)].on_local_flush()
        await logs.start()
        try:
            events: list[str] = []
            start_flushes = logs._start_flushes

            def noted(job_logs, syncfs):
                events.append("job")
                return start_flushes(job_logs, syncfs)
            logs._start_flushes = noted
            partition = leader(logs)
            broker = _Leader(logs, partition)
            consumer = KafkaConnection(broker)
            consumer.transport = socket = _Noting(events)
            # max_wait far past the group fsync's (a loaded CI disk's fsync can take seconds): the
            # Fetch must be answered by the record, not at its max_wait with nothing.
            _receive(consumer, _fetch_frame(1, 0, max_wait_ms=60_000))
            for _ in range(5):
                await asyncio.sleep(0)
            assert socket.written == [] and len(partition.parked_reads) == 1
            producer = KafkaConnection(broker)
            producer.transport = acks = _Socket()
            # Two Produce requests read at once: the first starts a job, the second waits for the next.
            _receive(producer, _produce_frame(2, b"first") + _produce_frame(3, b"second"))
            assert events == ["job"]
            await _wait_until(lambda: len(acks.written) == 2, timeout_s=30)
            assert _values(socket.written[0]) == [b"first"]
            assert events[:3] == ["job", "answer", "job"], events  # the answer before the next job's start
        finally:
            await logs.close()

    asyncio.run(main())

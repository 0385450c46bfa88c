"""SIGKILL a broker at random points of a log cleaning, many times: after every restart the log
reads as a valid compaction of what was acknowledged (each record where it was produced, in
order, every key's latest record there), never a mix of old and cleaned segments, never a loss.

The cleaner is throttled (``log.cleaner.io.max.bytes.per.second``) so that a cleaning lasts
about a second; each round writes more than a segment's worth (so the active segment rolls: it
is never cleaned, as in Kafka, so a round that fits in it leaves nothing to clean), waits for a
cleaning to start (its log line) and kills the broker a random time into it, so the kills land
in the offset map, the recopying, and now and then the swap. ``COMPACTION_CRASH_ROUNDS`` and
``COMPACTION_CRASH_SEED`` replay a run; the swap's every step is also crashed deterministically
in tests/unit/test_log_cleaner.py.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.brokerproc import wait_until
from tests.integration.test_compaction import assert_valid_compaction, create, produced_log, read_to

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("COMPACTION_CRASH_ROUNDS", "12"))
SETTINGS = {"log.cleaner.backoff.ms": "50", "log.cleaner.io.max.bytes.per.second": "100000",
            "log.durability.profile": "balanced"}
SEGMENT_BYTES = 30000
TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "min.cleanable.dirty.ratio": "0.01",
                 "file.delete.delay.ms": "0"}


STARTED = "cleaning offsets"
FINISHED = "segment groups (dirty section"


def log_count(broker, text: str) -> int:
    """How many times ``text`` is in the broker's whole log (every start appends to it)."""
    return broker.log_path.read_text(errors="replace").count(text)


def round_records(rng: random.Random, round_: int) -> list[tuple[bytes, bytes]]:
    """100-300 (key, value) records, and more until their keys and values alone exceed
    segment.bytes: the round's appends then roll the active segment at least once, sealing dirty
    records a cleaning may take (the active segment is never cleaned; a round that fitted in it
    left nothing to clean and waited in vain for a cleaning to start)."""
    records: list[tuple[bytes, bytes]] = []
    count = rng.randrange(100, 300)
    size = 0
    while len(records) < count or size <= SEGMENT_BYTES:
        key = b"key-%d" % rng.randrange(400)
        value = b"round-%d-%d-" % (round_, len(records)) + b"v" * rng.randrange(50, 400)
        records.append((key, value))
        size += len(key) + len(value)
    return records


def test_a_broker_killed_while_cleaning_keeps_every_acknowledged_latest_record(broker_factory):
    seed = int(os.environ.get("COMPACTION_CRASH_SEED", random.randrange(1 << 30)))
    print(f"COMPACTION_CRASH_SEED={seed}")
    rng = random.Random(seed)
    broker = broker_factory(SETTINGS)
    topic = "crashed-while-cleaning"
    create(broker, topic, TOPIC_CONFIGS)
    produced: dict[int, tuple] = {}
    started_lines = 0
    kills_during_cleaning = 0
    for round_ in range(ROUNDS):
        records = round_records(rng, round_)
        produced.update(produced_log(rng.choice(["confluent", "kafka-python"]), broker.bootstrap, topic, records,
                                     per_call=rng.randrange(10, 40)))
        wait_until(lambda: log_count(broker, STARTED) > started_lines, timeout_s=30, interval_s=0.01,
                   message="a cleaning to start")
        time.sleep(rng.uniform(0, 1.5))
        kills_during_cleaning += log_count(broker, FINISHED) < log_count(broker, STARTED)
        broker.kill()
        broker.restart()
        read = read_to(rng.choice(["confluent", "kafka-python", "aiokafka"]), broker.bootstrap, topic, max(produced))
        assert_valid_compaction(read, produced)
        started_lines = log_count(broker, STARTED)
    assert kills_during_cleaning >= ROUNDS // 3, f"only {kills_during_cleaning} of {ROUNDS} kills hit a cleaning"
    assert "Traceback" not in broker.log_path.read_text(errors="replace")

"""The in-process share-filter benchmark's stand-ins (benchmarks/share_filter.py): its log reads what
a walk of every batch read, and its consumer's acknowledgements decode to the acquired ranges."""

import random
import uuid

from benchmarks.share_filter import _acknowledge_request, _Log
from tidelog.protocol.share_requests import decode_share_acknowledge_request
from tidelog.queues.acks import AcknowledgeType
from tidelog.queues.log_batches import AcquiredRecords


def _walked(batches, offset, max_bytes, max_offset):
    out = bytearray()
    for base, last, data in batches:
        if last < offset or base >= max_offset:
            continue
        if out and len(out) + len(data) > max_bytes:
            break
        out += data
    return bytes(out)


def test_the_log_reads_what_a_walk_of_every_batch_reads():
    rng = random.Random(14)
    batches, base = [], 0
    for i in range(60):
        count = rng.randint(1, 9)
        batches.append((base, base + count - 1, bytes([i]) * rng.randint(1, 50)))
        base += count + rng.choice((0, 0, 3))  # (some gaps between batches)
    log = _Log(batches)
    for _ in range(2000):
        offset = rng.randint(-2, base + 2)
        max_offset = offset + rng.randint(0, 80)
        max_bytes = rng.randint(1, 400)
        assert log.read(None, 0, offset, max_bytes, max_offset) == _walked(batches, offset, max_bytes, max_offset)


def test_the_acknowledgements_decode_to_the_acquired_ranges_accepted():
    topic = uuid.UUID(int=5)
    for count in (1, 3, 127, 128, 500, 20_000):  # (the batch count's varint: one, two and three bytes)
        acquired = [AcquiredRecords(4 * i, 4 * i + i % 3, 1) for i in range(count)]
        request = decode_share_acknowledge_request(_acknowledge_request(topic, acquired), 0, 1)
        assert (request.group_id, request.member_id, request.share_session_epoch) == ("bench", "m", 1)
        (ack_topic,) = request.topics
        (partition,) = ack_topic.partitions
        assert ack_topic.topic_id == topic and partition.partition_index == 0
        assert [(b.first_offset, b.last_offset, tuple(b.acknowledge_types))
                for b in partition.acknowledgement_batches] == \
            [(a.first_offset, a.last_offset, (AcknowledgeType.ACCEPT,)) for a in acquired]

"""The replica fetcher's hand-written Fetch v11 request against kio's writer: the same bytes for
any topics, partitions and forgotten partitions."""

from __future__ import annotations

import datetime
import io
import random

from kio.schema.fetch.v11 import request as schema
from kio.serial import entity_writer

from tidelog.cluster.replica_fetcher import encode_fetch_request_v11
from tidelog.protocol.apis import load_request_schema

_WRITE = entity_writer(load_request_schema(1, 11))


def _kio(replica_id, max_wait_ms, min_bytes, max_bytes, session_id, session_epoch, topics, forgotten) -> bytes:
    request = schema.FetchRequest(
        replica_id=replica_id, max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes,
        max_bytes=max_bytes, isolation_level=0, session_id=session_id, session_epoch=session_epoch,
        topics=tuple(schema.FetchTopic(topic=name, partitions=tuple(
            schema.FetchPartition(partition=p, current_leader_epoch=e, fetch_offset=o, log_start_offset=s,
                                  partition_max_bytes=m) for p, e, o, s, m in partitions))
            for name, partitions in topics.items()),
        forgotten_topics_data=tuple(schema.ForgottenTopic(topic=name, partitions=tuple(indexes))
                                    for name, indexes in forgotten.items()),
        rack_id="")
    out = io.BytesIO()
    _WRITE(out, request)
    return out.getvalue()


def _name(rng: random.Random) -> str:
    return "".join(rng.choice("abcXYZ._-0é") for _ in range(rng.randint(1, 40)))


def test_the_hand_written_fetch_request_is_kios_byte_for_byte():
    rng = random.Random(19_3)
    for _ in range(500):
        topics = {_name(rng): [(rng.randint(0, 2**31 - 1), rng.randint(-1, 2**31 - 1), rng.randint(-1, 2**63 - 1),
                                rng.randint(-1, 2**63 - 1), rng.randint(0, 2**31 - 1))
                               for _ in range(rng.randint(0, 5))] for _ in range(rng.randint(0, 4))}
        forgotten = {_name(rng): [rng.randint(0, 2**31 - 1) for _ in range(rng.randint(0, 5))]
                     for _ in range(rng.randint(0, 3))}
        args = (rng.randint(0, 2**31 - 1), rng.randint(0, 2**31 - 1), rng.randint(0, 2**31 - 1),
                rng.randint(0, 2**31 - 1), rng.randint(0, 2**31 - 1), rng.randint(-1, 2**31 - 1))
        assert encode_fetch_request_v11(*args, topics, forgotten) == _kio(*args, topics, forgotten)

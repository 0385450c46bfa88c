"""What an append checks before it reaches the log (Kafka's LogValidator), on both sides of
replication:

- ``validate_as_leader``: one RecordBatch v2 from a producer or an internal writer, checked and
  adjusted in place under the topic's ``PartitionConfig``: size, CRC-32C and the record walk
  (``max.message.bytes``), keys on compacted topics, CreateTime bounds or LogAppendTime, and
  the topic's ``compression.type`` (a batch in another codec is recompressed).
- ``follower_batches``: the whole batches of a fetched response, each checked as recovery checks
  a segment (length, magic, CRC-32C) before the follower appends it, so corruption on the
  leader's disk stays there.

The producer state, the leader epoch and the offsets are the Partition's business, after these.
Bad input raises InvalidBatch with the error code Kafka's broker answers.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from tidelog.cluster.partition_config import PartitionConfig
from tidelog.protocol.batch_filter import null_key_indexes, records_body
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import (
    BATCH_HEADER_SIZE,
    BatchInfo,
    InvalidBatch,
    apply_create_time,
    batch_crc_ok,
    parse_batch_header,
    recompress_batch,
    set_log_append_time,
    validate_batches,
)

__all__ = ["LeaderBatch", "follower_batches", "validate_as_leader"]

MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - 12  # a batch's length field counts what follows it


class LeaderBatch(NamedTuple):
    """A batch ready for the producer-state check and the append."""

    records: bytearray | memoryview  # the batch as given, or its recompression
    info: BatchInfo
    log_append_time: int  # -1 unless the topic stamps LogAppendTime


def validate_as_leader(records, config: PartitionConfig, now_ms: int, topic: str, index: int) -> LeaderBatch:
    """Check one RecordBatch v2 for partition ``index`` of ``topic`` and set
    its timestamps as the topic asks; ``records`` must be writable. Raises InvalidBatch
    (CORRUPT_MESSAGE, INVALID_RECORD, INVALID_TIMESTAMP, MESSAGE_TOO_LARGE, ...)."""
    if records is None:
        raise InvalidBatch(ErrorCode.invalid_record, "null records")
    (batch,) = validate_batches(records, config.max_message_bytes)
    info = batch.info
    if config.compact:
        refuse_null_keys(records, info, f"{topic}-{index}")
    if not config.log_append_time:
        info = apply_create_time(records, batch, now_ms, config.timestamp_before_max_ms, config.timestamp_after_max_ms)
    elif info.timestamp_type == 1:
        raise InvalidBatch(ErrorCode.invalid_timestamp, "Invalid timestamp type in the batch: producers should not "
                           "set the timestamp type to LogAppendTime", ((0, "Producer should not set timestamp type to LogAppendTime."),))
    if config.compression is not None and config.compression != info.compression:
        records = memoryview(recompress_batch(records, info, config.compression))
        info = parse_batch_header(records)
    append_time = -1
    if config.log_append_time:
        append_time = now_ms
        info = set_log_append_time(records, info, append_time)
    return LeaderBatch(records, info, append_time)


def refuse_null_keys(records, info: BatchInfo, name: str) -> None:
    """A compacted topic keeps the latest record per key: one without a key is INVALID_RECORD,
    with an error per such record (Kafka's LogValidator.validateKey)."""
    indexes = null_key_indexes(records_body(records, info), info.record_count)
    if indexes:
        message = f"Compacted topic cannot accept message without key in topic partition {name}."
        raise InvalidBatch(ErrorCode.invalid_record, message, tuple((index, message) for index in indexes))


def follower_batches(records) -> Iterator[tuple[memoryview, BatchInfo]]:
    """The whole batches of ``records`` (views of it when it is a writable memoryview, as the
    replica fetcher's are, else of a copy), in order, each with its header. A batch that
    fails the check raises InvalidBatch (CORRUPT_MESSAGE) when reached, after the intact ones
    before it were yielded; a partial batch after whole ones ends the walk (fetched again)."""
    view = records if isinstance(records, memoryview) and not records.readonly else memoryview(bytearray(records))
    pos = 0
    while pos + BATCH_HEADER_SIZE <= len(view):
        info = parse_batch_header(view, pos)
        if info.batch_length < MIN_BATCH_LENGTH or info.magic != 2 or (pos == 0 and info.size > len(view)):
            raise InvalidBatch(ErrorCode.corrupt_message, f"the batch at offset {info.base_offset} has length "
                               f"{info.batch_length} and magic {info.magic}")
        if pos + info.size > len(view):
            return
        if not batch_crc_ok(view, info, pos):
            raise InvalidBatch(ErrorCode.corrupt_message, f"the batch at offset {info.base_offset} fails its CRC-32C check")
        yield view[pos:pos + info.size], info
        pos += info.size

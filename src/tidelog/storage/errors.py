"""Errors the storage layer raises; each carries the Kafka error code a handler returns."""

from __future__ import annotations

from tidelog.protocol.errors import ErrorCode, KafkaError

__all__ = ["CorruptSegment", "StorageError", "OffsetOutOfRange"]


class StorageError(KafkaError):
    """An I/O failure in a log directory (KAFKA_STORAGE_ERROR)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(ErrorCode.kafka_storage_error, message)


class OffsetOutOfRange(KafkaError):
    """A fetch or seek outside [log_start_offset, log_end_offset] (OFFSET_OUT_OF_RANGE)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(ErrorCode.offset_out_of_range, message)


class CorruptSegment(KafkaError):
    """A batch header on disk that cannot be walked (its length is impossible): the read stops
    there and answers CORRUPT_MESSAGE, as Kafka's fetch does for a CorruptRecordException."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(ErrorCode.corrupt_message, message)

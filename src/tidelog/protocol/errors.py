"""Kafka error codes: the one table, re-exported from kio's generated ErrorCode enum, and the
exceptions that carry them.

Each member carries its numeric value and a ``retriable`` flag (from Kafka's Errors.java), and
its docstring is Kafka's message. Handlers use ``ErrorCode.<name>``, never bare integers.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = ["CorruptRecords", "ErrorCode", "InvalidBatch", "KafkaError"]


class KafkaError(Exception):
    """An error that a handler turns into a Kafka error code in its response."""

    def __init__(self, error_code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or error_code.name)
        self.error_code = error_code
        self.message = message


class InvalidBatch(Exception):
    """A batch the broker must reject; ``error_code`` is what the Produce response carries."""

    def __init__(self, error_code: ErrorCode, message: str, record_errors: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.record_errors = record_errors  # (index of the record in its batch, why), as Kafka lists them


class CorruptRecords(InvalidBatch, ValueError):
    """Records that cannot be decoded (records.iter_records): bad framing, a bad varint, a payload the
    batch's codec cannot decompress. The only exception record decoding raises."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.corrupt_message, message)

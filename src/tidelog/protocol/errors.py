"""Kafka error codes: the one table, re-exported from kio's generated ErrorCode enum.

Each member carries its numeric value and a ``retriable`` flag (from Kafka's Errors.java), and
its docstring is Kafka's message. Handlers use ``ErrorCode.<name>``, never bare integers.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode", "KafkaError"]


class KafkaError(Exception):
    """An error that a handler turns into a Kafka error code in its response."""

    def __init__(self, error_code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or error_code.name)
        self.error_code = error_code
        self.message = message

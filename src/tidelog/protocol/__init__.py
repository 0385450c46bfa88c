"""Kafka wire format only: frames, headers, the API version table, error codes, record batches. No I/O."""

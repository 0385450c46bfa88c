"""The two clocks, named for what they measure.

- ``wall_clock_ms``: milliseconds since the Unix epoch. For times that are stored, sent to
  clients or compared with record timestamps: commit and group-state timestamps, segment and
  producer-state ages, transaction timeouts, retention.
- ``monotonic_ms``: a clock that never jumps. For durations and deadlines inside this process:
  replica lag, fetch back-offs, waits.

Call the one the use needs; never difference a wall-clock time to time something in-process.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)

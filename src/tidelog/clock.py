"""The two clocks, named for what they measure.

- ``wall_clock_ms``: milliseconds since the Unix epoch. For times that are stored, sent to
  clients or compared with record timestamps: commit and group-state timestamps, segment and
  producer-state ages, transaction timeouts, retention.
- ``monotonic_ms``: a clock that never jumps. For durations and deadlines inside this process:
  replica lag, fetch back-offs, waits.

Call the one the use needs; never difference a wall-clock time to time something in-process.

``TIDELOG_CLOCK_SKEW_MS`` (an environment variable, for tests of brokers whose clocks differ)
shifts ``wall_clock_ms`` by that many milliseconds.
"""

from __future__ import annotations

import os
import sys
import time

try:
    _SKEW_MS = int(os.environ.get("TIDELOG_CLOCK_SKEW_MS") or 0)
except ValueError:
    sys.exit(f"TIDELOG_CLOCK_SKEW_MS (environment): not a whole number of milliseconds: "
             f"{os.environ['TIDELOG_CLOCK_SKEW_MS']!r}")


def wall_clock_ms() -> int:
    return int(time.time() * 1000) + _SKEW_MS


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)

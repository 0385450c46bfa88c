"""Where a broker process's large buffers come from: glibc's heap, not a fresh mapping each.

glibc's malloc serves a request of 128 KiB or more (its starting mmap threshold) with a mapping
of its own, unmapped again when freed: every page of it is faulted in and zeroed by the kernel at
first touch. A broker makes such buffers all the time (a 1 MiB produce frame, a share-fetch's
window read, a cleaning's offset map), so each costs ~256 page faults per MiB on top of the copy
itself. glibc raises the threshold to the size of a freed mapping as it goes, but only that far
and only for the sizes it has seen; a process whose start-up happened to allocate and free a lot
(importing hypothesis did) kept a raised threshold by accident, and its share-group consume used
a third less CPU per GB (BENCHMARKS.md, "Share-group consume").

``enable()`` (``tidelog serve``) sets the thresholds once: buffers up to ``MMAP_THRESHOLD`` (glibc's
own upper bound for the dynamic threshold on 64-bit) come from the heap, and free memory at the
heap's top is returned to the system above ``TRIM_THRESHOLD``. Elsewhere than glibc (no
``mallopt``) it does nothing. Tests and embedded brokers keep the process's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "enable"]

logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 128 << 20  # free memory kept at the heap's top before it is given back

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def enable() -> bool:
    """Set the heap's thresholds; False where the C library has no ``mallopt`` (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no mallopt in the C library: heap thresholds left as they are")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        logger.debug("mallopt refused the heap thresholds: left as they are")
    return ok

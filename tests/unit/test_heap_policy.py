"""storage/heap_policy.py: a broker's large buffers come from the heap, not a mapping each
(BENCHMARKS.md, "Share-group consume"). Each case runs in a fresh interpreter: the thresholds
are process-wide and glibc moves them as a process frees mappings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, sys
    from tidelog.storage import heap_policy

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "enable":
        assert heap_policy.enable()
    before = libc.mallinfo2().hblks
    buffers = [bytearray(n << 20) for n in (1, 4, 16)]  # a produce frame, a window read, a big fetch
    print(libc.mallinfo2().hblks - before)
""")


def mapped_buffers(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_a_brokers_large_buffers_come_from_the_heap():
    try:
        import ctypes
        ctypes.CDLL(None).mallinfo2  # noqa: B018  (glibc >= 2.33)
    except AttributeError:
        pytest.skip("not glibc: no mallinfo2 to count mappings with")
    assert mapped_buffers("default") == 3  # glibc's defaults: a mapping each
    assert mapped_buffers("enable") == 0

"""The benchmark process's heap: glibc's malloc thresholds, fixed.

On glibc a freed block of more than a few MB goes back to the OS (munmap,
or a trim of the heap top), so the next op that allocates its output pays a
page fault per 4 KB page when it first writes it. On the 2-core CI VM that is
~3 us a page: a step writing two fresh 4 MB outputs took 6 ms with 2016
faults against 0.24 ms without, while ``x.clone()`` (one output, whose block
glibc happens to reuse) took 0.1 ms. Which calls fault depends on the heap's
history, not on the op, so the timings and the memory-traffic floor would
measure the allocator. ``genfast bench`` therefore raises M_TRIM_THRESHOLD to
1 GiB and sets M_MMAP_THRESHOLD to its 32 MiB maximum before it runs: freed
blocks stay in the process for every provider alike, as with the
jemalloc / tcmalloc preloads that PyTorch's CPU tuning guide recommends.
``--allocator system`` keeps glibc's defaults. Elsewhere (musl, macOS,
Windows) nothing is changed and the report says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM = 1 << 30
MMAP = 32 << 20  # glibc's largest allowed on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)

_state = {"setting": None}


def _libc():
    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune() -> str:
    """Fix the thresholds (once per process); returns the report's description."""
    if _state["setting"] is None:
        libc = _libc()
        ok = (libc is not None and hasattr(libc, "mallopt")
              and libc.mallopt(M_TRIM_THRESHOLD, TRIM) == 1
              and libc.mallopt(M_MMAP_THRESHOLD, MMAP) == 1)
        _state["setting"] = ("glibc, trim threshold 1 GiB, mmap threshold 32 MiB (--allocator "
                             "system: glibc's defaults)" if ok
                             else "system (thresholds not settable here)")
    return _state["setting"]


def describe(kind: str) -> str:
    """The allocator line of the report for ``--allocator kind``."""
    if kind == "tuned":
        return tune()
    return _state["setting"] or "system (glibc defaults where glibc)"

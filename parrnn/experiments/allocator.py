"""Keep freed memory in the C heap for reuse (glibc): fewer page faults for large CPU tensors.

glibc ``malloc`` serves large blocks (above a dynamic threshold) with fresh ``mmap`` calls and trims freed
memory at the top of the heap back to the OS. A training step on CPU allocates the same multi-megabyte
activations every step, so each one is first touched page by page again: on the project's 2-core machine
that was 10-40% of a SlicedRNN or SRU training step. `retain_freed_memory` raises both thresholds with
``mallopt`` so such blocks stay in the heap and are reused. Process-wide; used by the training CLI and API
(``TrainConfig.retain_memory``), never at import. A no-op (returning ``False``) off glibc, or when the user
already tunes malloc (``MALLOC_*_`` variables, or a preloaded allocator such as jemalloc or tcmalloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # blocks up to 32 MiB come from the heap (glibc's largest allowed threshold)
TRIM_THRESHOLD = 1 << 30  # return memory to the OS only when more than 1 GiB is free at the heap's top
TOP_PAD = 64 << 20

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Tune glibc malloc once per process (see the module docstring); ``True`` when the settings apply."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    user_tuned = any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ)
    preloaded = any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))
    if not sys.platform.startswith("linux") or user_tuned or preloaded:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    _applied = all(mallopt(option, value) == 1 for option, value in settings)
    return _applied

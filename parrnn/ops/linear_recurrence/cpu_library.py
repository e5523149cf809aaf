"""The CPU kernels' shared library: ``kernels/linear_recurrence_cpu.cpp``, prebuilt or compiled on first use (never
at import) by `parrnn.ops.build` (cached on disk, keyed per CPU) and loaded with ctypes, with its signatures set.

Its own library: a build failure here disables only `sequential_cpu` and `scan_cpu`, never SRU's kernels.
"""

from __future__ import annotations

import ctypes

from parrnn.ops import build
from parrnn.ops.launch import DTYPE_SUFFIXES

SPEC = build.CPU_LIBRARIES["linear_recurrence_cpu"]
SOURCE = SPEC.sources[0]
#: Tried in order; the first that compiles is used (a compiler without -march=native still works).
FLAG_SETS = SPEC.flag_sets

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "linrec_cpu_forward": [_P] * 6 + [_I64] * 3 + [_INT, _I64, _INT],
    "linrec_cpu_backward": [_P] * 9 + [_I64] * 3 + [_INT, _I64, _INT],
    "linrec_scan_cpu_forward": [_P] * 6 + [_I64] * 3 + [_INT, _P, _I64, _INT],
    "linrec_scan_cpu_backward": [_P] * 9 + [_I64] * 3 + [_INT, _P, _I64, _INT],
}


def _configure(lib: ctypes.CDLL) -> None:
    for name, argtypes in _SIGNATURES.items():
        for suffix in DTYPE_SUFFIXES:
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, _INT
    lib.linrec_cpu_set_thread_start_limit.argtypes, lib.linrec_cpu_set_thread_start_limit.restype = [_INT], None


_LIBRARY = build.LazyLibrary(SPEC, _configure)


def load() -> ctypes.CDLL:
    """The loaded library (prebuilt, cached, or compiled on the first call). Raises `parrnn.ops.build.BuildError`
    with the compiler's output when no flag set compiles (remembered: later calls raise at once)."""
    return _LIBRARY.load()


def availability(kind: str) -> tuple[bool, str]:
    """``(True, description)`` when the library builds and loads here, else ``(False, the compiler's first error)``;
    ``kind`` names the backend in the description."""
    try:
        load()
    except Exception as exc:
        return False, f"C++ build failed: {_LIBRARY.failure_summary(str(exc))}"
    isa = "-march=native" if "-march=native" in _LIBRARY.flags_used else "generic ISA"
    return True, f"fused C++ {kind} ({isa}, std::thread)"


def flags_used() -> tuple[str, ...]:
    """The compiler flags of the loaded library (empty before it is loaded)."""
    return _LIBRARY.flags_used

"""A kernel ``.cu`` run on the CPU, for tests and development: the very source the GPU runs, compiled as C++
behind ``kernels/host_shim.h`` (``__global__`` to nothing, ``blockIdx``/``threadIdx`` as variables a host loop
sets), so the CPU test suite checks the kernels themselves, not a copy. A launcher from `make_host_launcher`
takes the place of the CuPy launcher (`parrnn.ops.launch.Launcher`) and runs every (block, thread) in turn.
Only for kernels without barriers, shared memory or warp intrinsics (one thread per column).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import torch

from parrnn._paths import kernel_source
from parrnn.ops.build import build_library
from parrnn.ops.cuda_runtime import MAX_GRID
from parrnn.ops.launch import Arg, Launcher

_CTYPES = {"ptr": ctypes.c_void_p, "i64": ctypes.c_longlong, "i32": ctypes.c_int, "f32": ctypes.c_float,
           "f64": ctypes.c_double}


def host_library(kernel_file: str, prefetch: int | None = None) -> ctypes.CDLL:
    """``kernels/<kernel_file>`` compiled as C++ behind ``host_shim.h`` (cached on disk as
    ``<stem>_host``)."""
    flags = () if prefetch is None else (f"-DPARRNN_PREFETCH={prefetch}",)
    return build_library(f"{Path(kernel_file).stem}_host", [kernel_source(kernel_file)], flags)


def make_host_launcher(kernel_file: str, block: int = 128, max_grid: int = MAX_GRID,
                       prefetch: int | None = None) -> Launcher:
    """A launcher that runs the kernels of ``kernels/<kernel_file>`` on CPU tensors' memory, every
    (block, thread) of the launch in turn.

    ``max_grid`` caps the grid so tests can exercise the kernels' grid-stride loop; ``prefetch`` builds the
    kernels with another PARRNN_PREFETCH depth.
    """
    lib = host_library(kernel_file, prefetch)

    def launch(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
        if device.type != "cpu":
            raise ValueError("the host launcher runs kernels on CPU tensors only")
        fn = getattr(lib, f"host_{name}")
        fn.restype = None
        fn.argtypes = [ctypes.c_longlong, ctypes.c_int, *(_CTYPES[a.kind] for a in args)]
        grid = min(-(-total // block), max_grid)
        fn(grid, block, *(a.value for a in args))

    return launch


# ---- the fused backend module contract ---------------------------------------------------------------------

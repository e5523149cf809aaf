"""The CPU implementation of the time-parallel scan (``kernels/sru_scan_cpu.cpp``): ctypes glue.

The three phases of `parrnn.ops.sru.scan` with columns innermost (SIMD) and std::threads over chunks of time.
Shapes as in `parrnn.ops.sru.reference`; float16/bfloat16 run in float32 copies.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from parrnn.ops import build, chunking
from parrnn.ops.launch import SUFFIX, acc_dtype, as_dtype, ptr, require_device
from parrnn.ops.sru.contract import RecurrenceArgs, require_linear, validate

CPU_FILE = build.CPU_LIBRARIES["sru_scan_cpu"].sources[0]
#: As the sequential CPU backend (kernels/sru_cpu.cpp), but threads are std::thread (-pthread), not OpenMP
#: (`parrnn.ops.build.THREAD_FLAG_LADDER`; its first flag set).
CPU_FLAGS: tuple[str, ...] = build.CPU_LIBRARIES["sru_scan_cpu"].flag_sets[0]
#: Cost of a *reduce* step relative to a fused step (forward, backward), measured on a Zen3 core
#: (``docs/scan.md``); it sizes the first chunk, which runs the fused recurrence while the others reduce.
CPU_REDUCE_COST = {"forward": 0.45, "backward": 0.7}
#: Below this many steps per thread the scan is not split (thread start-up dominates; `parrnn.ops.chunking`).
CPU_MIN_STEPS_PER_THREAD = chunking.CPU_MIN_STEPS_PER_THREAD


def cpu_chunk_bounds(length: int, threads: int, reduce_cost: float) -> list[int]:
    """`parrnn.ops.chunking.cpu_chunk_bounds` with this module's `CPU_MIN_STEPS_PER_THREAD`."""
    return chunking.cpu_chunk_bounds(length, threads, reduce_cost, CPU_MIN_STEPS_PER_THREAD)



_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int


def _configure(lib: ctypes.CDLL) -> None:
    for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        fwd = getattr(lib, f"sru_scan_cpu_forward_{suffix}")
        fwd.restype = ctypes.c_int
        fwd.argtypes = [_P] * 9 + [_I64, _I64, _I64, _I32, _I32, _I32, real, _P, _I64, _I32]
        bwd = getattr(lib, f"sru_scan_cpu_backward_{suffix}")
        bwd.restype = ctypes.c_int
        bwd.argtypes = [_P] * 13 + [_I64, _I64, _I64, _I32, _I32, _I32, real, _P, _I64, _I32]


_LIBRARY = build.LazyLibrary("sru_scan_cpu", _configure)


def library() -> ctypes.CDLL:
    """``kernels/sru_scan_cpu.cpp``'s library with its ctypes signatures set: prebuilt, cached (per CPU:
    ``-march=native``), or compiled now (`parrnn.ops.build.LazyLibrary`)."""
    return _LIBRARY.load()


def forward(args: RecurrenceArgs, threads: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """CPU scan forward: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))``. float16/bfloat16 run in float32 copies.

    ``threads`` defaults to ``torch.get_num_threads()``; 1 gives the plain sequential recurrence.
    """
    require_linear(args)
    validate(args, backend="scan")
    return forward_validated(args, threads)


def forward_validated(args: RecurrenceArgs, threads: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """`forward` for arguments that `parrnn.ops.sru.contract.validate` has passed."""
    u, x, _, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x = args
    require_device(u.device, ("cpu",), "scan (cpu)")
    if u.dtype not in SUFFIX:  # validated without the dtype check (backend="auto"): the same TypeError as forward
        validate(args, backend="scan")
    length, batch, k, cols = u.shape
    dtype, acc = u.dtype, acc_dtype(u.dtype)
    threads = torch.get_num_threads() if threads is None else threads
    uu, xx = as_dtype(u, acc), as_dtype(x, acc)
    bias_, c0_, drop_ = as_dtype(bias, acc), as_dtype(c0, acc), as_dtype(drop_mask, acc)
    mask = as_dtype(mask_pad, torch.bool)
    h = torch.empty((length, batch, cols), dtype=acc)
    c_all = torch.empty((length, batch, cols), dtype=acc)
    if length == 0 or batch * cols == 0:
        return h.to(dtype), c0_.to(c0.dtype, copy=True), c_all  # type: ignore[union-attr]
    c_n = torch.empty((batch, cols), dtype=acc)
    bounds = torch.tensor(cpu_chunk_bounds(length, threads, CPU_REDUCE_COST["forward"]), dtype=torch.int64)
    fn = getattr(library(), f"sru_scan_cpu_forward_{SUFFIX[acc]}")
    rc = fn(ptr(uu), ptr(xx), ptr(bias_), ptr(c0_), ptr(mask), ptr(drop_), ptr(h), ptr(c_n), ptr(c_all),
            length, batch, cols, k, int(bidirectional), int(use_tanh), float(scale_x), ptr(bounds),
            len(bounds) - 1, max(1, threads))
    build.check_status(rc, "sru scan (cpu) forward")
    return h.to(dtype), c_n.to(c0.dtype), c_all


def backward(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor, c_all: Tensor,
             threads: int | None = None) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """CPU scan backward: ``(grad_u, grad_x, None, grad_bias, grad_c0)``, each in its input's dtype."""
    require_linear(args)
    length, batch, k, cols = validate(args, grad_h=grad_h, grad_c_n=grad_c_n, c_all=c_all, backend="scan")
    u, x, _, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x = args
    require_device(u.device, ("cpu",), "scan (cpu)")
    acc = acc_dtype(u.dtype)
    threads = torch.get_num_threads() if threads is None else threads
    uu, xx = as_dtype(u, acc), as_dtype(x, acc)
    gh, gcn, call = as_dtype(grad_h, acc), as_dtype(grad_c_n, acc), as_dtype(c_all, acc)
    bias_, c0_, drop_ = as_dtype(bias, acc), as_dtype(c0, acc), as_dtype(drop_mask, acc)
    mask = as_dtype(mask_pad, torch.bool)
    grad_u = torch.empty((length, batch, k, cols), dtype=acc)
    grad_x = None if x is None else torch.empty((length, batch, cols), dtype=acc)
    grad_bias_part = torch.zeros((2, batch, cols), dtype=acc)
    grad_c0 = gcn.clone()  # type: ignore[union-attr]
    if length > 0 and batch * cols > 0:
        bounds = torch.tensor(cpu_chunk_bounds(length, threads, CPU_REDUCE_COST["backward"]), dtype=torch.int64)
        fn = getattr(library(), f"sru_scan_cpu_backward_{SUFFIX[acc]}")
        rc = fn(ptr(gh), ptr(gcn), ptr(uu), ptr(xx), ptr(bias_), ptr(c0_), ptr(mask), ptr(drop_),
                ptr(call), ptr(grad_u), ptr(grad_x), ptr(grad_bias_part), ptr(grad_c0), length, batch, cols,
                k, int(bidirectional), int(use_tanh), float(scale_x), ptr(bounds), len(bounds) - 1,
                max(1, threads))
        build.check_status(rc, "sru scan (cpu) backward")
    else:
        grad_u.zero_()
        if grad_x is not None:
            grad_x.zero_()
    return (grad_u.to(u.dtype), None if grad_x is None else grad_x.to(x.dtype), None,  # type: ignore[union-attr]
            grad_bias_part.sum(1).to(bias.dtype), grad_c0.to(c0.dtype))


def availability() -> tuple[bool, str]:
    """``(True, description)`` when the CPU scan library compiles and loads here, else ``(False, why)``."""
    try:
        library()
    except Exception as exc:
        return False, f"CPU scan unavailable ({type(exc).__name__}: {str(exc)[:300]})"
    return True, "CPU: C++ chunked scan (std::thread)"

"""The ``cpu`` backend: fused C++ forward and backward of the SRU recurrence (OpenMP over columns, SIMD).

The C++ source is ``kernels/sru_cpu.cpp``; its per-step math is ``kernels/sru_step.cuh``, the same header the
CUDA kernel includes. The same library carries the fused GRU step kernels of `parrnn.ops.gru_rows.fused_cpu`
(``kernels/gru_rows_cpu.cpp``). It is compiled on first use (never at import) by `parrnn.ops.build` into a cached
shared library and called through ``ctypes`` with the data pointers of contiguous torch tensors; outputs are
allocated with torch. This module implements the *fused backend module* contract of
`parrnn.ops.sru.dispatch` (``availability``, ``forward``, ``backward``, each taking a
`parrnn.ops.sru.contract.RecurrenceArgs`); shapes are those of
[parrnn.ops.sru.reference.sru_recurrence][] (``L`` steps, ``N`` batch, ``C`` columns, ``K`` = 3 or 4):

* storage dtypes float32, float64, bfloat16, float16 (``u``, ``x``, ``h`` and their gradients stay in ``u``'s
  dtype); arithmetic in float32, or float64 for float64 input;
* ``weight_c``, ``bias``, ``c0``, ``drop_mask`` (small, any float dtype, e.g. float32 parameters with float16
  ``u`` under autocast) are converted to the arithmetic dtype; their gradients and ``c_n`` come back in their
  own dtype (``c_n`` in ``c0``'s); the state
  ``c_all`` ``(L, N, C)`` is kept in the arithmetic dtype (float32 for 16-bit storage);
* threads: ``torch.get_num_threads()`` (fewer for small problems, at least 32k elements per thread).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from parrnn._paths import kernel_source
from parrnn.ops import build
from parrnn.ops.launch import SUFFIX, acc_dtype, as_dtype, ptr, require_device
from parrnn.ops.sru.contract import RecurrenceArgs, validate

__all__ = ["availability", "backward", "build_info", "forward", "forward_validated", "load_library"]

_SKIP_NONE, _SKIP_X, _SKIP_U3 = 0, 1, 2
_MIN_WORK_PER_THREAD = 1 << 15  # (t, n, column) elements; below this an extra thread costs more than it saves

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_FWD_ARGTYPES = [_P] * 10 + [_I64] * 4 + [_INT] * 3 + [ctypes.c_double, _INT]
_BWD_ARGTYPES = [_P] * 14 + [_I64] * 4 + [_INT] * 3 + [ctypes.c_double, _INT]


def _configure(lib: ctypes.CDLL) -> None:
    for suffix in SUFFIX.values():
        fwd = getattr(lib, f"parrnn_sru_cpu_forward_{suffix}")
        fwd.argtypes, fwd.restype = _FWD_ARGTYPES, _INT
        bwd = getattr(lib, f"parrnn_sru_cpu_backward_{suffix}")
        bwd.argtypes, bwd.restype = _BWD_ARGTYPES, _INT
    for suffix in ("bf16", "f16"):
        conv = getattr(lib, f"parrnn_sru_cpu_convert_{suffix}")
        conv.argtypes, conv.restype = [_P, _P, _I64, _INT], None
    lib.parrnn_sru_cpu_openmp_threads.argtypes, lib.parrnn_sru_cpu_openmp_threads.restype = [], _INT


_LIBRARY = build.LazyLibrary("sru_cpu", _configure)


def load_library() -> ctypes.CDLL:
    """Load ``kernels/sru_cpu.cpp``'s library: prebuilt, cached, or compiled now (`parrnn.ops.build.LazyLibrary`).

    Raises `parrnn.ops.build.BuildError` with the compiler's output when no flag set compiles.
    """
    return _LIBRARY.load()


def availability() -> tuple[bool, str]:
    """``(True, description)`` when the C++ library builds and loads here, else ``(False, compiler error)``.

    Without a matching prebuilt library the first call compiles it (a message on stderr; cached on disk)."""
    try:
        lib = load_library()
    except Exception as exc:
        return False, f"C++ build failed: {_LIBRARY.failure_summary(str(exc))}"
    omp = lib.parrnn_sru_cpu_openmp_threads()
    simd = "-march=native" if "-march=native" in _LIBRARY.flags_used else "generic ISA"
    par = f"OpenMP (max {omp} threads)" if omp > 0 else "no OpenMP (single thread)"
    return True, f"fused C++ kernel, {simd}, {par}"


def build_info() -> dict[str, object]:
    """The flags the loaded library was built with (builds it if needed)."""
    lib = load_library()
    return {"flags": list(_LIBRARY.flags_used), "openmp_max_threads": lib.parrnn_sru_cpu_openmp_threads(),
            "source": str(Path(kernel_source("sru_cpu.cpp")))}


# ---- argument preparation ----------------------------------------------------------------------------------

def _mask(mask_pad: Tensor | None) -> Tensor | None:
    if mask_pad is None:
        return None
    mask = mask_pad if mask_pad.dtype == torch.bool else mask_pad != 0
    return mask.contiguous().view(torch.uint8)


def _threads(work: int) -> int:
    """Threads for ``work`` elements: ``torch.get_num_threads()``, fewer for small problems."""
    return max(1, min(torch.get_num_threads(), work // _MIN_WORK_PER_THREAD))


def _skip_mode(k: int, x: Tensor | None) -> int:
    return _SKIP_U3 if k == 4 else _SKIP_X if x is not None else _SKIP_NONE


# ---- the fused backend contract ----------------------------------------------------------------------------

def forward(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """Fused forward.

    Returns ``(h, c_n, c_all)``: ``h`` ``(L, N, C)`` in ``u``'s dtype, ``c_n`` ``(N, C)`` in ``c0``'s, ``c_all``
    ``(L, N, C)`` every ``c_t`` in the arithmetic dtype (float64 for float64 input, else float32).
    """
    validate(args, backend="cpu")
    return forward_validated(args)


def forward_validated(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """`forward` for arguments that `parrnn.ops.sru.contract.validate` has passed
    (`parrnn.ops.sru_recurrence` validates once, then calls this: the streaming per-call path)."""
    u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x = args
    require_device(u.device, ("cpu",), "cpu")
    lib = load_library()
    length, batch, k, cols = u.shape
    dtype = u.dtype
    if dtype not in SUFFIX:  # validated without the dtype check (backend="auto"): the same TypeError as forward
        validate(args, backend="cpu")
    arith = acc_dtype(dtype)
    u = u.contiguous()
    x_ = as_dtype(x, dtype)
    wc, b, c0_, dm = as_dtype(weight_c, arith), as_dtype(bias, arith), as_dtype(c0, arith), as_dtype(drop_mask, arith)
    mask = _mask(mask_pad)
    h = torch.empty((length, batch, cols), dtype=dtype)
    c_n = torch.empty((batch, cols), dtype=arith)
    c_all = torch.empty((length, batch, cols), dtype=arith)
    fn = getattr(lib, f"parrnn_sru_cpu_forward_{SUFFIX[dtype]}")
    rc = fn(u.data_ptr(), ptr(x_), ptr(wc), b.data_ptr(), c0_.data_ptr(), ptr(mask), ptr(dm), h.data_ptr(),
            c_n.data_ptr(), c_all.data_ptr(), length, batch, cols, k, int(bidirectional), int(use_tanh),
            _skip_mode(k, x_), float(scale_x), _threads(length * batch * cols))
    build.check_status(rc, "sru sequential (cpu) forward")
    return h, (c_n if c_n.dtype == c0.dtype else c_n.to(c0.dtype)), c_all


def backward(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor,
             c_all: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Fused backward from ``grad_h`` ``(L, N, C)`` and ``grad_c_n`` ``(N, C)``, given the forward's
    ``c_all`` ``(L, N, C)``.

    Returns ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)``, each like its input (dtype and shape),
    with ``None`` where the input was ``None``. The peephole/bias gradients are per-row partial sums reduced
    over the batch in the arithmetic dtype.
    """
    length, batch, k, cols = validate(args, grad_h=grad_h, grad_c_n=grad_c_n, c_all=c_all, backend="cpu")
    u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x = args
    require_device(u.device, ("cpu",), "cpu")
    lib = load_library()
    dtype, arith = u.dtype, acc_dtype(u.dtype)
    u = u.contiguous()
    x_ = as_dtype(x, dtype)
    gh = as_dtype(grad_h, dtype)
    wc, b, c0_, dm, gcn, call = (as_dtype(t, arith) for t in (weight_c, bias, c0, drop_mask, grad_c_n, c_all))
    mask = _mask(mask_pad)
    grad_u = torch.empty_like(u)
    grad_x = None if x_ is None else torch.empty((length, batch, cols), dtype=dtype)
    partial = torch.empty((batch, 4, cols), dtype=arith)
    grad_c0 = torch.empty((batch, cols), dtype=arith)
    fn = getattr(lib, f"parrnn_sru_cpu_backward_{SUFFIX[dtype]}")
    rc = fn(ptr(gh), ptr(gcn), ptr(u), ptr(x_), ptr(wc), ptr(b), ptr(c0_), ptr(mask), ptr(dm),
            ptr(call), ptr(grad_u), ptr(grad_x), ptr(partial), ptr(grad_c0), length, batch, cols, k,
            int(bidirectional), int(use_tanh), _skip_mode(k, x_), float(scale_x), _threads(length * batch * cols))
    build.check_status(rc, "sru sequential (cpu) backward")
    # partial (N, 4, C): per-row d v_f, d v_r, d b_f, d b_r; separate sums so that no two outputs alias
    grad_wc = None if weight_c is None else partial[:, :2].sum(0).to(weight_c.dtype)
    grad_bias = partial[:, 2:].sum(0).to(bias.dtype)
    grad_x_out = None if x is None or grad_x is None else grad_x.to(x.dtype)
    return grad_u, grad_x_out, grad_wc, grad_bias, grad_c0.to(c0.dtype)


def _convert(values: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Round float32 ``values`` to ``dtype`` (bfloat16/float16) with the kernel's conversion and convert the
    result back to float32 with the kernel's conversion: ``(stored, reloaded)``."""
    lib = load_library()
    suffix = SUFFIX[dtype]
    src = values.to(torch.float32).contiguous()
    stored = torch.empty(src.shape, dtype=dtype)
    back = torch.empty(src.shape, dtype=torch.float32)
    conv = getattr(lib, f"parrnn_sru_cpu_convert_{suffix}")
    conv(src.data_ptr(), stored.data_ptr(), src.numel(), 1)
    conv(stored.data_ptr(), back.data_ptr(), src.numel(), 0)
    return stored, back

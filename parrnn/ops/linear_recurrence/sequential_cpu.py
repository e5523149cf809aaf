"""Sequential CPU backend: the fused C++ forward and backward of ``kernels/linear_recurrence_cpu.cpp``, threads over
blocks of columns, SIMD over the columns of a block, time outer.

Implements the backend-module contract of `parrnn.ops.linear_recurrence.op` on validated arguments: ``a``, ``b``
``(L, N, C)`` contiguous in a storage dtype (float32, float64, bfloat16, float16; kept native, no copies), ``h0``
``(N, C)`` in the state dtype (float32; float64 for float64) or ``None``, ``lengths`` ``(N,)`` int64 or ``None``.
Threads: ``torch.get_num_threads()``, fewer for small problems (at least `MIN_WORK_PER_THREAD` elements each).
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrnn.ops import build
from parrnn.ops.launch import SUFFIX, ptr, require_device
from parrnn.ops.linear_recurrence import cpu_library
from parrnn.ops.linear_recurrence.contract import state_dtype_for

__all__ = ["availability", "backward", "forward", "linear_recurrence"]

#: (t, n, c) elements per thread below which a further thread costs more than it saves.
MIN_WORK_PER_THREAD = 1 << 16
#: Columns per block: its state stays in L1 and each step reads whole cache lines of contiguous rows.
BLOCK_COLUMNS = 2048


def availability(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether the C++ library builds here (compiles it on the first call)."""
    if torch.device(device).type != "cpu":
        return False, "the sequential CPU kernel runs on CPU tensors"
    return cpu_library.availability("sequential kernel")


def threads_for(length: int, columns: int) -> int:
    """Threads for ``length`` steps of ``columns`` columns: ``torch.get_num_threads()``, fewer for small work."""
    return max(1, min(torch.get_num_threads(), length * columns // MIN_WORK_PER_THREAD))


def block_columns(columns: int, threads: int) -> int:
    """Columns per block: `BLOCK_COLUMNS`, or fewer (a multiple of 16) so every thread gets a block."""
    per_thread = -(-columns // threads)
    return max(16, min(BLOCK_COLUMNS, -(-per_thread // 16) * 16))


def forward(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool,
            threads: int | None = None, block: int | None = None) -> tuple[Tensor, Tensor]:
    """``(h (L, N, C) storage dtype, h_n (N, C) state dtype)``; ``threads`` and ``block`` (columns per block)
    default to `threads_for` and `block_columns`."""
    require_device(a.device, ("cpu",), "linear_recurrence sequential (cpu)")
    length, batch, cols = a.shape
    h = torch.empty_like(a)
    h_n = torch.empty((batch, cols), dtype=state_dtype_for(a.dtype))
    threads = threads_for(length, batch * cols) if threads is None else threads
    block = block_columns(batch * cols, threads) if block is None else block
    fn = getattr(cpu_library.load(), f"linrec_cpu_forward_{SUFFIX[a.dtype]}")
    rc = fn(ptr(a), ptr(b), ptr(h0), ptr(lengths), ptr(h), ptr(h_n), length, batch, cols, int(reverse), block,
            threads)
    build.check_status(rc, "linear_recurrence sequential (cpu) forward")
    return h, h_n


def backward_buffers(a: Tensor, grad_h: Tensor, grad_h_n: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """What both CPU backwards hand the kernels: ``grad_h`` (L, N, C) in ``a``'s dtype and ``grad_h_n`` (N, C) in
    the state dtype, contiguous, and the outputs ``grad_a``, ``grad_b`` (like ``a``) and ``grad_h0`` (N, C)."""
    acc = state_dtype_for(a.dtype)
    grad_a, grad_b = torch.empty_like(a), torch.empty_like(a)
    grad_h0 = torch.empty(a.shape[1:], dtype=acc)
    return grad_h.to(a.dtype).contiguous(), grad_h_n.to(acc).contiguous(), grad_a, grad_b, grad_h0


def backward(grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None, lengths: Tensor | None,
             reverse: bool, threads: int | None = None, block: int | None = None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(grad_a, grad_b, grad_h0)`` from ``grad_h`` ``(L, N, C)`` (storage dtype) and ``grad_h_n`` ``(N, C)``
    (state dtype), given the forward's ``h``; ``grad_h0`` is ``None`` when ``h0`` is. ``threads``/``block`` as in
    `forward`."""
    require_device(a.device, ("cpu",), "linear_recurrence sequential (cpu)")
    length, batch, cols = a.shape
    grad_h, grad_h_n, grad_a, grad_b, grad_h0 = backward_buffers(a, grad_h, grad_h_n)
    threads = threads_for(length, batch * cols) if threads is None else threads
    block = block_columns(batch * cols, threads) if block is None else block
    fn = getattr(cpu_library.load(), f"linrec_cpu_backward_{SUFFIX[a.dtype]}")
    rc = fn(ptr(grad_h), ptr(grad_h_n), ptr(a), ptr(h), ptr(h0), ptr(lengths), ptr(grad_a), ptr(grad_b),
            ptr(grad_h0), length, batch, cols, int(reverse), block, threads)
    build.check_status(rc, "linear_recurrence sequential (cpu) backward")
    return grad_a, grad_b, None if h0 is None else grad_h0


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] on this backend (differentiable)."""
    from parrnn.ops.linear_recurrence.op import linear_recurrence as op

    return op(a, b, h0, lengths, mask, reverse, backend="sequential")

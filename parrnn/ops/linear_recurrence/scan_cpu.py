"""Scan CPU backend: the chunked time-parallel scan of ``kernels/linear_recurrence_cpu.cpp``, threads over chunks of
time (for few columns and long sequences, where threads over columns have nothing to share).

Three phases (see docs/linear-recurrence.md): chunk 0 runs the recurrence while the other threads compose their
chunks' affine maps ``(A, B)`` (never a cumprod/cumsum closed form: those divide by products that underflow);
a serial pass turns the maps into each chunk's carry-in; the chunks then rerun from their carries. The backward
is the same scan run from the end on the gradients. Chunking is shared with the SRU's scan (`parrnn.ops.chunking`),
and so are the three phases (``kernels/chunked_scan_cpu.h``). Contract and dtypes as `sequential_cpu`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrnn.ops import build
from parrnn.ops.chunking import cpu_chunk_bounds
from parrnn.ops.launch import SUFFIX, ptr, require_device
from parrnn.ops.linear_recurrence import cpu_library
from parrnn.ops.linear_recurrence.contract import state_dtype_for
from parrnn.ops.linear_recurrence.sequential_cpu import backward_buffers

__all__ = ["availability", "backward", "chunk_bounds", "forward", "linear_recurrence"]

#: Cost of folding one step into a chunk map relative to a fused step (forward reads a, b; fused also writes h;
#: backward folds read a, grad_h; fused also reads h and writes two gradients). Sizes chunk 0.
REDUCE_COST = {"forward": 0.7, "backward": 0.5}


def availability(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether the C++ library builds here (compiles it on the first call)."""
    if torch.device(device).type != "cpu":
        return False, "the CPU scan runs on CPU tensors"
    return cpu_library.availability("chunked scan")


def chunk_bounds(length: int, threads: int, direction: str) -> Tensor:
    """``(n + 1,)`` int64 chunk boundaries of ``length`` steps for ``threads`` threads (one chunk for one)."""
    return torch.tensor(cpu_chunk_bounds(length, threads, REDUCE_COST[direction]), dtype=torch.int64)


def forward(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool,
            threads: int | None = None, bounds: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(h (L, N, C) storage dtype, h_n (N, C) state dtype)``; ``threads`` defaults to
    ``torch.get_num_threads()``, ``bounds`` (int64 ``[0, ..., L]``, the chunks) to `chunk_bounds`."""
    require_device(a.device, ("cpu",), "linear_recurrence scan (cpu)")
    length, batch, cols = a.shape
    h = torch.empty_like(a)
    h_n = torch.empty((batch, cols), dtype=state_dtype_for(a.dtype))
    threads = torch.get_num_threads() if threads is None else threads
    bounds = chunk_bounds(length, threads, "forward") if bounds is None else bounds
    fn = getattr(cpu_library.load(), f"linrec_scan_cpu_forward_{SUFFIX[a.dtype]}")
    rc = fn(ptr(a), ptr(b), ptr(h0), ptr(lengths), ptr(h), ptr(h_n), length, batch, cols, int(reverse), ptr(bounds),
            len(bounds) - 1, threads)
    build.check_status(rc, "linear_recurrence scan (cpu) forward")
    return h, h_n


def backward(grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None, lengths: Tensor | None,
             reverse: bool, threads: int | None = None, bounds: Tensor | None = None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(grad_a, grad_b, grad_h0)`` as `sequential_cpu.backward` (``bounds`` count steps from the end)."""
    require_device(a.device, ("cpu",), "linear_recurrence scan (cpu)")
    length, batch, cols = a.shape
    grad_h, grad_h_n, grad_a, grad_b, grad_h0 = backward_buffers(a, grad_h, grad_h_n)
    threads = torch.get_num_threads() if threads is None else threads
    bounds = chunk_bounds(length, threads, "backward") if bounds is None else bounds
    fn = getattr(cpu_library.load(), f"linrec_scan_cpu_backward_{SUFFIX[a.dtype]}")
    rc = fn(ptr(grad_h), ptr(grad_h_n), ptr(a), ptr(h), ptr(h0), ptr(lengths), ptr(grad_a), ptr(grad_b),
            ptr(grad_h0), length, batch, cols, int(reverse), ptr(bounds), len(bounds) - 1, threads)
    build.check_status(rc, "linear_recurrence scan (cpu) backward")
    return grad_a, grad_b, None if h0 is None else grad_h0


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] on this backend (differentiable)."""
    from parrnn.ops.linear_recurrence.op import linear_recurrence as op

    return op(a, b, h0, lengths, mask, reverse, backend="scan")

"""Scan CUDA backend: the chunked time-parallel scan of ``kernels/linear_recurrence_scan.cu`` (three launches per
direction: reduce chunk maps, carry, apply) through CuPy, with the shared CuPy runtime (`parrnn.ops.cuda_runtime`) and
the chunking shared with the SRU's scan (`parrnn.ops.chunking.gpu_chunk_len`).

Backend-module contract of `parrnn.ops.linear_recurrence.op`. `forward_with` / `backward_with` take a *launcher*:
the kernels use no shared memory, barrier or warp intrinsic, so the CPU tests run the very ``.cu`` through
``kernels/host_shim.h`` (`make_host_launcher`) with several chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrnn.ops import cuda_backend
from parrnn.ops.chunking import gpu_chunk_len
from parrnn.ops.launch import SUFFIX, Arg, Launcher, ptr_args
from parrnn.ops.linear_recurrence.contract import state_dtype_for

__all__ = ["KERNELS", "KERNEL_FILE", "availability", "backward", "backward_with", "forward", "forward_with",
           "linear_recurrence", "make_host_launcher"]

KERNEL_FILE = "linear_recurrence_scan.cu"
#: The kernels of ``kernels/linear_recurrence_scan.cu``, without the dtype suffix.
KERNELS = tuple(f"linrec_scan_{d}_{p}" for d in ("fwd", "bwd") for p in ("reduce", "carry", "apply"))


def _chunks(a: Tensor, chunk_len: int | None) -> tuple[int, int]:
    length, batch, cols = a.shape
    chunk_len = gpu_chunk_len(length, batch * cols) if chunk_len is None else max(1, min(int(chunk_len), length))
    return chunk_len, -(-length // chunk_len)


def _shape(a: Tensor, chunk_len: int, n_chunks: int, reverse: bool) -> list[Arg]:
    length, batch, cols = a.shape
    return [Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i64", chunk_len), Arg("i64", n_chunks),
            Arg("i32", int(reverse))]


def forward_with(launch: Launcher, a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool,
                 chunk_len: int | None = None) -> tuple[Tensor, Tensor]:
    """Forward (3 launches) through ``launch``: ``(h, h_n)``. ``chunk_len`` defaults to `gpu_chunk_len`."""
    _, batch, cols = a.shape
    acc, dev, nc = state_dtype_for(a.dtype), a.device, batch * cols
    chunk_len, n_chunks = _chunks(a, chunk_len)
    shape, sfx = _shape(a, chunk_len, n_chunks, reverse), SUFFIX[a.dtype]
    h = torch.empty_like(a)
    h_n = torch.empty((batch, cols), dtype=acc, device=dev)
    agg_a = torch.empty((max(n_chunks - 1, 1), batch, cols), dtype=acc, device=dev)
    agg_b = torch.empty_like(agg_a)
    carry = torch.empty((n_chunks, batch, cols), dtype=acc, device=dev)
    if n_chunks > 1:
        launch(f"linrec_scan_fwd_reduce_{sfx}", (n_chunks - 1) * nc, [*ptr_args(a, b, lengths, agg_a, agg_b), *shape],
               dev)
    launch(f"linrec_scan_fwd_carry_{sfx}", nc, [*ptr_args(h0, agg_a, agg_b, carry), *shape], dev)
    launch(f"linrec_scan_fwd_apply_{sfx}", n_chunks * nc, [*ptr_args(a, b, lengths, carry, h, h_n), *shape], dev)
    return h, h_n


def backward_with(launch: Launcher, grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None,
                  lengths: Tensor | None, reverse: bool, chunk_len: int | None = None
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Backward (3 launches) through ``launch``: ``(grad_a, grad_b, grad_h0)``."""
    _, batch, cols = a.shape
    acc, dev, nc = state_dtype_for(a.dtype), a.device, batch * cols
    chunk_len, n_chunks = _chunks(a, chunk_len)
    shape, sfx = _shape(a, chunk_len, n_chunks, reverse), SUFFIX[a.dtype]
    grad_h = grad_h.to(a.dtype).contiguous()
    grad_h_n = grad_h_n.to(acc).contiguous()
    grad_a, grad_b = torch.empty_like(a), torch.empty_like(a)
    grad_h0 = torch.empty((batch, cols), dtype=acc, device=dev)
    agg_a = torch.empty((max(n_chunks - 1, 1), batch, cols), dtype=acc, device=dev)
    agg_b = torch.empty_like(agg_a)
    carry = torch.empty((n_chunks, batch, cols), dtype=acc, device=dev)
    if n_chunks > 1:
        launch(f"linrec_scan_bwd_reduce_{sfx}", (n_chunks - 1) * nc,
               [*ptr_args(grad_h, a, lengths, agg_a, agg_b), *shape], dev)
    launch(f"linrec_scan_bwd_carry_{sfx}", nc, [*ptr_args(grad_h_n, agg_a, agg_b, carry), *shape], dev)
    launch(f"linrec_scan_bwd_apply_{sfx}", n_chunks * nc,
           [*ptr_args(grad_h, a, h, h0, lengths, carry, grad_a, grad_b, grad_h0), *shape], dev)
    return grad_a, grad_b, None if h0 is None else grad_h0


_KERNELS = cuda_backend.KernelFile(KERNEL_FILE, KERNELS, "linear_recurrence scan (cuda)")
cupy_launcher, availability, make_host_launcher = _KERNELS.launch, _KERNELS.availability, _KERNELS.host_launcher
forward = _KERNELS.on_device(forward_with)  # (a, b, h0, lengths, reverse) -> (h, h_n)
backward = _KERNELS.on_device(backward_with)  # (grad_h, grad_h_n, a, h, h0, lengths, reverse) -> grads


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] on this backend (CUDA tensors)."""
    from parrnn.ops.linear_recurrence.op import linear_recurrence as op

    return op(a, b, h0, lengths, mask, reverse, backend="scan")

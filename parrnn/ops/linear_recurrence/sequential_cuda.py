"""Sequential CUDA backend: ``kernels/linear_recurrence.cu`` (one thread per column, time loop inside) launched
through CuPy, with the shared CuPy runtime (`parrnn.ops.cuda_runtime`: lazy NVRTC compile cached per device and
dtype, torch's current stream, outputs allocated by torch).

Backend-module contract of `parrnn.ops.linear_recurrence.op` (validated arguments; ``h0`` in the state dtype).
`forward_with` / `backward_with` take a *launcher*: CuPy on a GPU, or in the CPU tests the same ``.cu`` compiled as
C++ behind ``kernels/host_shim.h`` (`make_host_launcher`), so CI runs the very kernels and glue the GPU runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrnn.ops import cuda_backend
from parrnn.ops.launch import SUFFIX, Arg, Launcher, ptr_args
from parrnn.ops.linear_recurrence.contract import state_dtype_for

__all__ = ["KERNELS", "KERNEL_FILE", "availability", "backward", "backward_with", "forward", "forward_with",
           "linear_recurrence", "make_host_launcher"]

KERNEL_FILE = "linear_recurrence.cu"
#: The kernels of ``kernels/linear_recurrence.cu``, without the dtype suffix.
KERNELS = ("linrec_forward", "linrec_backward")


def _shape(a: Tensor, reverse: bool) -> list[Arg]:
    length, batch, cols = a.shape
    return [Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", int(reverse))]


def forward_with(launch: Launcher, a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None,
                 reverse: bool) -> tuple[Tensor, Tensor]:
    """Forward through ``launch``: ``(h (L, N, C) storage dtype, h_n (N, C) state dtype)``."""
    _, batch, cols = a.shape
    h = torch.empty_like(a)
    h_n = torch.empty((batch, cols), dtype=state_dtype_for(a.dtype), device=a.device)
    launch(f"linrec_forward_{SUFFIX[a.dtype]}", batch * cols,
           [*ptr_args(a, b, h0, lengths, h, h_n), *_shape(a, reverse)], a.device)
    return h, h_n


def backward_with(launch: Launcher, grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None,
                  lengths: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Backward through ``launch``: ``(grad_a, grad_b, grad_h0)`` (``grad_h0`` ``None`` when ``h0`` is)."""
    _, batch, cols = a.shape
    acc = state_dtype_for(a.dtype)
    grad_h = grad_h.to(a.dtype).contiguous()
    grad_h_n = grad_h_n.to(acc).contiguous()
    grad_a, grad_b = torch.empty_like(a), torch.empty_like(a)
    grad_h0 = torch.empty((batch, cols), dtype=acc, device=a.device)
    launch(f"linrec_backward_{SUFFIX[a.dtype]}", batch * cols,
           [*ptr_args(grad_h, grad_h_n, a, h, h0, lengths, grad_a, grad_b, grad_h0), *_shape(a, reverse)], a.device)
    return grad_a, grad_b, None if h0 is None else grad_h0


_KERNELS = cuda_backend.KernelFile(KERNEL_FILE, KERNELS, "linear_recurrence sequential (cuda)")
cupy_launcher, availability, make_host_launcher = _KERNELS.launch, _KERNELS.availability, _KERNELS.host_launcher
forward = _KERNELS.on_device(forward_with)  # (a, b, h0, lengths, reverse) -> (h, h_n)
backward = _KERNELS.on_device(backward_with)  # (grad_h, grad_h_n, a, h, h0, lengths, reverse) -> grads


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] on this backend (CUDA tensors)."""
    from parrnn.ops.linear_recurrence.op import linear_recurrence as op

    return op(a, b, h0, lengths, mask, reverse, backend="sequential")

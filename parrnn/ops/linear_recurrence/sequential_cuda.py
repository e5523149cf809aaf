"""Sequential CUDA backend: ``kernels/linear_recurrence.cu`` (one thread per column, time loop inside) launched
through CuPy, with the shared CuPy runtime (`parrnn.ops.cuda_runtime`: lazy NVRTC compile cached per device and
dtype, torch's current stream, outputs allocated by torch).

Backend-module contract of `parrnn.ops.linear_recurrence.op` (validated arguments; ``h0`` in the state dtype).
`forward_with` / `backward_with` take a *launcher*: CuPy on a GPU, or in the CPU tests the same ``.cu`` compiled as
C++ behind ``kernels/host_shim.h`` (`make_host_launcher`), so CI runs the very kernels and glue the GPU runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from parrnn.ops import cuda_runtime, host_launcher
from parrnn.ops.launch import SUFFIX, Arg, Launcher, ptr_args, require_device
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


def cupy_launcher(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
    """Launch ``name`` of ``kernels/linear_recurrence.cu`` with CuPy on torch's current stream of ``device``."""
    cuda_runtime.cupy_launch(KERNEL_FILE, name, total, args, device)


def make_host_launcher(block: int = 32, max_grid: int = 2**31 - 1) -> Launcher:
    """The kernels run on CPU tensors through ``kernels/host_shim.h`` (tests); ``max_grid`` caps the grid to
    exercise the grid-stride loops."""
    return host_launcher.make_host_launcher(KERNEL_FILE, block, max_grid)


def availability(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """``(True, description)`` when the kernels are compiled and loaded for ``device`` and ``dtype``."""
    return cuda_runtime.kernel_availability(device, dtype, KERNEL_FILE, KERNELS)


def forward(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
    """CUDA forward on the tensors' device: ``(h, h_n)``."""
    require_device(a.device, ("cuda",), "linear_recurrence sequential (cuda)")
    with torch.cuda.device(a.device):
        return forward_with(cupy_launcher, a, b, h0, lengths, reverse)


def backward(grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None, lengths: Tensor | None,
             reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """CUDA backward on the tensors' device: ``(grad_a, grad_b, grad_h0)``."""
    require_device(a.device, ("cuda",), "linear_recurrence sequential (cuda)")
    with torch.cuda.device(a.device):
        return backward_with(cupy_launcher, grad_h, grad_h_n, a, h, h0, lengths, reverse)


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """[linear_recurrence][parrnn.ops.linear_recurrence.linear_recurrence] on this backend (CUDA tensors)."""
    from parrnn.ops.linear_recurrence.op import linear_recurrence as op

    return op(a, b, h0, lengths, mask, reverse, backend="sequential")

"""CUDA backend: the fused SRU kernels of ``kernels/sru_recurrence.cu`` launched through CuPy.

Implements the *fused backend module* contract of `parrnn.ops.sru.dispatch` (``availability``,
``forward``, ``backward``, each taking a `parrnn.ops.sru.contract.RecurrenceArgs`). Nothing here touches CUDA
at import time: CuPy is imported and the kernels are compiled (NVRTC, through ``cupy.RawModule``) by
``availability(device, dtype)`` (available = compiled and loaded for that device and dtype), once per (device,
storage dtype, variant), and CuPy's on-disk cache keeps the binaries between processes. Kernels run on torch's
current stream of the tensors' own device (a model on ``cuda:1`` works), outputs are allocated by torch, inputs
are made contiguous and passed by data pointer.

Shapes (``L`` length, ``N`` batch, ``K`` 3 or 4, ``C`` columns = directions * hidden), as in
`parrnn.ops.sru.reference`:

* forward:  ``u (L, N, K, C)``, ``x (L, N, C) | None``, ``weight_c (2, C) | None``, ``bias (2, C)``,
  ``c0 (N, C)``, ``mask_pad (L, N) bool | None``, ``drop_mask (N, C) | None`` -> ``h (L, N, C)``,
  ``c_n (N, C)`` (dtype of ``c0``), ``c_all (L, N, C)`` (float32; float64 for float64 input).
* backward: adds ``grad_h (L, N, C)``, ``grad_c_n (N, C)``, ``c_all`` -> ``grad_u (L, N, K, C)``, ``grad_x``,
  ``grad_weight_c (2, C)``, ``grad_bias (2, C)``, ``grad_c0 (N, C)`` (``None`` where the input was ``None``).
  The kernel writes per-(row, column) partial gradients of ``weight_c`` and ``bias`` (shape ``(2, N, C)``,
  float32) and torch sums them over ``N``.

Storage dtypes: float32, float64, float16, bfloat16 (arithmetic in float32, float64 for float64). The
small per-column tensors (``weight_c``, ``bias``, ``c0``, ``drop_mask``, ``grad_c_n``) cross in the arithmetic
dtype, whatever their own (float32 parameters and state with 16-bit ``u`` under autocast); their gradients and
``c_n`` come back in their own dtype.

The glue (argument order, dtype conversions, output allocation, the partial-gradient reduction) is independent
of how a kernel is launched: `forward_with` / `backward_with` take a *launcher*. On a GPU that is
CuPy (`cupy_launcher`); the CPU test suite passes `make_host_launcher`, which compiles the same
``.cu`` as C++ behind ``kernels/host_shim.h`` and runs every (block, thread) on the CPU, so CI checks the very
kernels and glue the GPU runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from parrnn.ops import cuda_runtime, cuda_toolchain, host_launcher
from parrnn.ops.launch import SUFFIX, Arg, Launcher, acc_arg, acc_dtype, ptr_args, require_device
from parrnn.ops.sru.contract import RecurrenceArgs, final_state, gpu_gradients, gpu_operands, validate

KERNEL_FILE = "sru_recurrence.cu"
#: The kernels of ``kernels/sru_recurrence.cu``, without the dtype suffix.
KERNELS = ("sru_forward", "sru_backward")
#: Environment variable overriding the kernels' prefetch depth (steps of loads in flight; PARRNN_PREFETCH).
PREFETCH_ENV = "PARRNN_CUDA_PREFETCH"


def _scalars(args: RecurrenceArgs) -> list[Arg]:
    """The kernels' trailing scalar arguments: ``L, N, C, K, bidirectional, use_tanh, scale_x``."""
    length, batch, k, cols = args.u.shape
    return [Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", k),
            Arg("i32", int(args.bidirectional)), Arg("i32", int(args.use_tanh)),
            acc_arg(args.scale_x, acc_dtype(args.u.dtype))]


def forward_with(launch: Launcher, args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """Forward through ``launch``: returns ``(h (L, N, C), c_n (N, C), c_all (L, N, C) float32|float64)``."""
    validate(args, backend="cuda")
    return _forward(launch, args)


def _forward(launch: Launcher, args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """`forward_with` for validated arguments."""
    u, c0, bidirectional = args.u, args.c0, args.bidirectional
    length, batch, _, cols = u.shape
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    ops = gpu_operands(args)
    h = torch.empty((length, batch, cols), dtype=dtype, device=dev)
    c_n = torch.empty((batch, cols), dtype=dtype, device=dev)
    c_all = torch.empty((length, batch, cols), dtype=acc, device=dev)
    total = batch * cols
    if total > 0:
        launch(f"sru_forward_{SUFFIX[dtype]}", total, [
            *ptr_args(ops.u, ops.x, ops.weight_c, ops.bias, ops.c0, ops.mask_pad, ops.drop_mask, h, c_n, c_all),
            *_scalars(args)], dev)
    return h, final_state(c_n, c_all, ops.c0, c0.dtype, bidirectional), c_all


def backward_with(launch: Launcher, args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor,
                  c_all: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Backward through ``launch``: ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)``, each in the dtype
    of its input (``None`` where the input was ``None``)."""
    length, batch, k, cols = validate(args, grad_h=grad_h, grad_c_n=grad_c_n, c_all=c_all, backend="cuda")
    u, x, weight_c, bias, c0 = args[:5]
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    ops = gpu_operands(args)
    gh, gcn, call = gpu_gradients(dtype, grad_h, grad_c_n, c_all)
    grad_u = torch.empty((length, batch, k, cols), dtype=dtype, device=dev)
    grad_x = None if x is None else torch.empty((length, batch, cols), dtype=dtype, device=dev)
    grad_wc_part = None if weight_c is None else torch.empty((2, batch, cols), dtype=acc, device=dev)
    grad_bias_part = torch.empty((2, batch, cols), dtype=acc, device=dev)
    grad_c0 = torch.empty((batch, cols), dtype=acc, device=dev)
    total = batch * cols
    if total > 0:
        launch(f"sru_backward_{SUFFIX[dtype]}", total, [
            *ptr_args(gh, gcn, ops.u, ops.x, ops.weight_c, ops.bias, ops.c0, ops.mask_pad, ops.drop_mask, call),
            *ptr_args(grad_u, grad_x, grad_wc_part, grad_bias_part, grad_c0), *_scalars(args)], dev)
    else:  # nothing to launch: empty outputs, or zero gradients of the (2, 0) parameters
        grad_u.zero_()
        if grad_x is not None:
            grad_x.zero_()
        if grad_wc_part is not None:
            grad_wc_part.zero_()
        grad_bias_part.zero_()
    grad_weight_c = None if grad_wc_part is None else grad_wc_part.sum(1).to(weight_c.dtype)  # type: ignore[union-attr]
    grad_bias = grad_bias_part.sum(1).to(bias.dtype)
    return (grad_u, None if grad_x is None else grad_x.to(x.dtype), grad_weight_c, grad_bias,  # type: ignore[union-attr]
            grad_c0.to(c0.dtype))


# ---- the CuPy launcher -------------------------------------------------------------------------------------

def prefetch_depth() -> int | None:
    """The prefetch depth requested by ``$PARRNN_CUDA_PREFETCH`` (1-8), or ``None`` for the kernel default."""
    value = os.environ.get(PREFETCH_ENV)
    if not value:
        return None
    depth = int(value)
    if not 1 <= depth <= 8:
        raise ValueError(f"{PREFETCH_ENV} must be in 1..8, got {value!r}")
    return depth


def cupy_launcher(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
    """Launch ``name`` of ``kernels/sru_recurrence.cu`` with CuPy (prefetch depth from ``$PARRNN_CUDA_PREFETCH``)."""
    cuda_runtime.cupy_launch(KERNEL_FILE, name, total, args, device, prefetch_depth())


# ---- the fused backend module contract ---------------------------------------------------------------------

def availability(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """``(True, description)`` when the kernels of ``kernels/sru_recurrence.cu`` are compiled and loaded for
    ``device`` (default: the current CUDA device) and storage ``dtype``, else ``(False, why not)`` (a failed
    compilation's reason carries the NVRTC log). The first call per (device, dtype) compiles."""
    return cuda_runtime.kernel_availability(device, dtype, KERNEL_FILE, KERNELS, prefetch_depth())


def kernel_code() -> str:
    """``kernels/sru_recurrence.cu`` with its local headers inlined, as NVRTC compiles it."""
    return cuda_toolchain.kernel_code(KERNEL_FILE)


def make_host_launcher(block: int = 128, max_grid: int = cuda_runtime.MAX_GRID,
                       prefetch: int | None = None) -> Launcher:
    """The kernels of ``kernels/sru_recurrence.cu`` run on the CPU (tests; see `parrnn.ops.host_launcher`);
    ``max_grid`` caps the grid to exercise the grid-stride loop, ``prefetch`` builds another PARRNN_PREFETCH."""
    return host_launcher.make_host_launcher(KERNEL_FILE, block, max_grid, prefetch)


def forward(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """Fused CUDA forward: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))`` (see the module docstring)."""
    validate(args, backend="cuda")
    return forward_validated(args)


def forward_validated(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """`forward` for arguments that `parrnn.ops.sru.contract.validate` has passed (the per-call path of
    `parrnn.ops.sru_recurrence`)."""
    require_device(args.u.device, ("cuda",), "cuda")  # (dispatch picks cuda only for a dtype it compiled)
    with torch.cuda.device(args.u.device):
        return _forward(cupy_launcher, args)


def backward(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor,
             c_all: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Fused CUDA backward: ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)`` (module docstring)."""
    require_device(args.u.device, ("cuda",), "cuda")
    with torch.cuda.device(args.u.device):
        return backward_with(cupy_launcher, args, grad_h, grad_c_n, c_all)

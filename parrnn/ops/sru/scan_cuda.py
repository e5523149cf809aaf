"""The CUDA implementation of the time-parallel scan (``kernels/sru_scan.cu``): the kernels' glue and CuPy launch.

`forward_with` / `backward_with` take a *launcher* (as in `parrnn.ops.sru.sequential_cuda`): on a GPU the CuPy
launcher, in the
CPU test suite the very same ``.cu`` compiled as C++ behind ``kernels/host_shim.h`` (`make_host_launcher`).
Chunks: ``ceil(L / chunk_len)``, see `parrnn.ops.chunking.gpu_chunk_len`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from parrnn.ops import cuda_runtime, cuda_toolchain, host_launcher
from parrnn.ops.chunking import GPU_MIN_CHUNK, GPU_TARGET_THREADS, gpu_chunk_len  # noqa: F401 (shared chunking)
from parrnn.ops.launch import SUFFIX, Arg, Launcher, acc_arg, acc_dtype, ptr_args, require_device
from parrnn.ops.sru.contract import (
    RecurrenceArgs,
    final_state,
    gpu_gradients,
    gpu_operands,
    require_linear,
    validate,
)

KERNEL_FILE = "sru_scan.cu"
#: The kernels of ``kernels/sru_scan.cu``, without the dtype suffix.
KERNELS = tuple(f"sru_scan_{d}_{p}" for d in ("fwd", "bwd") for p in ("reduce", "carry", "apply"))


def _shape_args(length: int, batch: int, cols: int, k: int, bidirectional: bool, chunk_len: int,
                n_chunks: int) -> list[Arg]:
    return [Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", k), Arg("i32", int(bidirectional)),
            Arg("i64", chunk_len), Arg("i64", n_chunks)]


def forward_with(launch: Launcher, args: RecurrenceArgs,
                 chunk_len: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The CUDA scan's forward (3 launches of ``kernels/sru_scan.cu``) through ``launch``:
    ``(h (L, N, C), c_n (N, C), c_all (L, N, C))``. ``chunk_len`` defaults to `gpu_chunk_len`."""
    require_linear(args)
    validate(args, backend="scan")
    return _forward(launch, args, chunk_len)


def _forward(launch: Launcher, args: RecurrenceArgs, chunk_len: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """`forward_with` for validated arguments."""
    u, _, _, _, c0, _, _, bidirectional, use_tanh, scale_x = args
    length, batch, k, cols = u.shape
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    ops = gpu_operands(args)
    nc = batch * cols
    h = torch.empty((length, batch, cols), dtype=dtype, device=dev)
    c_all = torch.empty((length, batch, cols), dtype=acc, device=dev)
    if length == 0 or nc == 0:
        return h, c0.clone(), c_all
    c_n = torch.empty((batch, cols), dtype=dtype, device=dev)
    chunk_len = gpu_chunk_len(length, nc) if chunk_len is None else max(1, min(int(chunk_len), length))
    n_chunks = -(-length // chunk_len)
    shape = _shape_args(length, batch, cols, k, bidirectional, chunk_len, n_chunks)
    sfx = SUFFIX[dtype]
    agg_a = torch.empty((max(n_chunks - 1, 1), batch, cols), dtype=acc, device=dev)
    agg_b = torch.empty_like(agg_a)
    carry = torch.empty((n_chunks, batch, cols), dtype=acc, device=dev)
    if n_chunks > 1:
        launch(f"sru_scan_fwd_reduce_{sfx}", (n_chunks - 1) * nc,
               [*ptr_args(ops.u, ops.mask_pad, ops.bias, agg_a, agg_b), *shape], dev)
    launch(f"sru_scan_fwd_carry_{sfx}", nc, [*ptr_args(ops.c0, agg_a, agg_b, carry), *shape], dev)
    launch(f"sru_scan_fwd_apply_{sfx}", n_chunks * nc,
           [*ptr_args(ops.u, ops.x, ops.bias, carry, ops.mask_pad, ops.drop_mask, h, c_n, c_all), *shape,
            Arg("i32", int(use_tanh)), acc_arg(scale_x, acc)], dev)
    return h, final_state(c_n, c_all, ops.c0, c0.dtype, bidirectional), c_all


def backward_with(launch: Launcher, args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor, c_all: Tensor,
                  chunk_len: int | None = None) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """The CUDA scan's backward (3 launches) through ``launch``: ``(grad_u, grad_x, None, grad_bias, grad_c0)``."""
    require_linear(args)
    length, batch, k, cols = validate(args, grad_h=grad_h, grad_c_n=grad_c_n, c_all=c_all, backend="scan")
    u, x, _, bias, c0, _, _, bidirectional, use_tanh, scale_x = args
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    ops = gpu_operands(args)
    gh, gcn, call = gpu_gradients(dtype, grad_h, grad_c_n, c_all)
    nc = batch * cols
    grad_u = torch.empty((length, batch, k, cols), dtype=dtype, device=dev)
    grad_x = None if x is None else torch.empty((length, batch, cols), dtype=dtype, device=dev)
    if length == 0 or nc == 0:
        grad_u.zero_()
        if grad_x is not None:
            grad_x.zero_()
        return (grad_u, None if grad_x is None else grad_x.to(x.dtype), None,  # type: ignore[union-attr]
                torch.zeros_like(bias), grad_c_n.to(c0.dtype))
    chunk_len = gpu_chunk_len(length, nc) if chunk_len is None else max(1, min(int(chunk_len), length))
    n_chunks = -(-length // chunk_len)
    shape = _shape_args(length, batch, cols, k, bidirectional, chunk_len, n_chunks)
    sfx = SUFFIX[dtype]
    agg_a = torch.empty((n_chunks, batch, cols), dtype=acc, device=dev)  # index 0 unused
    agg_b = torch.empty_like(agg_a)
    carry = torch.empty_like(agg_a)
    grad_bias_part = torch.empty((2, n_chunks, batch, cols), dtype=acc, device=dev)
    grad_c0 = torch.empty((batch, cols), dtype=acc, device=dev)
    if n_chunks > 1:
        launch(f"sru_scan_bwd_reduce_{sfx}", (n_chunks - 1) * nc,
               [*ptr_args(gh, ops.u, ops.x, ops.bias, ops.c0, ops.mask_pad, ops.drop_mask, call,
                          agg_a, agg_b), *shape,
                Arg("i32", int(use_tanh)), acc_arg(scale_x, acc)], dev)
    launch(f"sru_scan_bwd_carry_{sfx}", nc, [*ptr_args(gcn, agg_a, agg_b, carry), *shape], dev)
    launch(f"sru_scan_bwd_apply_{sfx}", n_chunks * nc,
           [*ptr_args(gh, ops.u, ops.x, ops.bias, ops.c0, ops.mask_pad, ops.drop_mask, call, carry,
                      grad_u, grad_x, grad_bias_part, grad_c0), *shape, Arg("i32", int(use_tanh)),
            acc_arg(scale_x, acc)], dev)
    grad_bias = grad_bias_part.sum((1, 2)).to(bias.dtype)
    return (grad_u, None if grad_x is None else grad_x.to(x.dtype), None, grad_bias,  # type: ignore[union-attr]
            grad_c0.to(c0.dtype))


def kernel_code() -> str:
    """``kernels/sru_scan.cu`` with its local headers inlined (`parrnn.ops.cuda_toolchain.kernel_code`)."""
    return cuda_toolchain.kernel_code(KERNEL_FILE)


def cupy_launcher(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
    """Launch the scan kernel ``name`` over ``total`` threads with CuPy, on torch's current stream of ``device``."""
    cuda_runtime.cupy_launch(KERNEL_FILE, name, total, args, device)


def make_host_launcher(block: int = 64, max_grid: int = 2**31 - 1) -> Launcher:
    """A launcher running the CUDA scan kernels on CPU tensors, every (block, thread) in turn (tests only).
    ``max_grid`` caps the grid to exercise the kernels' grid-stride loops."""
    return host_launcher.make_host_launcher(KERNEL_FILE, block, max_grid)


def availability(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """``(True, description)`` when the scan kernels are compiled and loaded for ``device`` and ``dtype``."""
    return cuda_runtime.kernel_availability(device, dtype, KERNEL_FILE, KERNELS)


def forward(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """CUDA scan forward with CuPy on the tensors' device: ``(h, c_n, c_all)``."""
    require_linear(args)
    validate(args, backend="scan")
    return forward_validated(args)


def forward_validated(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """`forward` for arguments that `parrnn.ops.sru.contract.validate` has passed."""
    require_device(args.u.device, ("cuda",), "scan (cuda)")  # (dispatch picks it only for a dtype it compiled)
    with torch.cuda.device(args.u.device):
        return _forward(cupy_launcher, args)


def backward(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor,
             c_all: Tensor) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """CUDA scan backward with CuPy: ``(grad_u, grad_x, None, grad_bias, grad_c0)``."""
    require_device(args.u.device, ("cuda",), "scan (cuda)")
    with torch.cuda.device(args.u.device):
        return backward_with(cupy_launcher, args, grad_h, grad_c_n, c_all)

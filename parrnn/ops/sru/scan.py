"""The ``scan`` backend: time-parallel chunked scan for the linear (v1) SRU -- its contract and routing.

Implements the *fused backend module* contract of `parrnn.ops.sru.dispatch` (``availability``, ``forward``,
``forward_validated``, ``backward``, each taking a `parrnn.ops.sru.contract.RecurrenceArgs`) for CPU and CUDA
tensors; the implementations are `parrnn.ops.sru.scan_cpu` (C++ threads) and `parrnn.ops.sru.scan_cuda` (CuPy),
which take the same structure and check that it is the linear recurrence (``weight_c=None``). Availability is per
device: the CPU scan needs a C++ compiler, the CUDA scan its kernels compiled for that device and dtype.

For v1 the gates do not depend on the state, so every step is an affine map ``c_t = a_t c_{t-1} + b_t`` and
runs of steps compose associatively (``kernels/sru_scan.cuh``). Each column's steps are cut into chunks:

1. *reduce*: compose each chunk's maps into one ``(A_k, B_k)``, all chunks in parallel;
2. *carry*: a short sequential scan over the chunks gives each chunk's carry-in state;
3. *apply*: every chunk reruns the fused step (gates, highway, tanh, masks, dropout) from its carry-in, writing
   ``h`` and ``c_all``; the last chunk gives ``c_n``.

The backward is the same scan run in reverse on ``dL/dc`` (``g_{t-1} = a_t g_t + e_t``). No running product is
ever divided by (see ``docs/scan.md`` for the stability argument and the measurements).

Shapes as in `parrnn.ops.sru.reference` (``L`` length, ``N`` batch, ``K`` 3 or 4, ``C`` columns):

* forward:  ``u (L, N, K, C)``, ``x (L, N, C) | None``, ``weight_c`` must be ``None``, ``bias (2, C)``,
  ``c0 (N, C)``, ``mask_pad (L, N) bool | None``, ``drop_mask (N, C) | None`` -> ``h (L, N, C)``, ``c_n (N, C)``
  (dtype of ``u``), ``c_all (L, N, C)`` (float32; float64 for float64 input).
* backward: adds ``grad_h (L, N, C)``, ``grad_c_n (N, C)`` and ``c_all`` -> ``(grad_u, grad_x, None, grad_bias,
  grad_c0)``.

Memory. Saved for backward: exactly what the sequential backends save, ``c_all`` (``L*N*C`` in the arithmetic
dtype) plus the inputs. Scratch: ``(A_k, B_k)`` and the carries, ``3 * n_chunks * N * C`` values, and in the
backward ``2 * n_chunks * N * C`` partial bias gradients; ``n_chunks <= L``, so O(L*N*C) at most (on the CPU
``n_chunks`` is threads + 1; on CUDA it is ``ceil(L / chunk_len)``, see `parrnn.ops.sru.scan_cuda.gpu_chunk_len`).

On a GPU the CuPy launcher runs ``kernels/sru_scan.cu``; the CPU test suite runs the very same ``.cu`` compiled as
C++ behind ``kernels/host_shim.h`` (its kernels use no shared memory, barriers or warp intrinsics). CPU tensors use
``kernels/sru_scan_cpu.cpp``, the same three phases with columns innermost (SIMD) and std::threads over chunks of
time.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from parrnn.ops.launch import require_device
from parrnn.ops.sru import scan_cpu, scan_cuda
from parrnn.ops.sru.contract import RecurrenceArgs


def availability(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether the scan runs on ``device`` (default: the CPU) for storage ``dtype``, and why not.

    CPU: the C++ scan compiles and loads. CUDA: CuPy is usable and ``kernels/sru_scan.cu`` compiles and loads for
    that device and dtype (without CuPy: unavailable, with the reason)."""
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cpu":
        return scan_cpu.availability()
    if dev.type == "cuda":
        return scan_cuda.availability(dev, dtype)
    return False, f"the scan runs on cpu or cuda tensors, not {dev.type}"


def _impl(args: RecurrenceArgs) -> ModuleType:
    require_device(args.u.device, ("cpu", "cuda"), "scan")
    return scan_cpu if args.u.device.type == "cpu" else scan_cuda


def forward(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """Scan forward on the tensors' device: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))``."""
    return _impl(args).forward(args)


def forward_validated(args: RecurrenceArgs) -> tuple[Tensor, Tensor, Tensor]:
    """`forward` for arguments that `parrnn.ops.sru.contract.validate` has passed (`parrnn.ops.sru_recurrence`)."""
    return _impl(args).forward_validated(args)


def backward(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor,
             c_all: Tensor) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """Scan backward on the tensors' device: ``(grad_u, grad_x, None, grad_bias, grad_c0)``."""
    return _impl(args).backward(args, grad_h, grad_c_n, c_all)

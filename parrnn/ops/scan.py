"""Time-parallel chunked scan for the linear (v1) SRU: CPU (C++ threads) and CUDA (CuPy) implementations.

Implements the *fused backend module* contract of :mod:`parrnn.ops.dispatch` (``availability``, ``forward``,
``backward``) for CPU **and** CUDA tensors (the custom op routes ``algorithm="scan"`` here for every device), plus
:func:`prefer_scan`, the rule ``backend="auto"`` uses to pick the scan over the sequential kernels.

For v1 the gates do not depend on the state, so every step is an affine map ``c_t = a_t c_{t-1} + b_t`` and
runs of steps compose associatively (``kernels/sru_scan.cuh``). Each column's steps are cut into chunks:

1. *reduce*: compose each chunk's maps into one ``(A_k, B_k)``, all chunks in parallel;
2. *carry*: a short sequential scan over the chunks gives each chunk's carry-in state;
3. *apply*: every chunk reruns the fused step (gates, highway, tanh, masks, dropout) from its carry-in, writing
   ``h`` and ``c_all``; the last chunk gives ``c_n``.

The backward is the same scan run in reverse on ``dL/dc`` (``g_{t-1} = a_t g_t + e_t``). No running product is
ever divided by (see ``docs/scan.md`` for the stability argument and the measurements).

Shapes as in :mod:`parrnn.ops.reference` (``L`` length, ``N`` batch, ``K`` 3 or 4, ``C`` columns):

* forward:  ``u (L, N, K, C)``, ``x (L, N, C) | None``, ``weight_c`` must be ``None``, ``bias (2, C)``,
  ``c0 (N, C)``, ``mask_pad (L, N) bool | None``, ``drop_mask (N, C) | None`` -> ``h (L, N, C)``, ``c_n (N, C)``
  (dtype of ``c0``), ``c_all (L, N, C)`` (float32; float64 for float64 input).
* backward: adds ``grad_h (L, N, C)``, ``grad_c_n (N, C)`` and ``c_all`` -> ``(grad_u, grad_x, None, grad_bias,
  grad_c0)``.

Memory. Saved for backward: exactly what the sequential backends save, ``c_all`` (``L*N*C`` in the arithmetic
dtype) plus the inputs. Scratch: ``(A_k, B_k)`` and the carries, ``3 * n_chunks * N * C`` values, and in the
backward ``2 * n_chunks * N * C`` partial bias gradients; ``n_chunks <= L``, so O(L*N*C) at most (on the CPU
``n_chunks`` is threads + 1; on CUDA it is ``ceil(L / chunk_len)``, see :func:`gpu_chunk_len`).

Two launch paths share the kernel glue (:func:`forward_with` / :func:`backward_with` take a *launcher*, as in
:mod:`parrnn.ops.cuda`): on a GPU the CuPy launcher runs ``kernels/sru_scan.cu``; in the CPU test suite
:func:`make_host_launcher` runs the very same ``.cu`` compiled as C++ behind ``kernels/host_shim.h`` (its
kernels use no shared memory, barriers or warp intrinsics). CPU tensors use ``kernels/sru_scan_cpu.cpp``, the
same three phases with columns innermost (SIMD) and std::threads over chunks of time.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from parrnn._paths import kernel_source
from parrnn.ops import cuda as _cuda
from parrnn.ops.cuda import SUFFIX, Arg, Launcher, acc_arg, acc_dtype, as_dtype, check_shapes, final_state, ptr_args

KERNEL_FILE = "sru_scan.cu"
CPU_FILE = "sru_scan_cpu.cpp"
#: As the sequential CPU backend (kernels/sru_cpu.cpp), but threads are std::thread (-pthread), not OpenMP:
#: -fno-trapping-math lets g++ if-convert the selects in sru_step.cuh so the column loops vectorize;
#: no -ffast-math (NaN/inf propagate).
CPU_FLAGS: tuple[str, ...] = ("-march=native", "-pthread", "-fno-math-errno", "-fno-trapping-math")

#: CPU: cost of a *reduce* step relative to a fused step (forward, backward), measured on a Zen3 core
#: (``docs/scan.md``); it sizes the first chunk, which runs the fused recurrence while the others reduce.
CPU_REDUCE_COST = {"forward": 0.45, "backward": 0.7}
#: CPU: below this many steps per thread the scan is not split (thread start-up dominates).
CPU_MIN_STEPS_PER_THREAD = 256
#: CUDA: aim for about this many (chunk, column) threads (an H100 holds ~270k resident threads).
GPU_TARGET_THREADS = 1 << 17
#: CUDA: never make chunks shorter than this (the carry pass is sequential over chunks).
GPU_MIN_CHUNK = 16


def _require_linear(weight_c: Tensor | None) -> None:
    if weight_c is not None:
        raise ValueError("the scan backend needs the linear recurrence (weight_c=None, version='v1'); "
                         "the v2 peephole makes f_t depend on c_{t-1}")


# ---- chunking ------------------------------------------------------------------------------------------------------

def gpu_chunk_len(length: int, columns: int) -> int:
    """Chunk length of the CUDA scan for ``length`` steps and ``columns = N*C``: enough chunks that
    ``chunks * columns`` is about :data:`GPU_TARGET_THREADS`, but chunks of at least :data:`GPU_MIN_CHUNK` steps.
    """
    if length <= 0:
        return 1
    want = max(1, -(-GPU_TARGET_THREADS // max(columns, 1)))
    n_chunks = max(1, min(want, length // GPU_MIN_CHUNK))
    return -(-length // n_chunks)


def cpu_chunk_bounds(length: int, threads: int, reduce_cost: float) -> list[int]:
    """Chunk boundaries ``[0, ..., length]`` of the CPU scan (in processing order).

    One chunk (the plain sequential recurrence) for one thread or short sequences; else ``threads + 1`` chunks:
    chunk 0 of ``r/(P+r)`` of the steps (it runs the fused pass while the other threads reduce chunks
    1..P-1), then ``P`` equal chunks, one per thread in the fix-up phase (``P`` threads, ``r`` the reduce cost).
    """
    if threads <= 1 or length < threads * CPU_MIN_STEPS_PER_THREAD:
        return [0, length]
    first = int(round(length * reduce_cost / (threads + reduce_cost)))
    first = min(max(first, 1), length - threads)
    bounds = [0, first]
    rest = length - first
    for i in range(1, threads + 1):
        bounds.append(first + (rest * i) // threads)
    return bounds


# ---- the CPU implementation (kernels/sru_scan_cpu.cpp) ---------------------------------------------------------

_cpu_lock = threading.Lock()
_cpu_lib: ctypes.CDLL | None = None
_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int


def cpu_library() -> ctypes.CDLL:
    """``kernels/sru_scan_cpu.cpp`` compiled (cached on disk) and loaded, with its ctypes signatures set."""
    global _cpu_lib
    with _cpu_lock:
        if _cpu_lib is None:
            from parrnn.ops._cbuild import build_library  # noqa: PLC0415

            lib = build_library("sru_scan_cpu", [kernel_source(CPU_FILE)], CPU_FLAGS)
            for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
                fwd = getattr(lib, f"sru_scan_cpu_forward_{suffix}")
                fwd.restype = ctypes.c_int
                fwd.argtypes = [_P] * 9 + [_I64, _I64, _I64, _I32, _I32, _I32, real, _P, _I64, _I32]
                bwd = getattr(lib, f"sru_scan_cpu_backward_{suffix}")
                bwd.restype = ctypes.c_int
                bwd.argtypes = [_P] * 13 + [_I64, _I64, _I64, _I32, _I32, _I32, real, _P, _I64, _I32]
            _cpu_lib = lib
        return _cpu_lib


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def cpu_forward(u: Tensor, x: Tensor | None, bias: Tensor, c0: Tensor, mask_pad: Tensor | None,
                drop_mask: Tensor | None, bidirectional: bool, use_tanh: bool, scale_x: float,
                threads: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """CPU scan forward: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))``. float16/bfloat16 run in float32 copies.

    ``threads`` defaults to ``torch.get_num_threads()``; 1 gives the plain sequential recurrence.
    """
    length, batch, k, cols = check_shapes(u, x, bidirectional)
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
    fn = getattr(cpu_library(), f"sru_scan_cpu_forward_{SUFFIX[acc]}")
    rc = fn(_ptr(uu), _ptr(xx), _ptr(bias_), _ptr(c0_), _ptr(mask), _ptr(drop_), _ptr(h), _ptr(c_n), _ptr(c_all),
            length, batch, cols, k, int(bidirectional), int(use_tanh), float(scale_x), _ptr(bounds),
            len(bounds) - 1, max(1, threads))
    if rc != 0:
        raise MemoryError("parrnn scan (cpu): allocating the scan's scratch buffers failed")
    return h.to(dtype), c_n.to(c0.dtype), c_all


def cpu_backward(grad_h: Tensor, grad_c_n: Tensor, u: Tensor, x: Tensor | None, bias: Tensor, c0: Tensor,
                 mask_pad: Tensor | None, drop_mask: Tensor | None, c_all: Tensor, bidirectional: bool,
                 use_tanh: bool, scale_x: float,
                 threads: int | None = None) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """CPU scan backward: ``(grad_u, grad_x, None, grad_bias, grad_c0)``, each in its input's dtype."""
    length, batch, k, cols = check_shapes(u, x, bidirectional)
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
        fn = getattr(cpu_library(), f"sru_scan_cpu_backward_{SUFFIX[acc]}")
        rc = fn(_ptr(gh), _ptr(gcn), _ptr(uu), _ptr(xx), _ptr(bias_), _ptr(c0_), _ptr(mask), _ptr(drop_),
                _ptr(call), _ptr(grad_u), _ptr(grad_x), _ptr(grad_bias_part), _ptr(grad_c0), length, batch, cols,
                k, int(bidirectional), int(use_tanh), float(scale_x), _ptr(bounds), len(bounds) - 1,
                max(1, threads))
        if rc != 0:
            raise MemoryError("parrnn scan (cpu): allocating the scan's scratch buffers failed")
    else:
        grad_u.zero_()
        if grad_x is not None:
            grad_x.zero_()
    return (grad_u.to(u.dtype), None if grad_x is None else grad_x.to(x.dtype), None,  # type: ignore[union-attr]
            grad_bias_part.sum(1).to(bias.dtype), grad_c0.to(c0.dtype))


# ---- the CUDA kernels' glue (any launcher) -------------------------------------------------------------------------

def _shape_args(length: int, batch: int, cols: int, k: int, bidirectional: bool, chunk_len: int,
                n_chunks: int) -> list[Arg]:
    return [Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", k), Arg("i32", int(bidirectional)),
            Arg("i64", chunk_len), Arg("i64", n_chunks)]


def forward_with(launch: Launcher, u: Tensor, x: Tensor | None, bias: Tensor, c0: Tensor, mask_pad: Tensor | None,
                 drop_mask: Tensor | None, bidirectional: bool, use_tanh: bool, scale_x: float,
                 chunk_len: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The CUDA scan's forward (3 launches of ``kernels/sru_scan.cu``) through ``launch``:
    ``(h (L, N, C), c_n (N, C), c_all (L, N, C))``. ``chunk_len`` defaults to :func:`gpu_chunk_len`."""
    length, batch, k, cols = check_shapes(u, x, bidirectional)
    if u.dtype not in SUFFIX:
        raise TypeError(f"parrnn scan: unsupported dtype {u.dtype} (float32, float64, float16, bfloat16)")
    dtype, acc, dev, state_dtype = u.dtype, acc_dtype(u.dtype), u.device, c0.dtype
    u = u.contiguous()
    x = as_dtype(x, dtype)
    bias, c0, drop_mask = as_dtype(bias, acc), as_dtype(c0, acc), as_dtype(drop_mask, acc)
    mask_pad = as_dtype(mask_pad, torch.bool)
    nc = batch * cols
    h = torch.empty((length, batch, cols), dtype=dtype, device=dev)
    c_all = torch.empty((length, batch, cols), dtype=acc, device=dev)
    if length == 0 or nc == 0:
        return h, c0.to(state_dtype, copy=True), c_all  # type: ignore[union-attr]
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
               [*ptr_args(u, mask_pad, bias, agg_a, agg_b), *shape], dev)
    launch(f"sru_scan_fwd_carry_{sfx}", nc, [*ptr_args(c0, agg_a, agg_b, carry), *shape], dev)
    launch(f"sru_scan_fwd_apply_{sfx}", n_chunks * nc,
           [*ptr_args(u, x, bias, carry, mask_pad, drop_mask, h, c_n, c_all), *shape,
            Arg("i32", int(use_tanh)), acc_arg(scale_x, acc)], dev)
    return h, final_state(c_n, c_all, c0, state_dtype, bidirectional), c_all


def backward_with(launch: Launcher, grad_h: Tensor, grad_c_n: Tensor, u: Tensor, x: Tensor | None, bias: Tensor,
                  c0: Tensor, mask_pad: Tensor | None, drop_mask: Tensor | None, c_all: Tensor,
                  bidirectional: bool, use_tanh: bool, scale_x: float,
                  chunk_len: int | None = None) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """The CUDA scan's backward (3 launches) through ``launch``: ``(grad_u, grad_x, None, grad_bias, grad_c0)``."""
    length, batch, k, cols = check_shapes(u, x, bidirectional)
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    x_dtype = None if x is None else x.dtype
    bias_dtype, c0_dtype = bias.dtype, c0.dtype
    u = u.contiguous()
    x = as_dtype(x, dtype)
    grad_h = grad_h.to(dtype).contiguous()
    grad_c_n, c_all = as_dtype(grad_c_n, acc), as_dtype(c_all, acc)
    bias, c0, drop_mask = as_dtype(bias, acc), as_dtype(c0, acc), as_dtype(drop_mask, acc)
    mask_pad = as_dtype(mask_pad, torch.bool)
    nc = batch * cols
    grad_u = torch.empty((length, batch, k, cols), dtype=dtype, device=dev)
    grad_x = None if x is None else torch.empty((length, batch, cols), dtype=dtype, device=dev)
    if length == 0 or nc == 0:
        grad_u.zero_()
        if grad_x is not None:
            grad_x.zero_()
        return (grad_u, None if grad_x is None else grad_x.to(x_dtype), None,
                torch.zeros_like(bias, dtype=bias_dtype), grad_c_n.to(c0_dtype))  # type: ignore[union-attr]
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
               [*ptr_args(grad_h, u, x, bias, c0, mask_pad, drop_mask, c_all, agg_a, agg_b), *shape,
                Arg("i32", int(use_tanh)), acc_arg(scale_x, acc)], dev)
    launch(f"sru_scan_bwd_carry_{sfx}", nc, [*ptr_args(grad_c_n, agg_a, agg_b, carry), *shape], dev)
    launch(f"sru_scan_bwd_apply_{sfx}", n_chunks * nc,
           [*ptr_args(grad_h, u, x, bias, c0, mask_pad, drop_mask, c_all, carry, grad_u, grad_x, grad_bias_part,
                      grad_c0), *shape, Arg("i32", int(use_tanh)), acc_arg(scale_x, acc)], dev)
    grad_bias = grad_bias_part.sum((1, 2)).to(bias_dtype)
    return (grad_u, None if grad_x is None else grad_x.to(x_dtype), None, grad_bias, grad_c0.to(c0_dtype))


# ---- launchers: CuPy on a GPU, the host build of the same .cu in CPU tests (shared with parrnn.ops.cuda) ------

def kernel_code() -> str:
    """``kernels/sru_scan.cu`` with its local headers inlined (:func:`parrnn.ops.cuda.kernel_code`)."""
    return _cuda.kernel_code(KERNEL_FILE)


def cupy_launcher(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
    """Launch the scan kernel ``name`` over ``total`` threads with CuPy, on torch's current stream of ``device``."""
    _cuda.cupy_launch(KERNEL_FILE, name, total, args, device)


def make_host_launcher(block: int = 64, max_grid: int = 2**31 - 1) -> Launcher:
    """A launcher running the CUDA scan kernels on CPU tensors, every (block, thread) in turn (tests only).
    ``max_grid`` caps the grid to exercise the kernels' grid-stride loops."""
    return _cuda.make_host_launcher(block, max_grid, kernel_file=KERNEL_FILE)


# ---- the fused backend module contract ---------------------------------------------------------------------------

def availability() -> tuple[bool, str]:
    """Works when the CPU scan compiles (C++ compiler) or the CUDA backend's CuPy is usable."""
    try:
        cpu_library()
        cpu_ok, cpu_why = True, "CPU: C++ chunked scan (std::thread)"
    except Exception as exc:
        cpu_ok, cpu_why = False, f"CPU scan unavailable ({type(exc).__name__}: {str(exc)[:300]})"
    gpu_ok, gpu_why = _cuda.availability()
    return cpu_ok or gpu_ok, f"{cpu_why}; CUDA: {gpu_why if gpu_ok else 'unavailable (' + gpu_why + ')'}"


def _same_device(*tensors: Tensor | None) -> torch.device:
    dev = tensors[0].device  # type: ignore[union-attr]
    for t in tensors[1:]:
        if t is not None and t.device != dev:
            raise ValueError(f"all tensors must be on {dev}, got one on {t.device}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"the scan backend runs on cpu or cuda tensors, got {dev}")
    return dev


def forward(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
            mask_pad: Tensor | None, drop_mask: Tensor | None, bidirectional: bool, use_tanh: bool,
            scale_x: float) -> tuple[Tensor, Tensor, Tensor]:
    """Scan forward on the tensors' device: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))``."""
    _require_linear(weight_c)
    dev = _same_device(u, x, bias, c0, mask_pad, drop_mask)
    if dev.type == "cpu":
        return cpu_forward(u, x, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x)
    with torch.cuda.device(dev):
        return forward_with(cupy_launcher, u, x, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x)


def backward(grad_h: Tensor, grad_c_n: Tensor, u: Tensor, x: Tensor | None, weight_c: Tensor | None,
             bias: Tensor, c0: Tensor, mask_pad: Tensor | None, drop_mask: Tensor | None, c_all: Tensor,
             bidirectional: bool, use_tanh: bool,
             scale_x: float) -> tuple[Tensor, Tensor | None, None, Tensor, Tensor]:
    """Scan backward on the tensors' device: ``(grad_u, grad_x, None, grad_bias, grad_c0)``."""
    _require_linear(weight_c)
    dev = _same_device(u, grad_h, grad_c_n, x, bias, c0, mask_pad, drop_mask, c_all)
    if dev.type == "cpu":
        return cpu_backward(grad_h, grad_c_n, u, x, bias, c0, mask_pad, drop_mask, c_all, bidirectional,
                            use_tanh, scale_x)
    with torch.cuda.device(dev):
        return backward_with(cupy_launcher, grad_h, grad_c_n, u, x, bias, c0, mask_pad, drop_mask, c_all,
                             bidirectional, use_tanh, scale_x)


# ---- the auto rule -----------------------------------------------------------------------------------------------

CPU_SCAN_MIN_ELEMENTS = 1 << 23  # measured crossover on a 2-core Zen 3 (docs/scan.md)


def prefer_scan(device: torch.device, *, batch_columns: int, length: int) -> bool:
    """Whether ``backend="auto"`` should run the linear SRU with the scan instead of the sequential kernel.

    * CUDA (provisional, not yet measured on a GPU): the sequential kernel runs one thread per column, so with
      ``N*C <= 8192`` threads it leaves an H100 (~270k resident threads) mostly idle, and at ``L >= 1024`` the
      scan's three launches and ~1.3x memory traffic are amortised. To be confirmed in the GPU validation issue.
    * CPU: with at least 2 threads and ``L * N * C >= 2**23`` elements. On the quiet 2-core development machine
      (``python -m parrnn.ops.scan bench --reps 7``, see ``docs/scan.md``) 2 scan threads beat the sequential
      backend by 1.3-1.6x (forward and backward) at every size with ``L*N*C >= 2**23`` (e.g. N*C=128, L=65536;
      N*C=512, L=16384) and lost (0.35-0.8x) at every smaller size, where the sequential loop stays in cache.
    """
    if device.type == "cuda":
        return batch_columns <= 8192 and length >= 1024
    if device.type == "cpu":
        return torch.get_num_threads() >= 2 and batch_columns * length >= CPU_SCAN_MIN_ELEMENTS
    return False



# ---- NVRTC compile check (no GPU needed) -------------------------------------------------------------------------

SCAN_KERNELS = tuple(f"sru_scan_{d}_{p}" for d in ("fwd", "bwd") for p in ("reduce", "carry", "apply"))


def check_kernels(archs: Sequence[str] = ("sm_80", "sm_90")) -> int:
    """Compile ``kernels/sru_scan.cu`` with NVRTC for every storage dtype and ``archs`` (PTX + CUBIN), print each
    kernel's registers and spills, and return the number of failed variants (-1 when NVRTC is not installed).
    Reuses :mod:`parrnn.kernels`' NVRTC helpers; ``python -m parrnn.ops.scan`` runs it."""
    from parrnn import kernels as _k  # noqa: PLC0415

    nvrtc, version = _k.load_nvrtc()
    if nvrtc is None:
        print(f"SKIPPED scan kernels: NVRTC is not installed ({version})")
        return -1
    code = kernel_code()
    failures = 0
    for suffix in _k.DTYPE_SUFFIXES:
        for arch in archs:
            opts = [*_cuda.nvrtc_options(suffix), f"-arch={arch}", "--ptxas-options=-v"]
            err, prog = nvrtc.nvrtcCreateProgram(code.encode(), KERNEL_FILE.encode(), 0, [], [])
            try:
                (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
                _, size = nvrtc.nvrtcGetProgramLogSize(prog)
                buf = b" " * size
                nvrtc.nvrtcGetProgramLog(prog, buf)
                log = buf.rstrip(b"\x00 ").decode(errors="replace")
                ptx = ""
                if int(status) == 0:
                    _, size = nvrtc.nvrtcGetPTXSize(prog)
                    pbuf = b" " * size
                    nvrtc.nvrtcGetPTX(prog, pbuf)
                    ptx = pbuf.rstrip(b"\x00 ").decode()
            finally:
                nvrtc.nvrtcDestroyProgram(prog)
            missing = [f"{k}_{suffix}" for k in SCAN_KERNELS if not re.search(rf"\.entry\s+{k}_{suffix}\b", ptx)]
            if int(status) != 0 or missing:
                failures += 1
                print(f"FAILED scan {suffix} {arch}: {'missing ' + str(missing) if ptx else log}")
                continue
            reports = _k.parse_ptxas_log(log)
            for kname in SCAN_KERNELS:
                rep = reports.get(f"{kname}_{suffix}")
                regs = "?" if rep is None else rep.registers
                spill = "?" if rep is None else (rep.spill_stores or 0) + (rep.spill_loads or 0)
                print(f"{kname}_{suffix:<5} {arch:<6} regs {regs!s:>4}  spill bytes {spill}")
    total = len(_k.DTYPE_SUFFIXES) * len(archs)
    print(("OK" if not failures else "FAILED") + f": scan kernels, {total - failures}/{total} variants "
          f"(NVRTC {version})")
    return failures


# ---- CPU measurement (docs/scan.md) --------------------------------------------------------------------------------

def _bench_calls(seq: Any, u: Tensor, x: Tensor, bias: Tensor, c0: Tensor, c_all: Tensor, gh: Tensor,
                 gcn: Tensor) -> dict[str, Any]:
    return {
        "seq fwd": lambda: seq.forward(u, x, None, bias, c0, None, None, False, False, 1.0),
        "scan fwd": lambda: forward(u, x, None, bias, c0, None, None, False, False, 1.0),
        "seq bwd": lambda: seq.backward(gh, gcn, u, x, None, bias, c0, None, None, c_all, False, False, 1.0),
        "scan bwd": lambda: backward(gh, gcn, u, x, None, bias, c0, None, None, c_all, False, False, 1.0),
    }


def bench_cpu(columns: Sequence[int] = (64, 128, 256, 512), lengths: Sequence[int] = (4096, 16384, 65536),
              batch: int = 1, reps: int = 7, threads: Sequence[int] = (1, 2)) -> list[dict[str, Any]]:
    """Time the CPU scan against the sequential ``cpu`` backend, forward and backward separately, float32,
    ``N = batch``, for each ``torch.set_num_threads(P)`` in ``threads``. Runs of the four variants are
    interleaved and each time is the median (and min) of ``reps`` runs; prints a Markdown table."""
    import statistics  # noqa: PLC0415
    import time  # noqa: PLC0415

    from parrnn.ops import cpu as seq  # noqa: PLC0415

    saved = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    print("| N*C | L | P | seq fwd ms | scan fwd ms | fwd speed-up | seq bwd ms | scan bwd ms | bwd speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for cols in columns:
            for length in lengths:
                gen = torch.Generator().manual_seed(0)
                u = torch.randn(length, batch, 3, cols, generator=gen)
                x = torch.randn(length, batch, cols, generator=gen)
                bias = torch.randn(2, cols, generator=gen)
                c0 = torch.randn(batch, cols, generator=gen)
                h, c_n, c_all = cpu_forward(u, x, bias, c0, None, None, False, False, 1.0, threads=1)
                gh, gcn = torch.randn_like(h), torch.randn_like(c_n)
                calls = _bench_calls(seq, u, x, bias, c0, c_all, gh, gcn)
                times: dict[tuple[int, str], list[float]] = {}
                for fn in calls.values():  # warm-up (compile, page in)
                    fn()
                for _ in range(reps):
                    for p in threads:
                        torch.set_num_threads(p)
                        for name, fn in calls.items():
                            t0 = time.perf_counter()
                            fn()
                            times.setdefault((p, name), []).append(time.perf_counter() - t0)
                for p in threads:
                    med = {name: statistics.median(times[(p, name)]) * 1e3 for name in calls}
                    mins = {name: min(times[(p, name)]) * 1e3 for name in calls}
                    row = {"columns": batch * cols, "length": length, "threads": p, "median_ms": med, "min_ms": mins}
                    rows.append(row)
                    print(f"| {batch * cols} | {length} | {p} | {med['seq fwd']:.2f} | {med['scan fwd']:.2f} | "
                          f"{med['seq fwd'] / med['scan fwd']:.2f}x | {med['seq bwd']:.2f} | {med['scan bwd']:.2f} | "
                          f"{med['seq bwd'] / med['scan bwd']:.2f}x |", flush=True)
    finally:
        torch.set_num_threads(saved)
    return rows


if __name__ == "__main__":
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m parrnn.ops.scan")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("check", help="compile the CUDA scan kernels with NVRTC (default)")
    b = sub.add_parser("bench", help="time the CPU scan against the sequential cpu backend")
    b.add_argument("--columns", type=int, nargs="+", default=[64, 128, 256, 512])
    b.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--reps", type=int, default=7)
    b.add_argument("--json", type=str, default=None, help="also write the rows to this file")
    ns = parser.parse_args()
    if ns.cmd == "bench":
        result = bench_cpu(ns.columns, ns.lengths, ns.batch, ns.reps)
        if ns.json:
            Path(ns.json).write_text(json.dumps(result, indent=1))
        sys.exit(0)
    sys.exit(1 if check_kernels() > 0 else 0)

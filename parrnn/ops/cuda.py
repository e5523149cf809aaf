"""CUDA backend: the fused SRU kernels of ``kernels/sru_recurrence.cu`` launched through CuPy.

Implements the *fused backend module* contract of :mod:`parrnn.ops.dispatch` (``availability``,
``forward``, ``backward``). Nothing here touches CUDA at import time: CuPy is imported and the kernels are
compiled (NVRTC, through :class:`cupy.RawModule`) on first use, once per (device, storage dtype, variant), and
CuPy's on-disk cache keeps the binaries between processes. Kernels run on torch's current stream of the
tensors' own device (a model on ``cuda:1`` works), outputs are allocated by torch, inputs are made contiguous
and passed by data pointer.

Shapes (``L`` length, ``N`` batch, ``K`` 3 or 4, ``C`` columns = directions * hidden), as in
:mod:`parrnn.ops.reference`:

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
of how a kernel is launched: :func:`forward_with` / :func:`backward_with` take a *launcher*. On a GPU that is
CuPy (:func:`cupy_launcher`); the CPU test suite passes :func:`make_host_launcher`, which compiles the same
``.cu`` as C++ behind ``kernels/host_shim.h`` and runs every (block, thread) on the CPU, so CI checks the very
kernels and glue the GPU runs.
"""

from __future__ import annotations

import ctypes
import os
import re
import site
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from parrnn._paths import kernel_dir, kernel_source

KERNEL_FILE = "sru_recurrence.cu"
#: Environment variable overriding the kernels' prefetch depth (steps of loads in flight; PARRNN_PREFETCH).
PREFETCH_ENV = "PARRNN_CUDA_PREFETCH"
SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}
MAX_BLOCK = 256  # the kernels' __launch_bounds__
_MAX_GRID = 2**31 - 1  # the kernels use a grid-stride loop beyond this


# ---- kernel arguments --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arg:
    """One kernel argument: ``kind`` is ``"ptr"``, ``"i64"``, ``"i32"``, ``"f32"`` or ``"f64"``."""

    kind: str
    value: int | float


def ptr_arg(t: Tensor | None) -> Arg:
    """A pointer argument (``0`` for ``None``)."""
    return Arg("ptr", 0 if t is None else t.data_ptr())


def ptr_args(*tensors: Tensor | None) -> list[Arg]:
    """:func:`ptr_arg` of each tensor."""
    return [ptr_arg(t) for t in tensors]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic dtype of storage ``dtype``: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def acc_arg(value: float, acc: torch.dtype) -> Arg:
    """A scalar argument in the arithmetic dtype ``acc``."""
    return Arg("f64" if acc == torch.float64 else "f32", float(value))


#: A launcher runs ``kernel_name`` over ``total`` threads (one per column) with ``args`` on ``device``.
Launcher = Callable[[str, int, Sequence[Arg], torch.device], None]


# ---- the glue: shapes, dtypes, outputs ---------------------------------------------------------------------

def check_shapes(u: Tensor, x: Tensor | None, bidirectional: bool) -> tuple[int, int, int, int]:
    """Validate ``u`` (and ``x``) shapes; returns ``(L, N, K, C)``."""
    if u.dim() != 4 or u.shape[2] not in (3, 4):
        raise ValueError(f"u must have shape (L, N, K, C) with K = 3 or 4, got {tuple(u.shape)}")
    length, batch, k, cols = u.shape
    if k == 4 and x is not None:
        raise ValueError("x must be None when u has K = 4 (the 4th projection is the highway input)")
    if bidirectional and cols % 2:
        raise ValueError(f"bidirectional needs an even number of columns, got C = {cols}")
    return length, batch, k, cols


def _check(u: Tensor, x: Tensor | None, bidirectional: bool) -> tuple[int, int, int, int]:
    if u.dtype not in SUFFIX:
        raise TypeError(f"parrnn cuda backend: unsupported dtype {u.dtype} "
                        "(float32, float64, float16, bfloat16)")
    return check_shapes(u, x, bidirectional)


def as_dtype(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` converted to ``dtype`` and made contiguous (``None`` stays ``None``)."""
    return None if t is None else t.to(dtype).contiguous()


def final_state(c_n: Tensor, c_all: Tensor, c0: Tensor, state_dtype: torch.dtype, bidirectional: bool) -> Tensor:
    """``c_n`` ``(N, C)`` in ``state_dtype`` (the dtype of the caller's ``c0``).

    The kernels store ``c_n`` in the storage dtype of ``u``. Where the state dtype is wider (float32 ``c0`` with
    float16/bfloat16 ``u``, as under autocast), it is read from ``c_all`` ``(L, N, C)`` (arithmetic dtype; the
    kernels write every step, padded ones too) instead of rounding it to 16 bits: the last step of the forward
    direction, the first of the reverse one; ``c0`` itself for ``L = 0``. Always a new tensor (custom-op outputs
    must not alias).
    """
    if c_n.dtype == state_dtype:
        return c_n
    if c_all.shape[0] == 0:
        return c0.to(state_dtype, copy=True)
    hidden = c_all.shape[2] // (2 if bidirectional else 1)
    last = c_all[-1, :, :hidden]
    if bidirectional:
        last = torch.cat([last, c_all[0, :, hidden:]], dim=1)
    return last.to(state_dtype, copy=True)


def forward_with(
    launch: Launcher,
    u: Tensor,
    x: Tensor | None,
    weight_c: Tensor | None,
    bias: Tensor,
    c0: Tensor,
    mask_pad: Tensor | None,
    drop_mask: Tensor | None,
    bidirectional: bool,
    use_tanh: bool,
    scale_x: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward through ``launch``: returns ``(h (L, N, C), c_n (N, C), c_all (L, N, C) float32|float64)``."""
    length, batch, k, cols = _check(u, x, bidirectional)
    dtype, acc, dev, state_dtype = u.dtype, acc_dtype(u.dtype), u.device, c0.dtype
    u = u.contiguous()
    x = as_dtype(x, dtype)
    weight_c, bias, c0, drop_mask = (as_dtype(t, acc) for t in (weight_c, bias, c0, drop_mask))
    mask_pad = as_dtype(mask_pad, torch.bool)  # one byte per element, 1 = padding
    h = torch.empty((length, batch, cols), dtype=dtype, device=dev)
    c_n = torch.empty((batch, cols), dtype=dtype, device=dev)
    c_all = torch.empty((length, batch, cols), dtype=acc, device=dev)
    total = batch * cols
    if total > 0:
        launch(f"sru_forward_{SUFFIX[dtype]}", total, [
            *ptr_args(u, x, weight_c, bias, c0, mask_pad, drop_mask, h, c_n, c_all),
            Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", k),
            Arg("i32", int(bidirectional)), Arg("i32", int(use_tanh)), acc_arg(scale_x, acc),
        ], dev)
    return h, final_state(c_n, c_all, c0, state_dtype, bidirectional), c_all


def backward_with(
    launch: Launcher,
    grad_h: Tensor,
    grad_c_n: Tensor,
    u: Tensor,
    x: Tensor | None,
    weight_c: Tensor | None,
    bias: Tensor,
    c0: Tensor,
    mask_pad: Tensor | None,
    drop_mask: Tensor | None,
    c_all: Tensor,
    bidirectional: bool,
    use_tanh: bool,
    scale_x: float,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Backward through ``launch``: ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)``, each in the dtype
    of its input (``None`` where the input was ``None``)."""
    length, batch, k, cols = _check(u, x, bidirectional)
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    x_dtype = None if x is None else x.dtype
    wc_dtype = None if weight_c is None else weight_c.dtype
    bias_dtype, c0_dtype = bias.dtype, c0.dtype
    u = u.contiguous()
    x = as_dtype(x, dtype)
    grad_h = grad_h.to(dtype).contiguous()
    grad_c_n, c_all = as_dtype(grad_c_n, acc), as_dtype(c_all, acc)
    weight_c, bias, c0, drop_mask = (as_dtype(t, acc) for t in (weight_c, bias, c0, drop_mask))
    mask_pad = as_dtype(mask_pad, torch.bool)

    grad_u = torch.empty((length, batch, k, cols), dtype=dtype, device=dev)
    grad_x = None if x is None else torch.empty((length, batch, cols), dtype=dtype, device=dev)
    grad_wc_part = None if weight_c is None else torch.empty((2, batch, cols), dtype=acc, device=dev)
    grad_bias_part = torch.empty((2, batch, cols), dtype=acc, device=dev)
    grad_c0 = torch.empty((batch, cols), dtype=acc, device=dev)
    total = batch * cols
    if total > 0:
        launch(f"sru_backward_{SUFFIX[dtype]}", total, [
            *ptr_args(grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all),
            *ptr_args(grad_u, grad_x, grad_wc_part, grad_bias_part, grad_c0),
            Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", k),
            Arg("i32", int(bidirectional)), Arg("i32", int(use_tanh)), acc_arg(scale_x, acc),
        ], dev)
    else:  # nothing to launch: empty outputs, or zero gradients of the (2, 0) parameters
        grad_u.zero_()
        if grad_x is not None:
            grad_x.zero_()
        if grad_wc_part is not None:
            grad_wc_part.zero_()
        grad_bias_part.zero_()
    grad_weight_c = None if grad_wc_part is None else grad_wc_part.sum(1).to(wc_dtype)
    grad_bias = grad_bias_part.sum(1).to(bias_dtype)
    return (grad_u, None if grad_x is None else grad_x.to(x_dtype), grad_weight_c, grad_bias,
            grad_c0.to(c0_dtype))


# ---- the CuPy launcher -------------------------------------------------------------------------------------

_lock = threading.Lock()
# variant = (kernel file, prefetch depth)
_functions: dict[tuple[int, str, tuple, str], Any] = {}  # (device, dtype, variant, kernel) -> RawKernel
_modules: dict[tuple[int, str, tuple], Any] = {}          # (device, dtype, variant) -> RawModule
_sm_count: dict[int, int] = {}


def cuda_include_dirs() -> list[str]:
    """CUDA header folders from pip wheels (``nvidia/cu13/include``, ``nvidia/cuda_runtime/include``...)."""
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    found: list[str] = []
    for root in roots:
        for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cu12/include"):
            p = Path(root) / sub
            if (p / "cuda_fp16.h").is_file() and str(p) not in found:
                found.append(str(p))
    return found


def kernel_code(kernel_file: str = KERNEL_FILE) -> str:
    """The source of ``kernels/<kernel_file>`` with its local ``#include "..."`` headers inlined (except the host
    shim).

    Inlining makes the code text cover every header, so CuPy's on-disk cache (keyed by the code and options,
    not by included files) can never serve a binary built from an older ``sru_step.cuh``.
    """
    seen: set[str] = set()

    def expand(path: Path) -> str:
        out = []
        for line in path.read_text().splitlines():
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and m.group(1) != "host_shim.h":
                name = m.group(1)
                if name not in seen:
                    seen.add(name)
                    out.append(f"// ---- begin {name}")
                    out.append(expand(kernel_dir() / name))
                    out.append(f"// ---- end {name}")
                continue
            out.append(line)
        return "\n".join(out)

    return expand(kernel_source(kernel_file))


def prefetch_depth() -> int | None:
    """The prefetch depth requested by ``$PARRNN_CUDA_PREFETCH`` (1-8), or ``None`` for the kernel default."""
    value = os.environ.get(PREFETCH_ENV)
    if not value:
        return None
    depth = int(value)
    if not 1 <= depth <= 8:
        raise ValueError(f"{PREFETCH_ENV} must be in 1..8, got {value!r}")
    return depth


def nvrtc_options(suffix: str | None = None, prefetch: int | None = None) -> tuple[str, ...]:
    """NVRTC options for :class:`cupy.RawModule`; ``suffix`` restricts the module to one storage dtype,
    ``prefetch`` sets the kernels' PARRNN_PREFETCH."""
    opts = ["-std=c++17", f"-I{kernel_dir()}", *(f"-I{d}" for d in cuda_include_dirs())]
    if suffix is not None:
        opts.append(f"-DPARRNN_ONLY_{suffix.upper()}")
    if prefetch is not None:
        opts.append(f"-DPARRNN_PREFETCH={prefetch}")
    return tuple(opts)


def _import_cupy() -> Any:
    import cupy  # noqa: PLC0415  (lazy: never at parrnn import time)

    return cupy


def _function(device_index: int, suffix: str, name: str, kernel_file: str, prefetch: int | None) -> Any:
    variant = (kernel_file, prefetch)
    key = (device_index, suffix, variant, name)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    cupy = _import_cupy()
    with _lock:
        mkey = (device_index, suffix, variant)
        with cupy.cuda.Device(device_index):
            if mkey in _modules:
                fn = _modules[mkey].get_function(name)
            else:
                # First with the pip CUDA headers on the include path; if that fails (e.g. headers newer than
                # the NVRTC CuPy uses), once more with only the include paths CuPy adds itself.
                errors = []
                own = tuple(o for o in nvrtc_options(suffix, prefetch)
                            if not o.startswith("-I") or o == f"-I{kernel_dir()}")
                for opts in dict.fromkeys([nvrtc_options(suffix, prefetch), own]):
                    module = cupy.RawModule(code=kernel_code(kernel_file), options=opts)
                    try:
                        fn = module.get_function(name)  # compiles (or loads from cache) on this device
                    except Exception as exc:
                        errors.append(f"options {opts}: {type(exc).__name__}: {exc}")
                        continue
                    _modules[mkey] = module
                    break
                else:
                    raise RuntimeError(f"parrnn: compiling CUDA kernel {name} on cuda:{device_index} "
                                       "failed:\n" + "\n".join(errors))
        _functions[key] = fn
        return fn


def launch_config(total: int, sm_count: int) -> tuple[int, int]:
    """``(grid, block)`` for ``total`` independent column threads: blocks shrink (256 -> 64) until there are
    at least two blocks per SM, so small batches still spread over the whole GPU."""
    block = MAX_BLOCK
    while block > 64 and -(-total // block) < 2 * sm_count:
        block //= 2
    return min(-(-total // block), _MAX_GRID), block


def _cupy_args(args: Sequence[Arg]) -> tuple[Any, ...]:
    import numpy as np  # noqa: PLC0415

    conv = {"ptr": np.uint64, "i64": np.int64, "i32": np.int32, "f32": np.float32, "f64": np.float64}
    return tuple(conv[a.kind](a.value) for a in args)


def cupy_launch(kernel_file: str, name: str, total: int, args: Sequence[Arg], device: torch.device,
                prefetch: int | None = None) -> None:
    """Launch kernel ``name`` of ``kernels/<kernel_file>`` (compiled on first use, one module per storage dtype
    and ``prefetch``) with CuPy on ``device`` and torch's current stream of that device."""
    cupy = _import_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    suffix = name.rsplit("_", 1)[1]
    fn = _function(index, suffix, name, kernel_file, prefetch)
    if index not in _sm_count:
        _sm_count[index] = torch.cuda.get_device_properties(index).multi_processor_count
    grid, block = launch_config(total, _sm_count[index])
    stream_ptr = torch.cuda.current_stream(index).cuda_stream
    with cupy.cuda.Device(index), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ExternalStream is deprecated in CuPy 14
        stream = cupy.cuda.ExternalStream(stream_ptr, index)
        with stream:
            fn((grid,), (block,), _cupy_args(args))


def cupy_launcher(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
    """Launch ``name`` of ``kernels/sru_recurrence.cu`` with CuPy (prefetch depth from ``$PARRNN_CUDA_PREFETCH``)."""
    cupy_launch(KERNEL_FILE, name, total, args, device, prefetch_depth())


# ---- the host (CPU) launcher: the same .cu compiled as C++ behind kernels/host_shim.h ----------------------

_CTYPES = {"ptr": ctypes.c_void_p, "i64": ctypes.c_longlong, "i32": ctypes.c_int, "f32": ctypes.c_float,
           "f64": ctypes.c_double}


def host_library(prefetch: int | None = None, kernel_file: str = KERNEL_FILE) -> ctypes.CDLL:
    """``kernels/<kernel_file>`` compiled as C++ behind ``host_shim.h`` (cached on disk as
    ``<stem>_host``)."""
    from parrnn.ops._cbuild import build_library  # noqa: PLC0415

    flags = () if prefetch is None else (f"-DPARRNN_PREFETCH={prefetch}",)
    return build_library(f"{Path(kernel_file).stem}_host", [kernel_source(kernel_file)], flags)


def make_host_launcher(block: int = 128, max_grid: int = _MAX_GRID, prefetch: int | None = None,
                       kernel_file: str = KERNEL_FILE) -> Launcher:
    """A launcher that runs the kernels of ``kernels/<kernel_file>`` on CPU tensors' memory, every
    (block, thread) of the launch in turn.

    ``max_grid`` caps the grid so tests can exercise the kernels' grid-stride loop; ``prefetch`` builds the
    kernels with another PARRNN_PREFETCH depth.
    """
    lib = host_library(prefetch, kernel_file)

    def launch(name: str, total: int, args: Sequence[Arg], device: torch.device) -> None:
        if device.type != "cpu":
            raise ValueError("the host launcher runs kernels on CPU tensors only")
        fn = getattr(lib, f"host_{name}")
        fn.restype = None
        fn.argtypes = [ctypes.c_longlong, ctypes.c_int, *(_CTYPES[a.kind] for a in args)]
        grid = min(-(-total // block), max_grid)
        fn(grid, block, *(a.value for a in args))

    return launch


# ---- the fused backend module contract ---------------------------------------------------------------------

def availability() -> tuple[bool, str]:
    """``(True, description)`` when CuPy and a CUDA GPU are usable, else ``(False, why not)``.

    Compiles nothing (the kernels compile on first use)."""
    try:
        cupy = _import_cupy()
    except Exception as exc:  # ImportError, or a broken CuPy/CUDA install
        return False, (f"CuPy is not importable ({type(exc).__name__}: {exc}); "
                       "install parrnn[cuda] (cupy-cuda13x)")
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no CUDA GPU, no driver, or a CPU-only torch build)"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy cannot reach the CUDA driver ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "CuPy sees no CUDA device"
    try:
        major, minor = cupy.cuda.nvrtc.getVersion()
    except Exception as exc:
        return False, f"NVRTC is not usable by CuPy ({type(exc).__name__}: {exc}); install nvidia-cuda-nvrtc"
    return True, f"CuPy {cupy.__version__}, NVRTC {major}.{minor}, {n} CUDA device(s)"


def _require_cuda(*tensors: Tensor | None) -> None:
    dev = tensors[0].device  # type: ignore[union-attr]
    if dev.type != "cuda":
        raise ValueError(f"parrnn cuda backend needs CUDA tensors, got {dev}")
    for t in tensors[1:]:
        if t is not None and t.device != dev:
            raise ValueError(f"all tensors must be on {dev}, got one on {t.device}")


def forward(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
            mask_pad: Tensor | None, drop_mask: Tensor | None, bidirectional: bool, use_tanh: bool,
            scale_x: float) -> tuple[Tensor, Tensor, Tensor]:
    """Fused CUDA forward: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))`` (see the module docstring)."""
    _require_cuda(u, x, weight_c, bias, c0, mask_pad, drop_mask)
    with torch.cuda.device(u.device):
        return forward_with(cupy_launcher, u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional,
                            use_tanh, scale_x)


def backward(grad_h: Tensor, grad_c_n: Tensor, u: Tensor, x: Tensor | None, weight_c: Tensor | None,
             bias: Tensor, c0: Tensor, mask_pad: Tensor | None, drop_mask: Tensor | None, c_all: Tensor,
             bidirectional: bool, use_tanh: bool,
             scale_x: float) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Fused CUDA backward: ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)`` (module docstring)."""
    _require_cuda(u, grad_h, grad_c_n, x, weight_c, bias, c0, mask_pad, drop_mask, c_all)
    with torch.cuda.device(u.device):
        return backward_with(cupy_launcher, grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask,
                             c_all, bidirectional, use_tanh, scale_x)

"""CUDA backend: the fused SRU kernels of ``kernels/sru_recurrence.cu`` launched through CuPy.

Implements the *fused backend module* contract of `parrnn.ops.dispatch` (``availability``,
``forward``, ``backward``). Nothing here touches CUDA at import time: CuPy is imported and the kernels are
compiled (NVRTC, through ``cupy.RawModule``) by ``availability(device, dtype)`` (available = compiled and loaded
for that device and dtype), once per (device, storage dtype, variant), and CuPy's on-disk cache keeps the
binaries between processes. Kernels run on torch's current stream of the
tensors' own device (a model on ``cuda:1`` works), outputs are allocated by torch, inputs are made contiguous
and passed by data pointer.

Shapes (``L`` length, ``N`` batch, ``K`` 3 or 4, ``C`` columns = directions * hidden), as in
`parrnn.ops.reference`:

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

import ctypes
import os
import re
import site
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from parrnn._paths import kernel_dir, kernel_source
from parrnn.ops.glue import (
    SUFFIX,
    Arg,
    Launcher,
    acc_arg,
    acc_dtype,
    final_state,
    gpu_operands,
    ptr_args,
    require_device,
    validate,
)

KERNEL_FILE = "sru_recurrence.cu"
#: The kernels of ``kernels/sru_recurrence.cu``, without the dtype suffix.
KERNELS = ("sru_forward", "sru_backward")
#: Environment variable overriding the kernels' prefetch depth (steps of loads in flight; PARRNN_PREFETCH).
PREFETCH_ENV = "PARRNN_CUDA_PREFETCH"
MAX_BLOCK = 256  # the kernels' __launch_bounds__
_MAX_GRID = 2**31 - 1  # the kernels use a grid-stride loop beyond this


class KernelCompileError(RuntimeError):
    """NVRTC could not compile (or CuPy could not load) a kernel module; the message carries the NVRTC log."""


# ---- the glue: argument list, dtypes, outputs (any launcher) -----------------------------------------------

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
    length, batch, k, cols = validate(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional,
                                      backend="cuda")
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    ops = gpu_operands(u, x, weight_c, bias, c0, mask_pad, drop_mask)  # mask_pad: one byte, 1 = padding
    h = torch.empty((length, batch, cols), dtype=dtype, device=dev)
    c_n = torch.empty((batch, cols), dtype=dtype, device=dev)
    c_all = torch.empty((length, batch, cols), dtype=acc, device=dev)
    total = batch * cols
    if total > 0:
        launch(f"sru_forward_{SUFFIX[dtype]}", total, [
            *ptr_args(ops.u, ops.x, ops.weight_c, ops.bias, ops.c0, ops.mask_pad, ops.drop_mask, h, c_n, c_all),
            Arg("i64", length), Arg("i64", batch), Arg("i64", cols), Arg("i32", k),
            Arg("i32", int(bidirectional)), Arg("i32", int(use_tanh)), acc_arg(scale_x, acc),
        ], dev)
    return h, final_state(c_n, c_all, ops.c0, c0.dtype, bidirectional), c_all


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
    length, batch, k, cols = validate(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, grad_h=grad_h,
                                      grad_c_n=grad_c_n, c_all=c_all, backend="cuda")
    dtype, acc, dev = u.dtype, acc_dtype(u.dtype), u.device
    ops = gpu_operands(u, x, weight_c, bias, c0, mask_pad, drop_mask, grad_h=grad_h, grad_c_n=grad_c_n,
                       c_all=c_all)
    grad_u = torch.empty((length, batch, k, cols), dtype=dtype, device=dev)
    grad_x = None if x is None else torch.empty((length, batch, cols), dtype=dtype, device=dev)
    grad_wc_part = None if weight_c is None else torch.empty((2, batch, cols), dtype=acc, device=dev)
    grad_bias_part = torch.empty((2, batch, cols), dtype=acc, device=dev)
    grad_c0 = torch.empty((batch, cols), dtype=acc, device=dev)
    total = batch * cols
    if total > 0:
        launch(f"sru_backward_{SUFFIX[dtype]}", total, [
            *ptr_args(ops.grad_h, ops.grad_c_n, ops.u, ops.x, ops.weight_c, ops.bias, ops.c0, ops.mask_pad,
                      ops.drop_mask, ops.c_all),
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
    grad_weight_c = None if grad_wc_part is None else grad_wc_part.sum(1).to(weight_c.dtype)  # type: ignore[union-attr]
    grad_bias = grad_bias_part.sum(1).to(bias.dtype)
    return (grad_u, None if grad_x is None else grad_x.to(x.dtype), grad_weight_c, grad_bias,  # type: ignore[union-attr]
            grad_c0.to(c0.dtype))


# ---- the CuPy launcher -------------------------------------------------------------------------------------

_lock = threading.Lock()
# variant = (kernel file, prefetch depth)
_modules: dict[tuple[int, str, tuple], Any] = {}         # (device, dtype suffix, variant) -> RawModule
_functions: dict[tuple[int, str, tuple, str], Any] = {}  # (device, dtype suffix, variant, kernel) -> RawKernel
_streams: dict[tuple[int, int], Any] = {}                # (device, torch stream handle) -> cupy ExternalStream
_sm_count: dict[int, int] = {}
#: ``nvidia/<dir>/include`` folders of the pip CUDA headers, per NVRTC major version (other versions: all).
_HEADER_DIRS = {13: ("cu13",), 12: ("cuda_runtime", "cu12")}


def cuda_include_dirs(nvrtc_major: int | None = None) -> list[str]:
    """CUDA header folders from pip wheels that match NVRTC ``nvrtc_major`` (``nvidia/cu13/include`` for 13,
    ``nvidia/cuda_runtime/include`` or ``nvidia/cu12/include`` for 12; every one found for ``None``)."""
    subs = _HEADER_DIRS.get(nvrtc_major, ("cu13", "cuda_runtime", "cu12"))
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    found: list[str] = []
    for root in roots:
        for sub in subs:
            p = Path(root) / "nvidia" / sub / "include"
            if (p / "cuda_fp16.h").is_file() and str(p) not in found:
                found.append(str(p))
    return found


def kernel_code(kernel_file: str = KERNEL_FILE) -> str:
    """The source of ``kernels/<kernel_file>`` with its local ``#include "..."`` headers inlined (except the host
    shim), with ``#line`` markers so that NVRTC's messages name the real file and line.

    Inlining makes the code text cover every header, so CuPy's on-disk cache (keyed by the code and options,
    not by included files) can never serve a binary built from an older ``sru_step.cuh``.
    """
    seen: set[str] = set()

    def expand(path: Path) -> str:
        out = [f'#line 1 "{path.name}"']
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and m.group(1) != "host_shim.h":
                name = m.group(1)
                if name not in seen:
                    seen.add(name)
                    out.append(expand(kernel_dir() / name))
                out.append(f'#line {number + 1} "{path.name}"')
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


def nvrtc_options(suffix: str | None = None, prefetch: int | None = None,
                  nvrtc_major: int | None = None) -> tuple[str, ...]:
    """NVRTC options: the pip CUDA headers for NVRTC ``nvrtc_major``; ``suffix`` restricts the module to one storage
    dtype, ``prefetch`` sets the kernels' PARRNN_PREFETCH. No ``-I`` of the kernel folder: the local headers are
    inlined by `kernel_code`, so the options do not depend on the install path."""
    opts = ["-std=c++17", *(f"-I{d}" for d in cuda_include_dirs(nvrtc_major))]
    if suffix is not None:
        opts.append(f"-DPARRNN_ONLY_{suffix.upper()}")
    if prefetch is not None:
        opts.append(f"-DPARRNN_PREFETCH={prefetch}")
    return tuple(opts)


def _import_cupy() -> Any:
    import cupy  # noqa: PLC0415  (lazy: never at parrnn import time)

    return cupy


def _nvrtc_major(cupy: Any) -> int | None:
    try:
        return int(cupy.cuda.nvrtc.getVersion()[0])
    except Exception:
        return None


def load_kernels(device_index: int, suffix: str, kernel_file: str = KERNEL_FILE, prefetch: int | None = None,
                 names: Sequence[str] = KERNELS) -> dict[str, Any]:
    """Compile (NVRTC, through ``cupy.RawModule``) and load the kernels ``<name>_<suffix>`` of
    ``kernels/<kernel_file>`` on ``cuda:<device_index>``: ``{name: RawKernel}``. Cached per (device, dtype, file,
    prefetch); CuPy's disk cache keeps the binaries between processes.

    Raises `KernelCompileError` with the NVRTC log when no option set compiles.
    """
    variant = (kernel_file, prefetch)
    mkey = (device_index, suffix, variant)
    cupy = _import_cupy()
    with _lock, cupy.cuda.Device(device_index):
        module = _modules.get(mkey)
        errors = []
        if module is None:
            # First with the pip CUDA headers that match CuPy's NVRTC on the include path; if that fails, once
            # more with only the include paths CuPy adds itself.
            full = nvrtc_options(suffix, prefetch, _nvrtc_major(cupy))
            own = tuple(o for o in full if not o.startswith("-I"))
            code = kernel_code(kernel_file)
            for opts in dict.fromkeys([full, own]):
                candidate = cupy.RawModule(code=code, options=opts)
                try:  # get_function compiles (or loads from CuPy's disk cache) and loads on this device
                    for name in names:
                        _functions[(*mkey, name)] = candidate.get_function(f"{name}_{suffix}")
                except Exception as exc:
                    errors.append(f"options {' '.join(opts)}:\n{type(exc).__name__}: {exc}")
                    continue
                module = _modules[mkey] = candidate
                break
            else:
                raise KernelCompileError(f"parrnn: compiling kernels/{kernel_file} ({suffix}) on "
                                         f"cuda:{device_index} failed:\n" + "\n".join(errors))
        try:
            for name in names:
                if (*mkey, name) not in _functions:
                    _functions[(*mkey, name)] = module.get_function(f"{name}_{suffix}")
        except Exception as exc:
            raise KernelCompileError(f"parrnn: loading {name}_{suffix} of kernels/{kernel_file} on "
                                     f"cuda:{device_index} failed: {type(exc).__name__}: {exc}") from exc
        return {name: _functions[(*mkey, name)] for name in names}


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


def _torch_stream(index: int) -> int:
    """The handle of torch's current stream on ``cuda:<index>``."""
    return torch.cuda.current_stream(index).cuda_stream


def _multiprocessor_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _stream(cupy: Any, index: int, handle: int) -> Any:
    """One ``cupy.cuda.ExternalStream`` per (device, torch stream), created once (ExternalStream is deprecated in
    CuPy 14; its warning is silenced here, not at every launch)."""
    key = (index, handle)
    stream = _streams.get(key)
    if stream is None:
        with _lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            stream = _streams.setdefault(key, cupy.cuda.ExternalStream(handle, index))
    return stream


def cupy_launch(kernel_file: str, name: str, total: int, args: Sequence[Arg], device: torch.device,
                prefetch: int | None = None) -> None:
    """Launch kernel ``name`` of ``kernels/<kernel_file>`` (compiled on first use, one module per storage dtype
    and ``prefetch``) with CuPy on ``device`` and torch's current stream of that device.

    The caller makes ``device`` the current CUDA device (``forward``/``backward`` run under
    ``torch.cuda.device``), so CuPy picks the kernel loaded on it.
    """
    cupy = _import_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    base, suffix = name.rsplit("_", 1)
    fn = _functions.get((index, suffix, (kernel_file, prefetch), base))
    if fn is None:
        fn = load_kernels(index, suffix, kernel_file, prefetch, (base,))[base]
    if index not in _sm_count:
        _sm_count[index] = _multiprocessor_count(index)
    grid, block = launch_config(total, _sm_count[index])
    with _stream(cupy, index, _torch_stream(index)):
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
    from parrnn.ops.build import build_library  # noqa: PLC0415

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

def _base_availability() -> tuple[bool, str]:
    """Whether CuPy, a CUDA device and NVRTC are usable (compiles nothing)."""
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


def availability(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 kernel_file: str = KERNEL_FILE, names: Sequence[str] = KERNELS) -> tuple[bool, str]:
    """``(True, description)`` when the kernels of ``kernels/<kernel_file>`` are compiled and loaded for
    ``device`` (default: the current CUDA device) and storage ``dtype``, else ``(False, why not)``; a failed
    compilation's reason carries the NVRTC log.

    The first call per (device, dtype) compiles (seconds; CuPy caches the binary on disk)."""
    ok, why = _base_availability()
    if not ok:
        return ok, why
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        return False, f"the CUDA kernels run on CUDA devices, not {dev}"
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if dtype not in SUFFIX:
        return False, f"no CUDA kernel for dtype {dtype}"
    try:
        load_kernels(index, SUFFIX[dtype], kernel_file, prefetch_depth() if kernel_file == KERNEL_FILE else None,
                     names)
    except Exception as exc:
        return False, str(exc)
    return True, f"{why}; kernels/{kernel_file} compiled for cuda:{index} ({SUFFIX[dtype]})"


def forward(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
            mask_pad: Tensor | None, drop_mask: Tensor | None, bidirectional: bool, use_tanh: bool,
            scale_x: float) -> tuple[Tensor, Tensor, Tensor]:
    """Fused CUDA forward: ``(h (L, N, C), c_n (N, C), c_all (L, N, C))`` (see the module docstring)."""
    require_device(u.device, ("cuda",), "cuda")
    with torch.cuda.device(u.device):
        return forward_with(cupy_launcher, u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional,
                            use_tanh, scale_x)


def backward(grad_h: Tensor, grad_c_n: Tensor, u: Tensor, x: Tensor | None, weight_c: Tensor | None,
             bias: Tensor, c0: Tensor, mask_pad: Tensor | None, drop_mask: Tensor | None, c_all: Tensor,
             bidirectional: bool, use_tanh: bool,
             scale_x: float) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Fused CUDA backward: ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)`` (module docstring)."""
    require_device(u.device, ("cuda",), "cuda")
    with torch.cuda.device(u.device):
        return backward_with(cupy_launcher, grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask,
                             c_all, bidirectional, use_tanh, scale_x)

"""Running compiled kernels on a GPU through CuPy, for every op: compile lazily (NVRTC, through
``cupy.RawModule``; never at import), cache one module per (device, storage dtype, kernel file, variant), and
launch on torch's current stream of the tensors' own device. What to compile comes from
`parrnn.ops.cuda_toolchain`; the arguments from `parrnn.ops.launch`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from parrnn.ops.cuda_toolchain import kernel_code, nvrtc_options
from parrnn.ops.launch import SUFFIX, Arg

MAX_BLOCK = 256  # the kernels' __launch_bounds__
MAX_GRID = 2**31 - 1  # the kernels use a grid-stride loop beyond this

_lock = threading.Lock()
# variant = (kernel file, prefetch depth)


_modules: dict[tuple[int, str, tuple], Any] = {}         # (device, dtype suffix, variant) -> RawModule


_functions: dict[tuple[int, str, tuple, str], Any] = {}  # (device, dtype suffix, variant, kernel) -> RawKernel


_streams: dict[tuple[int, int], Any] = {}                # (device, torch stream handle) -> cupy ExternalStream


_sm_count: dict[int, int] = {}
#: ``nvidia/<dir>/include`` folders of the pip CUDA headers, per NVRTC major version (other versions: all).


class KernelCompileError(RuntimeError):
    """NVRTC could not compile (or CuPy could not load) a kernel module; the message carries the NVRTC log."""


# ---- the glue: argument list, dtypes, outputs (any launcher) -----------------------------------------------


def _import_cupy() -> Any:
    import cupy  # noqa: PLC0415  (lazy: never at parrnn import time)

    return cupy


def _nvrtc_major(cupy: Any) -> int | None:
    try:
        return int(cupy.cuda.nvrtc.getVersion()[0])
    except Exception:
        return None


def load_kernels(device_index: int, suffix: str, kernel_file: str, prefetch: int | None,
                 names: Sequence[str]) -> dict[str, Any]:
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
    return min(-(-total // block), MAX_GRID), block


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


def base_availability() -> tuple[bool, str]:
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


def kernel_availability(device: torch.device | str | None, dtype: torch.dtype, kernel_file: str,
                        names: Sequence[str], prefetch: int | None = None) -> tuple[bool, str]:
    """``(True, description)`` when the kernels ``names`` of ``kernels/<kernel_file>`` are compiled and loaded for
    ``device`` (default: the current CUDA device) and storage ``dtype``, else ``(False, why not)``; a failed
    compilation's reason carries the NVRTC log.

    The first call per (device, dtype) compiles (seconds; CuPy caches the binary on disk)."""
    ok, why = base_availability()
    if not ok:
        return ok, why
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        return False, f"the CUDA kernels run on CUDA devices, not {dev}"
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if dtype not in SUFFIX:
        return False, f"no CUDA kernel for dtype {dtype}"
    try:
        load_kernels(index, SUFFIX[dtype], kernel_file, prefetch, names)
    except Exception as exc:
        return False, str(exc)
    return True, f"{why}; kernels/{kernel_file} compiled for cuda:{index} ({SUFFIX[dtype]})"


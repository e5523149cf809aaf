"""What every op's compiled kernels share, however they are launched: the storage-dtype table and the
arithmetic dtype, pointers, and a kernel's argument list (`Arg`) handed to a *launcher* -- CuPy on a GPU
(`parrnn.ops.cuda_runtime.cupy_launch`), or the host build of the same ``.cu`` in the CPU tests
(`parrnn.ops.host_launcher.make_host_launcher`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Storage dtypes of the fused kernels and the suffix of their C/CUDA function names.
SUFFIX: dict[torch.dtype, str] = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16",
                                  torch.bfloat16: "bf16"}
#: The suffixes, in the order of `SUFFIX`.
DTYPE_SUFFIXES: tuple[str, ...] = tuple(SUFFIX.values())


def dtype_suffix(dtype: torch.dtype) -> str:
    """The kernels' function-name suffix for storage ``dtype`` (``f32``, ``f64``, ``f16``, ``bf16``)."""
    if dtype not in SUFFIX:
        raise TypeError(f"unsupported dtype {dtype}; supported: {', '.join(str(d) for d in SUFFIX)}")
    return SUFFIX[dtype]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic dtype for storage ``dtype``: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_dtype(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` converted to ``dtype`` and made contiguous (``None`` stays ``None``; ``t`` itself when it already is)."""
    if t is None:
        return None
    return (t if t.dtype == dtype else t.to(dtype)).contiguous()


def ptr(t: Tensor | None) -> int:
    """The data pointer of ``t`` (``0``, a null pointer, for ``None``)."""
    return 0 if t is None else t.data_ptr()


def require_device(device: torch.device, kinds: Sequence[str], backend: str) -> None:
    """``ValueError`` unless ``device.type`` is one of ``kinds``."""
    if device.type not in kinds:
        raise ValueError(f"parrnn {backend} backend runs on {' or '.join(kinds)} tensors, got {device}")


@dataclass(frozen=True)
class Arg:
    """One kernel argument: ``kind`` is ``"ptr"``, ``"i64"``, ``"i32"``, ``"f32"`` or ``"f64"``."""

    kind: str
    value: int | float


def ptr_arg(t: Tensor | None) -> Arg:
    """A pointer argument (``0`` for ``None``)."""
    return Arg("ptr", ptr(t))


def ptr_args(*tensors: Tensor | None) -> list[Arg]:
    """`ptr_arg` of each tensor."""
    return [ptr_arg(t) for t in tensors]


def acc_arg(value: float, acc: torch.dtype) -> Arg:
    """A scalar argument in the arithmetic dtype ``acc``."""
    return Arg("f64" if acc == torch.float64 else "f32", float(value))


#: A launcher runs ``kernel_name`` over ``total`` threads (one per column) with ``args`` on ``device``:
#: CuPy on a GPU (`parrnn.ops.cuda_runtime.cupy_launch`), the host build of the same ``.cu`` in CPU tests.
Launcher = Callable[[str, int, Sequence[Arg], torch.device], None]

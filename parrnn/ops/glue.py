"""What the fused backends (``cpu``, ``cuda``, ``scan``) share: the dtype table, the validation of every recurrence
argument, dtype conversions, pointers, and the kernel argument list.

Shapes are those of [parrnn.ops.reference.sru_recurrence][] (``L`` steps, ``N`` batch, ``K`` = 3 or 4,
``C`` columns = directions * hidden):

* ``u (L, N, K, C)``, ``x (L, N, C) | None`` (``None`` when ``K = 4``), ``weight_c (2, C) | None``,
  ``bias (2, C)``, ``c0 (N, C)``, ``mask_pad (L, N) | None``, ``drop_mask (N, C) | None``;
* backward only: ``grad_h (L, N, C)``, ``grad_c_n (N, C)``, ``c_all (L, N, C)``.

[validate][parrnn.ops.glue.validate] checks all of them before any kernel runs (a wrong shape would make a kernel
read out of bounds); the public `parrnn.ops.sru_recurrence` and every backend call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

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


class GpuOperands(NamedTuple):
    """The recurrence's tensors as the CUDA kernels (sequential and scan) read them: ``u``, ``x`` and
    ``grad_h`` contiguous in ``u``'s storage dtype; ``weight_c``, ``bias``, ``c0``, ``drop_mask``, ``grad_c_n``
    and ``c_all`` contiguous in the arithmetic dtype (`acc_dtype`); ``mask_pad`` bool. The backward-only
    tensors are ``None`` for a forward."""

    u: Tensor
    x: Tensor | None
    weight_c: Tensor | None
    bias: Tensor
    c0: Tensor
    mask_pad: Tensor | None
    drop_mask: Tensor | None
    grad_h: Tensor | None = None
    grad_c_n: Tensor | None = None
    c_all: Tensor | None = None


def gpu_operands(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
                 mask_pad: Tensor | None, drop_mask: Tensor | None, *, grad_h: Tensor | None = None,
                 grad_c_n: Tensor | None = None, c_all: Tensor | None = None) -> GpuOperands:
    """Validated arguments converted for the CUDA kernels (see `GpuOperands`)."""
    dtype, acc = u.dtype, acc_dtype(u.dtype)
    return GpuOperands(
        u.contiguous(), as_dtype(x, dtype), as_dtype(weight_c, acc), as_dtype(bias, acc),  # type: ignore[arg-type]
        as_dtype(c0, acc), as_dtype(mask_pad, torch.bool), as_dtype(drop_mask, acc),  # type: ignore[arg-type]
        as_dtype(grad_h, dtype), as_dtype(grad_c_n, acc), as_dtype(c_all, acc))


def ptr(t: Tensor | None) -> int:
    """The data pointer of ``t`` (``0``, a null pointer, for ``None``)."""
    return 0 if t is None else t.data_ptr()


# ---- validation ---------------------------------------------------------------------------------------------------

def validate(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
             mask_pad: Tensor | None, drop_mask: Tensor | None, bidirectional: bool, *,
             grad_h: Tensor | None = None, grad_c_n: Tensor | None = None, c_all: Tensor | None = None,
             backend: str | None = None, check_dtype: bool = True) -> tuple[int, int, int, int]:
    """Check every recurrence argument; returns ``(L, N, K, C)``.

    Raises ``ValueError`` naming the argument for a wrong shape or a tensor on another device than ``u``, and
    ``TypeError`` for a storage dtype the kernels lack (``check_dtype``; the reference takes any float dtype).
    ``backend`` prefixes the messages (``"parrnn cuda backend: ..."``).
    """
    prefix = f"parrnn {backend} backend: " if backend else ""
    if not isinstance(u, Tensor) or u.dim() != 4 or u.shape[2] not in (3, 4):
        got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"{prefix}u must have shape (L, N, K, C) with K = 3 or 4, got {got}")
    if check_dtype and u.dtype not in SUFFIX:
        raise TypeError(f"{prefix}u has dtype {u.dtype}; supported dtypes are "
                        f"{', '.join(str(d) for d in SUFFIX)}")
    length, batch, k, cols = map(int, u.shape)
    if bidirectional and cols % 2:
        raise ValueError(f"{prefix}bidirectional needs an even number of columns, got C = {cols}")
    if k == 4 and x is not None:
        raise ValueError(f"{prefix}x must be None when u has K = 4 (the 4th projection is the highway input)")
    state, seq = (batch, cols), (length, batch, cols)
    for name, t, shape in (("bias", bias, (2, cols)), ("c0", c0, state)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{prefix}{name} must be a tensor of shape {shape}, got {type(t).__name__}")
    # the per-call path (every layer, every step of a streaming model): only the given tensors are looked at
    device = u.device
    for name, t, shape in (("x", x, seq), ("weight_c", weight_c, (2, cols)), ("bias", bias, (2, cols)),
                           ("c0", c0, state), ("mask_pad", mask_pad, (length, batch)), ("drop_mask", drop_mask, state),
                           ("grad_h", grad_h, seq), ("grad_c_n", grad_c_n, state), ("c_all", c_all, seq)):
        if t is None:
            continue
        if t.shape != shape:
            raise ValueError(f"{prefix}{name} must have shape {shape}, got {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"{prefix}{name} must be on u's device {device}, got {t.device}")
    return length, batch, k, cols


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


def require_device(device: torch.device, kinds: Sequence[str], backend: str) -> None:
    """``ValueError`` unless ``device.type`` is one of ``kinds``."""
    if device.type not in kinds:
        raise ValueError(f"parrnn {backend} backend runs on {' or '.join(kinds)} tensors, got {device}")


# ---- kernel arguments ---------------------------------------------------------------------------------------------

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
#: CuPy on a GPU (`parrnn.ops.cuda.cupy_launcher`), the host build of the same ``.cu`` in CPU tests.
Launcher = Callable[[str, int, Sequence[Arg], torch.device], None]

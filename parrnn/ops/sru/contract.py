"""The SRU recurrence's contract, shared by every backend: the validation of every argument (`validate`), the
operands as the CUDA kernels read them (`gpu_operands`) and the final state's dtype (`final_state`).

Shapes are those of [parrnn.ops.sru.reference.sru_recurrence][] (``L`` steps, ``N`` batch, ``K`` = 3 or 4,
``C`` columns = directions * hidden):

* ``u (L, N, K, C)``, ``x (L, N, C) | None`` (``None`` when ``K = 4``), ``weight_c (2, C) | None``,
  ``bias (2, C)``, ``c0 (N, C)``, ``mask_pad (L, N) | None``, ``drop_mask (N, C) | None``;
* backward only: ``grad_h (L, N, C)``, ``grad_c_n (N, C)``, ``c_all (L, N, C)``.

[validate][parrnn.ops.sru.contract.validate] checks all of them before any kernel runs (a wrong shape would make a
kernel
read out of bounds); the public `parrnn.ops.sru_recurrence` and every backend call it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from parrnn.ops.launch import SUFFIX, acc_dtype, as_dtype


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

"""The SRU recurrence's contract, shared by every backend: its inputs as one structure (`RecurrenceArgs`), their
validation (`validate`), the operands as the CUDA kernels read them (`gpu_operands`, `gpu_gradients`) and the final
state's dtype (`final_state`).

Every backend takes the same `RecurrenceArgs` (``forward(args) -> (h, c_n, c_all)``,
``backward(args, grad_h, grad_c_n, c_all) -> (grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)``). Shapes are
those of [parrnn.ops.sru.reference.sru_recurrence][] (``L`` steps, ``N`` batch, ``K`` = 3 or 4, ``C`` columns =
directions * hidden); the backward adds ``grad_h (L, N, C)``, ``grad_c_n (N, C)`` and the forward's
``c_all (L, N, C)``.

[validate][parrnn.ops.sru.contract.validate] checks all of them before any kernel runs (a wrong shape would make a
kernel read out of bounds): `parrnn.ops.sru_recurrence` once per call (then calls a backend's
``forward_validated``), every backend's public ``forward``/``backward`` on a direct call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from parrnn.ops.launch import SUFFIX, acc_dtype, as_dtype


class RecurrenceArgs(NamedTuple):
    """The inputs of one SRU recurrence, as every backend takes them (shapes and equations:
    [parrnn.ops.sru.reference][parrnn.ops.sru.reference.sru_recurrence]):

    * ``u (L, N, K, C)``: the projections, ``K = 3`` (candidate, forget, reset) or ``K = 4`` (+ highway input);
    * ``x (L, N, C) | None``: the highway input for ``K = 3`` (``None``: no highway; must be ``None`` for ``K = 4``);
    * ``weight_c (2, C) | None``: the peephole weights ``(v_f, v_r)``, ``None`` for the linear (v1) recurrence;
    * ``bias (2, C)``: the gate biases ``(b_f, b_r)``;
    * ``c0 (N, C)``: the initial state (its dtype is the state dtype of ``c_n``);
    * ``mask_pad (L, N) bool | None``: ``True`` on padding (state carried, ``h = 0``);
    * ``drop_mask (N, C) | None``: the highway dropout mask, already scaled;
    * ``bidirectional``: columns ``C/2..C`` run backwards in time; ``use_tanh``: ``g = tanh``;
      ``scale_x``: the factor on ``x``.

    A plain tuple in this order: ``RecurrenceArgs(*flat)`` packs, ``tuple(args)`` unpacks (the custom op's flat
    schema).
    """

    u: Tensor
    x: Tensor | None
    weight_c: Tensor | None
    bias: Tensor
    c0: Tensor
    mask_pad: Tensor | None
    drop_mask: Tensor | None
    bidirectional: bool = False
    use_tanh: bool = False
    scale_x: float = 1.0


def gpu_operands(args: RecurrenceArgs) -> RecurrenceArgs:
    """Validated ``args`` as the CUDA kernels (sequential and scan) read them: ``u`` and ``x`` contiguous in ``u``'s
    storage dtype; ``weight_c``, ``bias``, ``c0`` and ``drop_mask`` contiguous in the arithmetic dtype
    (`acc_dtype`); ``mask_pad`` bool (one byte, 1 = padding)."""
    u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x = args
    dtype, acc = u.dtype, acc_dtype(u.dtype)
    return RecurrenceArgs(u.contiguous(), as_dtype(x, dtype), as_dtype(weight_c, acc), as_dtype(bias, acc),  # type: ignore[arg-type]
                          as_dtype(c0, acc), as_dtype(mask_pad, torch.bool), as_dtype(drop_mask, acc),  # type: ignore[arg-type]
                          bidirectional, use_tanh, scale_x)


def gpu_gradients(dtype: torch.dtype, grad_h: Tensor, grad_c_n: Tensor,
                  c_all: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A backward's validated ``(grad_h, grad_c_n, c_all)`` as the CUDA kernels read them, for storage ``dtype``:
    ``grad_h`` in ``dtype``, ``grad_c_n`` and ``c_all`` in the arithmetic dtype, all contiguous."""
    acc = acc_dtype(dtype)
    return as_dtype(grad_h, dtype), as_dtype(grad_c_n, acc), as_dtype(c_all, acc)  # type: ignore[return-value]


# ---- validation ---------------------------------------------------------------------------------------------------

def validate(args: RecurrenceArgs, *, grad_h: Tensor | None = None, grad_c_n: Tensor | None = None,
             c_all: Tensor | None = None, backend: str | None = None,
             check_dtype: bool = True) -> tuple[int, int, int, int]:
    """Check every recurrence argument (``args`` and, for a backward, ``grad_h``, ``grad_c_n``, ``c_all``);
    returns ``(L, N, K, C)``.

    Raises ``ValueError`` naming the argument for a wrong shape or a tensor on another device than ``u``, and
    ``TypeError`` for a storage dtype the kernels lack (``check_dtype``; the reference takes any float dtype).
    ``backend`` prefixes the messages (``"parrnn cuda backend: ..."``).
    """
    u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, _, _ = args
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


def require_linear(args: RecurrenceArgs) -> None:
    """``ValueError`` unless ``args`` is the linear (v1) recurrence (``weight_c=None``), the one the scan runs."""
    if args.weight_c is not None:
        raise ValueError("the scan backend needs the linear recurrence (weight_c=None, version='v1'); "
                         "the v2 peephole makes f_t depend on c_{t-1}")


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

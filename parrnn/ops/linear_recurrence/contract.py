"""The argument contract of `linear_recurrence`, checked once for every backend.

Shapes (``L`` sequence length, ``N`` batch, ``C`` columns): ``a``, ``b`` ``(L, N, C)``; ``h0`` ``(N, C)`` or
``None``; ``lengths`` ``(N,)`` integers in ``[1, L]`` or ``None``; ``mask`` ``(L, N)`` bool, ``True`` on padded
steps (a suffix of each sequence), or ``None``. [validate][parrnn.ops.linear_recurrence.contract.validate]
raises ``ValueError``/``TypeError`` naming the argument and returns [Operands][parrnn.ops.linear_recurrence.
contract.Operands], where a mask has become lengths: every backend sees only ``lengths``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from parrnn._validation import lengths_to_tensor, mask_to_lengths

#: Storage dtypes every backend takes (the state is float32, float64 for float64 storage).
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
#: Backend words: ``sequential`` and ``scan`` run the kernel of the tensors' device (CPU or CUDA).
BACKENDS = ("reference", "sequential", "scan")


class Operands(NamedTuple):
    """Validated arguments: ``a``, ``b`` ``(L, N, C)`` as given; ``h0`` ``(N, C)`` or ``None``; ``lengths``
    ``(N,)`` int64 on ``a``'s device or ``None`` (no padding); ``state_dtype`` the dtype of the returned ``h_n``
    (``h0``'s, else ``a``'s)."""

    a: Tensor
    b: Tensor
    h0: Tensor | None
    lengths: Tensor | None
    state_dtype: torch.dtype


def state_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic (state) dtype for storage ``dtype``: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_backend(backend: str) -> None:
    """``ValueError`` unless ``backend`` is ``"auto"`` or one of `BACKENDS`."""
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")


def validate(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
             mask: Tensor | None = None, reverse: bool = False) -> Operands:
    """Check every argument of `linear_recurrence` (see the module docstring); return `Operands`."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (L, N, C), got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {t.dtype}")
    if b.shape != a.shape:
        raise ValueError(f"b must have a's shape {tuple(a.shape)}, got {tuple(b.shape)}")
    if b.dtype != a.dtype:
        raise TypeError(f"b dtype must match a's. Expected {a.dtype}, got {b.dtype}")
    if b.device != a.device:
        raise ValueError(f"b must be on a's device {a.device}, got {b.device}")
    length, batch, cols = a.shape
    if length == 0 or batch == 0:
        raise ValueError(f"a must have at least one step and one sequence, got shape {tuple(a.shape)}")
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    state_dtype = a.dtype
    if h0 is not None:
        if not isinstance(h0, Tensor):
            raise TypeError(f"h0 must be a torch.Tensor or None, got {type(h0).__name__}")
        if tuple(h0.shape) != (batch, cols):
            raise ValueError(f"h0 must have shape (N, C) = {(batch, cols)}, got {tuple(h0.shape)}")
        if h0.dtype not in (a.dtype, state_dtype_for(a.dtype)):
            raise TypeError(f"h0 dtype must be a's dtype {a.dtype} or the state dtype {state_dtype_for(a.dtype)}, "
                            f"got {h0.dtype}")
        if h0.device != a.device:
            raise ValueError(f"h0 must be on a's device {a.device}, got {h0.device}")
        state_dtype = h0.dtype
    if lengths is not None and mask is not None:
        raise ValueError("pass lengths or mask, not both")
    if mask is not None:
        lengths = _mask_to_lengths(mask, length, batch, a.device)
    elif lengths is not None:
        lengths = lengths_to_tensor(lengths, batch, length, a.device)
    if lengths is not None:
        lengths = lengths.contiguous()  # the kernels read it by pointer
    return Operands(a, b, h0, lengths, state_dtype)


def _mask_to_lengths(mask: Tensor, length: int, batch: int, device: torch.device) -> Tensor:
    """``(N,)`` lengths of a padding ``mask`` ``(L, N)`` (bool, ``True`` on padding, which must be a suffix)."""
    if isinstance(mask, Tensor) and mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True on padded steps), got {mask.dtype}")
    return mask_to_lengths(mask, length, batch, device, batch_first=False)

"""Input checks shared by the layers: every bad input gets a ValueError/TypeError naming the argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_sequence_input(input: Tensor, input_size: int, batch_first: bool, name: str = "input") -> None:
    """``input`` must be a floating tensor ``(L, N, input_size)`` (``(N, L, input_size)`` with batch_first)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    layout = "(N, L, input_size)" if batch_first else "(L, N, input_size)"
    if input.dim() != 3:
        raise ValueError(f"{name} must be 3-D {layout}, got shape {tuple(input.shape)}")
    if input.size(-1) != input_size:
        raise ValueError(f"{name}.size(-1) must be equal to input_size. Expected {input_size}, got {input.size(-1)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {input.dtype}")
    length, batch = (input.size(1), input.size(0)) if batch_first else (input.size(0), input.size(1))
    if length == 0:
        raise ValueError(f"{name} has sequence length 0; expected at least one time step")
    if batch == 0:
        raise ValueError(f"{name} has batch size 0 (empty batch); expected at least one sequence")


def check_state(state: Tensor, expected_shape: Sequence[int], like: Tensor, name: str, *,
                any_float: bool = False) -> None:
    """An initial state must match ``expected_shape``, ``like``'s device and ``like``'s dtype (or, under autocast,
    be float32: see `keeps_float32`). ``any_float``: any floating dtype (``sru`` 2.6's ``c0``)."""
    if not isinstance(state, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(state).__name__}")
    if tuple(state.shape) != tuple(expected_shape):
        raise ValueError(f"{name} must have shape {tuple(expected_shape)}, got {tuple(state.shape)}")
    if any_float:
        if state.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating tensor, got {state.dtype}")
    elif state.dtype != like.dtype and not (keeps_float32(state.dtype, like.dtype)
                                            and torch.is_autocast_enabled(like.device.type)):
        raise TypeError(f"{name} dtype must match input dtype. Expected {like.dtype}, got {state.dtype}")
    if state.device != like.device:
        raise ValueError(f"{name} must be on the input's device. Expected {like.device}, got {state.device}")


def check_like_parameters(input: Tensor, parameter: Tensor, name: str = "input") -> None:
    """``input`` must have the layer's parameter dtype (any float dtype under autocast) and device."""
    if input.dtype != parameter.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(f"{name} dtype must match the layer's parameters. Expected {parameter.dtype}, "
                        f"got {input.dtype} (convert the layer with .to(dtype))")
    if input.device != parameter.device:
        raise ValueError(f"{name} must be on the layer's device. Expected {parameter.device}, got {input.device}")


# ---- the mixed-precision policy of every SRU layer (SRU, SRUpp, the compat classes) ------------------------------

def keeps_float32(dtype: torch.dtype, activations: torch.dtype) -> bool:
    """Whether a recurrence parameter or state of ``dtype`` stays as it is beside ``activations``: float32
    ``weight_c``, ``bias`` and ``c0`` stay float32 beside float16/bfloat16 activations (autocast). The recurrence
    computes in float32 anyway and returns each gradient in its input's dtype, so their gradients (sums over all
    ``L * N`` steps) never take a 16-bit round trip that overflows."""
    return dtype == torch.float32 and activations in (torch.float16, torch.bfloat16)


def recurrence_operand(t: Tensor, u: Tensor) -> Tensor:
    """``weight_c``, ``bias`` or ``c0`` as the recurrence takes it beside projections ``u`` ``(L, N, K, C)``:
    unchanged when its dtype is ``u``'s or `keeps_float32` says so, else converted to ``u``'s dtype."""
    if t.dtype == u.dtype or keeps_float32(t.dtype, u.dtype):
        return t
    return t.to(u.dtype)


def lengths_to_tensor(lengths: Tensor | Sequence[int], batch: int, max_length: int, device: torch.device) -> Tensor:
    """Validate per-sequence ``lengths`` (N,) with values in [1, max_length]; return an int64 tensor on ``device``."""
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(list(lengths))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"lengths must be a 1-D integer tensor or a sequence of ints, got {lengths!r}") from exc
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths must have shape ({batch},) (one length per sequence), got {tuple(lengths.shape)}")
    lengths = lengths.to(device=device, dtype=torch.int64)
    if torch.compiler.is_compiling():  # a value check would be data-dependent: assert inside the graph instead
        torch._assert_async(((lengths >= 1) & (lengths <= max_length)).all(), "lengths out of range")
        return lengths
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > max_length:
        raise ValueError(f"lengths must lie in [1, {max_length}] (the padded sequence length), got min {lo}, max {hi}")
    return lengths


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``(L, N)`` bool mask, True on padded steps (``t >= lengths[n]``)."""
    steps = torch.arange(max_length, device=lengths.device).unsqueeze(1)
    return steps >= lengths.unsqueeze(0)


def zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` ``(L, N, *)`` with zeros on the steps where ``mask`` ``(L, N)`` is True (padding), or ``x`` itself.

    Selected with ``torch.where``, never multiplied: NaN or inf in a padded step reaches neither an output nor a
    gradient (``0 * nan`` is NaN, also in the backward of the products that read the padded rows).
    """
    if mask is None:
        return x
    return torch.where(mask.unsqueeze(-1), 0.0, x)


def check_mask_pad(mask_pad: Tensor, length: int, batch: int, device: torch.device, batch_first: bool, *,
                   name: str = "mask_pad", steps: str = "L") -> Tensor:
    """Validate a padding mask (non-zero = padding) and return it as an ``(L, N)`` bool tensor on ``device``
    (``steps``: the letter naming the time axis in messages)."""
    if not isinstance(mask_pad, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask_pad).__name__}")
    expected = (batch, length) if batch_first else (length, batch)
    if tuple(mask_pad.shape) != expected:
        layout = f"(N, {steps})" if batch_first else f"({steps}, N)"
        raise ValueError(f"{name} must have shape {layout} = {expected}, got {tuple(mask_pad.shape)}")
    mask = mask_pad.to(device=device)
    if mask.dtype != torch.bool:
        mask = mask != 0
    return mask.t() if batch_first else mask


def check_probability(value: float, name: str) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def cast_like(t: Tensor | None, like: Tensor) -> Tensor | None:
    """``t`` in ``like``'s dtype (``None`` stays ``None``; ``t`` itself when it already is)."""
    return t if t is None or t.dtype == like.dtype else t.to(like.dtype)


def padding_mask(x: Tensor, lengths: Tensor | None, mask_pad: Tensor | None, batch_first: bool) -> Tensor | None:
    """``(L, N)`` bool padding mask from ``lengths`` (a tensor or, eagerly, a sequence of ints) or ``mask_pad``
    (``x`` is time-major), or None."""
    length, batch = x.size(0), x.size(1)
    if lengths is not None and mask_pad is not None:
        raise ValueError("give either lengths or mask_pad, not both")
    if lengths is not None:
        if torch.jit.is_scripting():
            return lengths_to_mask(lengths.to(device=x.device, dtype=torch.int64), length)
        return lengths_to_mask(lengths_to_tensor(lengths, batch, length, x.device), length)
    if mask_pad is not None:
        if torch.jit.is_scripting():
            mask = mask_pad.to(device=x.device) != 0
            return mask.t() if batch_first else mask
        return check_mask_pad(mask_pad, length, batch, x.device, batch_first)
    return None

"""Input checks shared by the layers: every bad input gets a ValueError/TypeError naming the argument."""

from __future__ import annotations

import sys
import warnings
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
        except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: e.g. [None, 2] (no dtype to infer)
            raise TypeError(f"lengths must be a 1-D integer tensor or a sequence of ints, got {lengths!r}") from exc
    if lengths.is_meta:
        raise ValueError("lengths must hold values (a CPU tensor, the input's device, or a list of ints), got a "
                         "tensor on the meta device")
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


def mask_to_lengths(mask: Tensor, length: int, batch: int, device: torch.device, batch_first: bool) -> Tensor:
    """``(N,)`` int64 lengths of a padding ``mask`` ``(L, N)`` (``(N, L)`` with ``batch_first``; True or non-zero on
    padded steps) whose padding is a suffix of every sequence (after its last valid step), for layers that take
    padding as lengths. Holes, left padding and all-padding sequences are named errors."""
    pad = check_mask_pad(mask, length, batch, device, batch_first, name="mask")
    lengths = (~pad).sum(0)
    if torch.compiler.is_compiling():  # a value check would be data-dependent: assert inside the graph instead
        ok = (pad == lengths_to_mask(lengths, length)).all() & (lengths >= 1).all()
        torch._assert_async(ok, "mask must mark a suffix of each sequence, with at least one valid step")
        return lengths
    if not torch.equal(pad, lengths_to_mask(lengths, length)):
        raise ValueError("mask must mark a suffix of each sequence (padding after its last valid step) for this "
                         "layer; left padding and holes are not supported (pass lengths)")
    if int(lengths.min()) < 1:
        raise ValueError("mask marks every step of some sequence as padding; each needs at least one valid step")
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


def valid_steps(lengths: Tensor | Sequence[int] | None, mask: Tensor | None, length: int, batch: int,
                device: torch.device, batch_first: bool) -> Tensor | None:
    """``(N,)`` int64 valid steps per sequence from ``lengths`` (`lengths_to_tensor`) or a suffix padding ``mask``
    (`mask_to_lengths`); ``None`` when neither is given; both is a ValueError."""
    if lengths is not None and mask is not None:
        raise ValueError("give either lengths or mask, not both")
    if lengths is not None:
        return lengths_to_tensor(lengths, batch, length, device)
    if mask is not None:
        return mask_to_lengths(mask, length, batch, device, batch_first)
    return None


def check_step_input(input: Tensor, input_size: int, name: str = "input") -> None:
    """One time step for ``step()``: a floating tensor ``(N, input_size)`` with ``N >= 1`` (the same errors as a
    sequence's, `check_sequence_input`)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 2 or input.size(-1) != input_size:
        raise ValueError(f"{name} must be 2-D (N, input_size) = (N, {input_size}) for step(), got shape "
                         f"{tuple(input.shape)}")
    check_sequence_input(input.unsqueeze(0), input_size, False, name)


def check_streamable(bidirectional: bool) -> None:
    """``step()`` runs forward in time: a bidirectional layer (whose reverse direction needs the whole sequence) is
    a ValueError."""
    if bidirectional:
        raise ValueError("step() runs forward in time; a bidirectional layer needs the whole sequence "
                         "(call forward)")


def state_options(param: Tensor | None, device: torch.device | None, dtype: torch.dtype | None) -> dict:
    """``{"device": ..., "dtype": ...}`` for a layer's zero state (`init_state`): ``device`` and ``dtype``, each
    defaulting to ``param``'s (a parameter of the layer; ``None``: torch's defaults)."""
    return {"device": device if device is not None else (None if param is None else param.device),
            "dtype": dtype if dtype is not None else (None if param is None else param.dtype)}


def check_choice(value: object, choices: tuple, name: str) -> None:
    """``value`` must be one of ``choices`` and of their type (``2.0`` is not the int ``2``; ``True`` is not 1)."""
    kinds = {type(c) for c in choices}
    if type(value) not in kinds:
        names = " or ".join(sorted(k.__name__ for k in kinds))
        raise TypeError(f"{name} must be {names}, one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def renamed(new_value: object, old_value: object, new: str, old: str) -> object:
    """The value of argument ``new``, also given under its deprecated spelling ``old`` (a DeprecationWarning that
    says what to write instead; both at once is a TypeError)."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"give {new}= or its deprecated spelling {old}=, not both")
    warnings.warn(f"{old}= is deprecated; write {new}= instead (the same value)", DeprecationWarning,
                  stacklevel=caller_stacklevel())
    return old_value


def state_and_mask(state: Tensor | None, mask: Tensor | None, c0: Tensor | None,
                   mask_pad: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """``(state, mask)`` of an SRU layer's `forward`, each also accepted under its deprecated spelling (``c0``,
    ``mask_pad``; `renamed`). Under TorchScript the old spellings are taken silently."""
    if torch.jit.is_scripting():
        return (c0 if state is None else state), (mask_pad if mask is None else mask)
    else:  # noqa: RET505 (TorchScript compiles only the branch above)
        return renamed(state, c0, "state", "c0"), renamed(mask, mask_pad, "mask", "mask_pad")


def caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside parrnn and torch (the user's call, through module calls), so
    the warning is shown for, and filtered by, the user's code."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("parrnn", "torch"):
        frame, level = frame.f_back, level + 1
    return level


def default_num_layers(num_layers: int | None, owner: str) -> int:
    """``num_layers`` of SRU/SRUpp: 2 when not passed (this release's default, with a FutureWarning: the next
    release uses `torch.nn.LSTM`'s 1 like every other parrnn layer)."""
    if num_layers is not None:
        return check_positive_int(num_layers, "num_layers")
    warnings.warn(f"{owner}'s default num_layers changes from 2 to 1 (torch.nn.LSTM's, as every other parrnn "
                  f"layer) in the next release; pass num_layers=2 to keep this model", FutureWarning,
                  stacklevel=caller_stacklevel())
    return 2


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


def padding_mask(x: Tensor, lengths: Tensor | None, mask: Tensor | None, batch_first: bool) -> Tensor | None:
    """``(L, N)`` bool padding mask from ``lengths`` (a tensor or, eagerly, a sequence of ints) or ``mask`` (True or
    non-zero on padded steps, ``(L, N)``, ``(N, L)`` with ``batch_first``; ``x`` is time-major), or None."""
    length, batch = x.size(0), x.size(1)
    if lengths is not None and mask is not None:
        raise ValueError("give either lengths or mask, not both")
    if lengths is not None:
        if torch.jit.is_scripting():
            return lengths_to_mask(lengths.to(device=x.device, dtype=torch.int64), length)
        return lengths_to_mask(lengths_to_tensor(lengths, batch, length, x.device), length)
    if mask is not None:
        if torch.jit.is_scripting():
            pad = mask.to(device=x.device) != 0
            return pad.t() if batch_first else pad
        return check_mask_pad(mask, length, batch, x.device, batch_first, name="mask")
    return None

"""The diagonal linear recurrence in plain PyTorch: the definition of correct.

Every fast backend (`sequential_cpu`, `scan_cpu`, `sequential_cuda`, `scan_cuda`) computes the same function
and is tested against this one, values and gradients. Autograd differentiates through the Python time loop.

Per column ``(n, c)``, for the steps ``t`` of sequence ``n`` in order (``0, 1, ..., L-1``; with ``reverse=True``
``L-1, ..., 0``):

    h_t = a_t * h_{t-1} + b_t          h_{-1} = h0 (zeros when h0 is None)

Shapes: ``a``, ``b`` ``(L, N, C)``; ``h0`` ``(N, C)``; ``lengths`` ``(N,)``. A padded step ``t >= lengths[n]`` is
an identity step (``a = 1``, ``b = 0``, selected with ``torch.where``, so NaN or inf stored there never leaks
into a result or a gradient) and its output ``h_t`` is 0. ``reverse=True`` therefore starts each sequence at
its own last valid step ``lengths[n] - 1``, like the reverse direction of a bidirectional RNN on a padded batch.

Returns ``(h, h_n)``: ``h`` ``(L, N, C)`` in ``a``'s dtype and ``h_n`` ``(N, C)``, the state after the last
valid step of each sequence, in ``h0``'s dtype (``a``'s when ``h0`` is None). The state is carried in float32
for float16/bfloat16 storage (float64 for float64); each ``h_t`` is rounded to the storage dtype only where it
is written out.

Gradients (what every fused backward computes): with ``g_t = dLoss/dh_t`` (the state's total gradient,
``g`` of the step after ``t`` carried back through its ``a``) -- ``g_t = grad_h_t + a_{t+1} g_{t+1}``,
``grad_b_t = g_t``, ``grad_a_t = g_t * h_{t-1}``, ``grad_h0 = a_0 g_0`` (indices in processing order;
``g`` of the last valid step starts from ``grad_h_n``); padded steps get zero gradients.

>>> import torch
>>> a, b = torch.full((3, 1, 1), 0.5), torch.ones(3, 1, 1)
>>> h, h_n = linear_recurrence(a, b)
>>> h.flatten().tolist(), h_n.flatten().tolist()
([1.0, 1.5, 1.75], [1.75])
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrnn._validation import lengths_to_mask
from parrnn.ops.linear_recurrence.contract import Operands, state_dtype_for, validate

__all__ = ["linear_recurrence", "run", "step"]


def step(h: Tensor, a_t: Tensor, b_t: Tensor, pad_t: Tensor | None) -> tuple[Tensor, Tensor]:
    """One time step for ``(N, C)`` columns: ``(state, output)``.

    ``h`` is the state before the step, ``a_t``/``b_t`` the step's coefficients (state dtype), ``pad_t`` bool
    broadcastable to ``(N, C)`` (``True`` on padding: the state is kept and the output is 0) or ``None``.
    Shared by this loop and the ONNX export's scan body.
    """
    if pad_t is None:
        h = a_t * h + b_t
        return h, h
    a_t = torch.where(pad_t, torch.ones_like(a_t), a_t)  # select, never multiply: NaN in padding stays out
    b_t = torch.where(pad_t, torch.zeros_like(b_t), b_t)
    h = a_t * h + b_t
    return h, torch.where(pad_t, torch.zeros_like(h), h)


def run(ops: Operands, reverse: bool) -> tuple[Tensor, Tensor]:
    """The loop over validated `Operands` (see the module docstring): ``(h, h_n)``."""
    a, b, h0, lengths, state_dtype = ops
    length, batch, cols = a.shape
    acc = state_dtype_for(a.dtype)
    a_, b_ = a.to(acc), b.to(acc)
    h = a_.new_zeros(batch, cols) if h0 is None else h0.to(acc)
    pad = None if lengths is None else lengths_to_mask(lengths, length).unsqueeze(2)  # (L, N, 1)
    outputs: list[Tensor | None] = [None] * length
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        h, outputs[t] = step(h, a_[t], b_[t], None if pad is None else pad[t])
    return torch.stack(outputs).to(a.dtype), h.to(state_dtype)  # type: ignore[arg-type]


def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """``h_t = a_t * h_{t-1} + b_t`` with a Python loop over time (shapes and padding in the module docstring).

    Args:
        a: ``(L, N, C)`` decay, float32/float64/bfloat16/float16.
        b: ``(L, N, C)`` input, ``a``'s dtype.
        h0: ``(N, C)`` initial state in ``a``'s dtype or the state dtype, or ``None`` (zeros).
        lengths: ``(N,)`` integers in ``[1, L]``; steps ``t >= lengths[n]`` are padding. Or ``None``.
        mask: ``(L, N)`` bool, ``True`` on padded steps (a suffix of each sequence); exclusive with ``lengths``.
        reverse: run each sequence backwards from its last valid step.

    Returns:
        ``(h, h_n)``: ``h`` ``(L, N, C)`` (0 on padded steps), ``h_n`` ``(N, C)``.
    """
    return run(validate(a, b, h0, lengths, mask, reverse), reverse)

r"""Hand-written backwards for the cells' elementwise gates (eager mode).

Each cell turns its projections ``u`` ``(L, N, G, C)`` (``G`` column blocks) into the recurrence's coefficients
with a few elementwise ops. Left to autograd, their backward costs a gradient tensor per op, their sums and a
``stack`` of the blocks' gradients (the backward of ``unbind``): about a third of a MinLSTM or QRNN layer's
time on a CPU. Here each backward writes the blocks of ``grad_u`` in place, in a few passes.

Eager only: the cells call the plain ops under torch.compile (the compiler fuses them itself, and dynamo cannot
trace the ``out=`` writes into strided views) and under TorchScript (which cannot save a Python autograd
function). The plain ops are the definition; `tests/test_fused_gates.py` checks values and gradients against
them. Under ``create_graph=True`` each backward runs autograd through the plain ops instead, so double backward
works (with the reference recurrence: the fused recurrences have no double backward).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # (grad, y, grad_input=out): grad * y * (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # (grad, y, grad_input=out): grad * (1 - y^2)


def _differentiable_backward(coefficients: Callable[[Tensor], tuple[Tensor | None, ...]], u: Tensor,
                             grads: tuple[Tensor | None, ...]) -> Tensor:
    """``grad_u`` through autograd of the plain ops, with a graph (``create_graph=True``: double backward)."""
    with torch.enable_grad():
        outputs = coefficients(u)
        pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if o is not None and g is not None]
        return torch.autograd.grad([o for o, _ in pairs], u, [g for _, g in pairs], create_graph=True)[0]


def min_gru_coefficients(u: Tensor) -> tuple[Tensor, Tensor]:
    """The plain-op definition of `MinGRUGates`: ``u`` = (candidate, gate) gives ``a = 1 - z``,
    ``b = z * candidate`` with ``z = sigmoid(gate)``."""
    candidate, gate = u.unbind(2)
    z = torch.sigmoid(gate)
    return 1 - z, z * candidate


class MinGRUGates(torch.autograd.Function):
    """minGRU, identity candidate: ``u`` = (candidate, gate) gives ``a = 1 - z``, ``b = z * candidate``,
    ``z = sigmoid(gate)``."""

    @staticmethod
    def forward(ctx, u: Tensor) -> tuple[Tensor, Tensor]:
        candidate, gate = u.unbind(2)
        z = torch.sigmoid(gate)
        ctx.save_for_backward(u, z)
        return 1 - z, z * candidate  # = min_gru_coefficients(u), keeping z for the backward

    @staticmethod
    def backward(ctx, grad_a: Tensor, grad_b: Tensor) -> Tensor:
        u, z = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a backward that autograd can differentiate again
            return _differentiable_backward(min_gru_coefficients, u, (grad_a, grad_b))
        grad_u = torch.empty_like(u)
        grad_candidate, grad_gate = grad_u.unbind(2)
        torch.mul(grad_b, z, out=grad_candidate)
        torch.mul(grad_b, u[:, :, 0], out=grad_gate)  # dL/dz = grad_b * candidate - grad_a
        grad_gate.sub_(grad_a)
        _sigmoid_backward(grad_gate, z, grad_input=grad_gate)
        return grad_u


def min_lstm_forget_share(forget: Tensor, input_gate: Tensor) -> Tensor:
    """minLSTM's normalised forget gate ``f' / (f' + i')`` (``f' = sigmoid(forget)``, ``i' = sigmoid(input)``),
    computed as ``sigmoid(softplus(-i) - softplus(-f))``: never 0/0."""
    return torch.sigmoid(F.softplus(-input_gate) - F.softplus(-forget))


def min_lstm_coefficients(u: Tensor) -> tuple[Tensor, Tensor]:
    """The plain-op definition of `MinLSTMGates`: ``u`` = (candidate, forget, input) gives ``a = s``,
    ``b = (1 - s) * candidate`` with ``s`` = `min_lstm_forget_share`."""
    candidate, forget, input_gate = u.unbind(2)
    s = min_lstm_forget_share(forget, input_gate)
    return s, (1 - s) * candidate


class MinLSTMGates(torch.autograd.Function):
    """minLSTM, identity candidate (see `min_lstm_coefficients`). With ``d = softplus(-i) - softplus(-f)``:
    ``dd/df = sigmoid(-f)``, ``dd/di = -sigmoid(-i)``."""

    @staticmethod
    def forward(ctx, u: Tensor) -> tuple[Tensor, Tensor]:
        s, b = min_lstm_coefficients(u)
        ctx.save_for_backward(u, s)
        return s, b

    @staticmethod
    def backward(ctx, grad_a: Tensor, grad_b: Tensor) -> Tensor:
        u, s = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a backward that autograd can differentiate again
            return _differentiable_backward(min_lstm_coefficients, u, (grad_a, grad_b))
        grad_u = torch.empty_like(u)
        grad_candidate, grad_forget, grad_input = grad_u.unbind(2)
        grad_d = grad_forget  # dL/dd, then dL/df in place
        torch.mul(grad_b, u[:, :, 0], out=grad_d)
        torch.sub(grad_a, grad_d, out=grad_d)  # dL/ds = grad_a - grad_b * candidate
        _sigmoid_backward(grad_d, s, grad_input=grad_d)
        torch.neg(u[:, :, 2], out=grad_input).sigmoid_().mul_(grad_d).neg_()  # -dL/dd * sigmoid(-i)
        torch.neg(u[:, :, 1], out=grad_candidate).sigmoid_()  # scratch: sigmoid(-f)
        grad_forget.mul_(grad_candidate)
        torch.mul(grad_b, s, out=grad_candidate)
        torch.sub(grad_b, grad_candidate, out=grad_candidate)  # grad_b * (1 - s)
        return grad_u


def qrnn_terms(u: Tensor, pooling: str) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(z, forget, keep_in, output_gate)`` from the pre-activations ``u`` = (z, f[, o[, i]]): ``tanh(z)``,
    ``sigmoid(f)``, what multiplies the candidate (ifo: ``sigmoid(i)``; f/fo: ``1 - f`` as ``sigmoid(-f)``, no
    cancellation when f is near 1) and ``sigmoid(o)`` (``None`` for f-pooling)."""
    parts = u.unbind(2)
    z = torch.tanh(parts[0])
    forget = torch.sigmoid(parts[1])
    keep_in = torch.sigmoid(parts[3]) if pooling == "ifo" else torch.sigmoid(-parts[1])
    output_gate = torch.sigmoid(parts[2]) if pooling != "f" else None
    return z, forget, keep_in, output_gate


def qrnn_coefficients(u: Tensor, pooling: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """The plain-op definition of `QRNNGates`: ``a = sigmoid(f)``, ``b = keep_in * tanh(z)`` and the output gate
    (see `qrnn_terms`)."""
    z, forget, keep_in, output_gate = qrnn_terms(u, pooling)
    return forget, keep_in * z, output_gate


class QRNNGates(torch.autograd.Function):
    """QRNN's f, fo and ifo pooling coefficients (see `qrnn_coefficients`); returns ``(a, b)`` or
    ``(a, b, o)``."""

    @staticmethod
    def forward(ctx, u: Tensor, pooling: str) -> tuple[Tensor, ...]:
        z, forget, keep_in, output_gate = qrnn_terms(u, pooling)
        b = keep_in * z
        ctx.pooling = pooling
        if output_gate is None:
            ctx.save_for_backward(u, z, forget, keep_in)
            return forget, b
        ctx.save_for_backward(u, z, forget, keep_in, output_gate)
        return forget, b, output_gate

    @staticmethod
    def backward(ctx, grad_a: Tensor, grad_b: Tensor, grad_o: Tensor | None = None) -> tuple[Tensor, None]:
        u, z, forget, keep_in, *rest = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a backward that autograd can differentiate again
            grads = (grad_a, grad_b) if ctx.pooling == "f" else (grad_a, grad_b, grad_o)
            return _differentiable_backward(
                lambda v: qrnn_coefficients(v, ctx.pooling)[:len(grads)], u, grads), None
        grad_u = torch.empty_like(u)
        parts = grad_u.unbind(2)
        grad_z, grad_f = parts[0], parts[1]
        torch.mul(grad_b, keep_in, out=grad_z)
        _tanh_backward(grad_z, z, grad_input=grad_z)  # dL/dz_pre = grad_b * keep_in * (1 - z^2)
        torch.mul(grad_b, z, out=grad_f)  # dL/d keep_in
        if ctx.pooling == "ifo":
            _sigmoid_backward(grad_f, keep_in, grad_input=parts[3])
            _sigmoid_backward(grad_a, forget, grad_input=grad_f)
        else:  # keep_in = 1 - f: dL/df = grad_a - grad_b * z, times f (1 - f) = forget * keep_in
            torch.sub(grad_a, grad_f, out=grad_f).mul_(forget).mul_(keep_in)
        if ctx.pooling != "f":
            output_gate = rest[0]
            if grad_o is None:
                parts[2].zero_()
            else:
                _sigmoid_backward(grad_o, output_gate, grad_input=parts[2])
        return grad_u, None


def qrnn_gates(u: Tensor, pooling: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """`QRNNGates` with `qrnn_coefficients`' return convention."""
    out = QRNNGates.apply(u, pooling)
    return out[0], out[1], (out[2] if len(out) == 3 else None)

"""`parrnn._fused_gates`: each hand-written backward against autograd through the plain-op definition."""

from __future__ import annotations

import pytest
import torch

from parrnn import _fused_gates as fused

POOLING_BLOCKS = {"f": 2, "fo": 3, "ifo": 4}


CASES = {
    "min_gru": (2, fused.MinGRUGates.apply, fused.min_gru_coefficients),
    "min_lstm": (3, fused.MinLSTMGates.apply, fused.min_lstm_coefficients),
    **{f"qrnn_{p}": (n, lambda u, p=p: fused.qrnn_gates(u, p)[:2 if p == "f" else 3],
                     lambda u, p=p: fused.qrnn_coefficients(u, p)[:2 if p == "f" else 3])
       for p, n in POOLING_BLOCKS.items()},
}


def _inputs(blocks: int, dtype: torch.dtype, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(5, 3, blocks, 4, generator=gen, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_float64(name: str) -> None:
    blocks, function, _ = CASES[name]
    u = _inputs(blocks, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(function, (u,))


@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["unit", "saturated"])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_equal_autograd_of_the_plain_ops(name: str, scale: float) -> None:
    blocks, function, plain = CASES[name]
    u = _inputs(blocks, torch.float32, scale=scale, seed=1)
    outs, grads = [], []
    for f in (function, plain):
        x = u.clone().requires_grad_()
        out = f(x)
        weights = [torch.linspace(-1, 1, o.numel()).view_as(o) for o in out]
        sum((o * w).sum() for o, w in zip(out, weights, strict=True)).backward()
        outs.append(out)
        grads.append(x.grad)
    for got, want in zip(outs[0], outs[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(grads[0]).all()
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_unused_outputs_get_zero_gradients(name: str) -> None:
    """Only ``b`` feeds the loss: the other outputs' gradients arrive as zeros and change nothing."""
    blocks, function, plain = CASES[name]
    u = _inputs(blocks, torch.float64, seed=2)
    grads = []
    for f in (function, plain):
        x = u.clone().requires_grad_()
        f(x)[1].sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", list(CASES))
def test_double_backward_through_create_graph(name: str) -> None:
    """With ``create_graph=True`` the backward is differentiable again (gradient penalties, Hessian products)."""
    blocks, function, _ = CASES[name]
    u = _inputs(blocks, torch.float64, seed=3).requires_grad_()
    assert torch.autograd.gradgradcheck(function, (u,))

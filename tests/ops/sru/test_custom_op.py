"""The torch.library custom ops pass torch's own checks (schema, fake impl, autograd, no output aliasing)."""

from __future__ import annotations

import pytest
import torch

import parrnn
from parrnn.ops.sru import dispatch


def _inputs(backend: str, all_padded: bool, k: int = 3, peephole: bool = True, with_x: bool = True):
    torch.manual_seed(0)
    length, batch, cols = 5, 2, 6
    u = torch.randn(length, batch, k, cols, requires_grad=True)
    x = torch.randn(length, batch, cols, requires_grad=True) if with_x and k == 3 else None
    weight_c = torch.randn(2, cols, requires_grad=True) if peephole and backend != "scan" else None
    bias = torch.randn(2, cols, requires_grad=True)
    c0 = torch.randn(batch, cols, requires_grad=True)
    mask = torch.zeros(length, batch, dtype=torch.bool)
    mask[3:, 1] = True
    if all_padded:
        mask[:] = True
    drop = torch.rand(batch, cols)
    return (u, x, weight_c, bias, c0, mask, drop, True, False, 1.3, backend)


@pytest.mark.parametrize("backend", ["sequential", "scan"])
@pytest.mark.parametrize("all_padded", [False, True])
@pytest.mark.parametrize("k,with_x", [(3, True), (3, False), (4, False)])
def test_opcheck_forward(backend: str, all_padded: bool, k: int, with_x: bool) -> None:
    ok, why = parrnn.available_backends()[f"sru {backend}"]
    if not ok:
        pytest.skip(f"{backend} unavailable: {why}")
    args = _inputs(backend, all_padded, k=k, with_x=with_x)
    torch.library.opcheck(dispatch.sru_forward_op, args)


@pytest.mark.parametrize("backend", ["sequential", "scan"])
@pytest.mark.parametrize("all_padded", [False, True])
def test_opcheck_backward(backend: str, all_padded: bool) -> None:
    ok, why = parrnn.available_backends()[f"sru {backend}"]
    if not ok:
        pytest.skip(f"{backend} unavailable: {why}")
    u, x, weight_c, bias, c0, mask, drop, bidirectional, use_tanh, scale_x, _ = _inputs(backend, all_padded)
    with torch.no_grad():
        h, c_n, c_all = dispatch.sru_forward_op(u, x, weight_c, bias, c0, mask, drop, bidirectional, use_tanh,
                                                scale_x, backend)
    args = (torch.randn_like(h), torch.randn_like(c_n), u.detach(), x.detach(),
            None if weight_c is None else weight_c.detach(), bias.detach(), c0.detach(), mask, drop, c_all,
            bidirectional, use_tanh, scale_x, backend)
    torch.library.opcheck(dispatch.sru_backward_op, args)

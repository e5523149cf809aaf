"""Helpers shared by the backend tests in ``tests/ops``: one set of recurrence inputs, random output gradients,
the float64 reference with autograd gradients, and tolerance checks.

Shapes follow :mod:`parrnn.ops.sru.reference`: ``u`` (L, N, K, C), ``x`` (L, N, C), ``weight_c``/``bias`` (2, C),
``c0``/``drop_mask`` (N, C), ``mask_pad`` (L, N).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from parrnn.ops.sru import reference
from parrnn.ops.sru.contract import RecurrenceArgs

#: The differentiable inputs, in the order of the backends' contract.
GRAD_NAMES = ("u", "x", "weight_c", "bias", "c0")


@dataclass
class Case:
    """One set of recurrence inputs (``weight_c`` last, ``None`` for the linear / v1 recurrence)."""

    u: Tensor
    x: Tensor | None
    bias: Tensor
    c0: Tensor
    mask_pad: Tensor | None
    drop_mask: Tensor | None
    bidirectional: bool
    use_tanh: bool
    scale_x: float
    weight_c: Tensor | None = None

    def args(self) -> RecurrenceArgs:
        """The backends' argument: every input and option as one `RecurrenceArgs`."""
        return RecurrenceArgs(self.u, self.x, self.weight_c, self.bias, self.c0, self.mask_pad, self.drop_mask,
                              self.bidirectional, self.use_tanh, self.scale_x)

    def tensors(self) -> list[Tensor | None]:
        """``(u, x, weight_c, bias, c0, mask_pad, drop_mask)``: the fused backends' tensor arguments."""
        return [self.u, self.x, self.weight_c, self.bias, self.c0, self.mask_pad, self.drop_mask]

    def inputs(self) -> tuple:
        """``(u, x, bias, c0, mask_pad, drop_mask)``: the scan's tensor arguments (no ``weight_c``)."""
        return (self.u, self.x, self.bias, self.c0, self.mask_pad, self.drop_mask)

    def flags(self) -> tuple:
        return (self.bidirectional, self.use_tanh, self.scale_x)

    def options(self) -> dict[str, object]:
        return {"bidirectional": self.bidirectional, "use_tanh": self.use_tanh, "scale_x": self.scale_x}


def random_grads(length: int, batch: int, cols: int, dtype: torch.dtype, seed: int) -> tuple[Tensor, Tensor]:
    """``(grad_h (L, N, C), grad_c_n (N, C))``: standard normal (drawn in float64) stored in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    grad_h = torch.randn(length, batch, cols, generator=gen, dtype=torch.float64).to(dtype)
    grad_c_n = torch.randn(batch, cols, generator=gen, dtype=torch.float64).to(dtype)
    return grad_h, grad_c_n


def reference_values_and_grads(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
                               mask_pad: Tensor | None, drop_mask: Tensor | None, grad_h: Tensor,
                               grad_c_n: Tensor, *, bidirectional: bool, use_tanh: bool, scale_x: float,
                               ) -> tuple[Tensor, Tensor, dict[str, Tensor | None]]:
    """Reference ``h``, ``c_n`` and the gradients of ``loss = <h, grad_h> + <c_n, grad_c_n>``, all in float64
    from the exact stored input values (16-bit inputs are exact in float64). The gradients are keyed by
    :data:`GRAD_NAMES`, ``None`` where the input is ``None``."""
    leaves = {n: None if t is None else t.detach().to(torch.float64).requires_grad_()
              for n, t in zip(GRAD_NAMES, (u, x, weight_c, bias, c0), strict=True)}
    drop = None if drop_mask is None else drop_mask.to(torch.float64)
    h, c_n = reference.sru_recurrence(*leaves.values(), mask_pad, drop, bidirectional=bidirectional,  # type: ignore[arg-type]
                                      use_tanh=use_tanh, scale_x=scale_x)
    loss = (h * grad_h.to(torch.float64)).sum() + (c_n * grad_c_n.to(torch.float64)).sum()
    present = [n for n in GRAD_NAMES if leaves[n] is not None]
    grads: dict[str, Tensor | None] = dict.fromkeys(GRAD_NAMES)
    grads.update(zip(present, torch.autograd.grad(loss, [leaves[n] for n in present]), strict=True))
    return h.detach(), c_n.detach(), grads


def assert_close(actual: Tensor | None, expected: Tensor | None, tol: tuple[float, float], what: str,
                 atol_scale: float = 1.0) -> None:
    """``actual`` within ``tol = (rtol, atol * atol_scale)`` of ``expected``, compared in float64; both or
    neither ``None``."""
    if expected is None:
        assert actual is None, f"{what}: expected None"
        return
    assert actual is not None, f"{what}: got None"
    rtol, atol = tol
    torch.testing.assert_close(actual.to(torch.float64), expected.to(torch.float64), rtol=rtol,
                               atol=atol * atol_scale, msg=lambda m: f"{what}: {m}")


def assert_grads(grads: Mapping[str, Tensor | None], expected: Mapping[str, Tensor | None],
                 inputs: Mapping[str, Tensor | None], tol: tuple[float, float],
                 atol_scale: Mapping[str, float] | None = None) -> None:
    """For each input ``name`` in ``inputs``: ``grads[name]`` is ``None`` for a ``None`` input, else has the
    input's dtype and shape and is within ``tol`` (atol times ``atol_scale[name]``) of ``expected[name]``."""
    for name, inp in inputs.items():
        got = grads[name]
        if inp is not None:
            assert got is not None and got.dtype == inp.dtype and got.shape == inp.shape, f"grad_{name}"
        assert_close(got, expected[name], tol, f"grad_{name}", (atol_scale or {}).get(name, 1.0))

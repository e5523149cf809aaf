"""The SRU reference (:mod:`parrnn.ops.sru.reference`), the definition of correct, on 16-bit inputs: its time loop
runs in float32, like every fused backend, so a bfloat16 input's long sequence agrees with the sequential kernel.

A loop run in bfloat16 rounds ``c`` to 8 bits of mantissa at every step; at ``L = 400`` with forget gates near 1 the
error accumulates (outputs off by up to 1.3 in ``h``, 0.14 in ``c_n``, a mean of 6e-3), where the float32 loop and
the sequential kernel differ at most by one rounding of the output (mean below 1e-6).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from parrnn.ops.sru import dispatch, reference

L, N, C = 400, 4, 8


def _sequential(*args: Tensor | None, weight_c: Tensor | None) -> tuple[Tensor, Tensor]:
    """The sequential CPU kernel (backend ``"sequential"``; ``"cpu"``, its older name, where that is the one)."""
    u, x, bias, c0 = args
    for name in ("sequential", "cpu"):
        try:
            return dispatch.sru_recurrence(u, x, weight_c, bias, c0, None, None, backend=name)
        except ValueError as exc:
            if name not in str(exc):
                raise
    raise AssertionError("no sequential CPU backend")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bfloat16_input_runs_the_reference_loop_in_float32(version: str) -> None:
    for name in ("sequential", "cpu"):
        try:
            available, why = dispatch.backend_availability(name)
            break
        except ValueError:
            continue
    if not available:
        pytest.skip(f"the sequential CPU kernel is unavailable: {why}")
    torch.manual_seed(1)
    dtype = torch.bfloat16
    u = torch.randn(L, N, 3, C) * 3
    u[:, :, 1] += 3  # forget gates near 1: a long memory, where per-step rounding accumulates
    u = u.to(dtype)
    x = torch.randn(L, N, C).to(dtype)
    weight_c = (torch.rand(2, C) * 2 - 1).to(dtype) if version == "v2" else None
    bias = torch.zeros(2, C, dtype=dtype)
    bias[1] = -2.0
    c0 = torch.zeros(N, C, dtype=dtype)  # no initial state given: zeros in the parameters' dtype
    h, c_n = reference.sru_recurrence(u, x, weight_c, bias, c0, None, None)
    h_seq, c_seq = _sequential(u, x, bias, c0, weight_c=weight_c)
    assert h.dtype == dtype and c_n.dtype == dtype
    diff_h = (h.float() - h_seq.float()).abs()
    diff_c = (c_n.float() - c_seq.float()).abs()
    # one bfloat16 rounding of an output near 4 is 1/64; a bfloat16 loop is off by far more on average
    assert diff_h.max().item() <= 2e-2, diff_h.max().item()
    assert diff_h.mean().item() <= 1e-4, diff_h.mean().item()
    assert diff_c.max().item() <= 1e-2, diff_c.max().item()

"""The issue's reproductions on the ops themselves (what the layers call): `torch.func.grad`/`vmap`/`jvp` and
`torch.autograd.forward_ad` through the SRU recurrence and the linear recurrence, on every CPU backend, equal the
reference backend (pure PyTorch, differentiated by torch) or raise an error naming forward-mode AD."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jvp, vmap

from parrnn.ops.linear_recurrence import linear_recurrence
from parrnn.ops.sru.dispatch import sru_recurrence

from .test_functional import FORWARD_AD_ERROR

L, N, C = 6, 3, 4
DT = torch.float64


def _linear(backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    a = torch.rand(L, N, C, dtype=DT)
    lengths = torch.tensor([L, 4, 2])
    return lambda b: linear_recurrence(a, b, None, lengths, backend=backend)[0]


def _sru(backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    u_rest = torch.randn(L, N, 2, C, dtype=DT)
    weight_c, bias, c0 = torch.randn(2, C, dtype=DT), torch.randn(2, C, dtype=DT), torch.zeros(N, C, dtype=DT)

    def run(b: torch.Tensor) -> torch.Tensor:
        u = torch.cat([b.unsqueeze(2), u_rest], dim=2)
        return sru_recurrence(u, b, weight_c, bias, c0, None, None, backend=backend)[0]

    return run


OPS = {"linear_recurrence": (_linear, ("auto", "sequential", "scan")), "sru": (_sru, ("auto", "sequential"))}
CASES = [pytest.param(op, backend, id=f"{op}-{backend}") for op, (_, backends) in OPS.items() for backend in backends]


def _pair(op: str, backend: str):
    make = OPS[op][0]
    return make(backend), make("reference")


@pytest.mark.parametrize(("op", "backend"), CASES)
def test_func_grad_and_vmap_equal_the_reference(op: str, backend: str) -> None:
    fn, ref = _pair(op, backend)
    b = torch.randn(L, N, C, dtype=DT)
    torch.testing.assert_close(grad(lambda t: fn(t).sin().sum())(b), grad(lambda t: ref(t).sin().sum())(b))
    bs = torch.randn(2, L, N, C, dtype=DT)
    torch.testing.assert_close(vmap(fn)(bs), torch.stack([ref(t) for t in bs]))


@pytest.mark.parametrize("api", ["jvp", "forward_ad"])
@pytest.mark.parametrize(("op", "backend"), CASES)
def test_forward_mode_ad_gives_the_reference_tangent_or_a_named_error(op: str, backend: str, api: str) -> None:
    fn, ref = _pair(op, backend)
    b, v = torch.randn(L, N, C, dtype=DT), torch.randn(L, N, C, dtype=DT)
    _, want = jvp(ref, (b,), (v,))
    try:
        if api == "jvp":
            _, got = jvp(fn, (b,), (v,))
        else:
            with fwAD.dual_level():
                got = fwAD.unpack_dual(fn(fwAD.make_dual(b, v))).tangent
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        assert FORWARD_AD_ERROR.search(str(exc)), f"not a named forward-AD error: {type(exc).__name__}: {exc}"
        return
    assert got is not None, "forward-mode AD dropped the tangent"
    torch.testing.assert_close(got, want)

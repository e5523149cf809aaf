"""Function transforms and higher-order derivatives: `torch.func.functional_call`/`grad`/`vmap` equal autograd;
forward-mode AD (`torch.func.jvp`, `torch.autograd.forward_ad`) gives the right tangent (float64 central finite
differences) or raises an error that names forward-mode AD -- never a missing or wrong tangent -- with frozen
parameters and with parameters requiring grad; double backward equals the reference backend's or raises an error
naming ``backend="reference"``."""

from __future__ import annotations

import re

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jvp, vmap

from .registry import BY_NAME, I, L, N, call, names, set_backend

#: what a refusal of forward-mode AD must say
FORWARD_AD_ERROR = re.compile(r"forward[- ]mode|forward AD|forward_ad|jvp", re.IGNORECASE)
REFERENCE_NAMED = re.compile(r"""backend\s*=\s*["']reference["']""")


def _model(name: str, dtype: torch.dtype = torch.float32):
    layer = BY_NAME[name]
    return layer, layer.make().to(dtype)


def _loss_of(model, params: dict, x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, params, (x,))[0].square().sum()


@pytest.mark.parametrize("name", names())
def test_functional_call_equals_the_module(name: str) -> None:
    layer, model = _model(name)
    x = torch.randn(L, N, I)
    params = {k: v.detach() * 1.5 for k, v in model.named_parameters()}
    got = functional_call(model, params, (x,))[0]
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    torch.testing.assert_close(got, call(layer, model, x)[0])


@pytest.mark.parametrize("name", names())
def test_func_grad_equals_autograd(name: str) -> None:
    layer, model = _model(name)
    x = torch.randn(L, N, I)
    params = {k: v.detach() for k, v in model.named_parameters()}
    got = grad(lambda p: _loss_of(model, p, x))(params)
    model.zero_grad()
    call(layer, model, x)[0].square().sum().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(got[k], p.grad, msg=k)


@pytest.mark.parametrize("name", names())
def test_vmap_over_inputs_equals_a_loop(name: str) -> None:
    if name in ("Sliced-gru", "Sliced-lstm"):
        pytest.skip("torch has no vmap batching rule for nn.GRU/nn.LSTM (aten::gru.input / aten::lstm.input)")
    layer, model = _model(name)
    xs = torch.randn(2, L, N, I)
    params = {k: v.detach() for k, v in model.named_parameters()}
    got = vmap(lambda x: functional_call(model, params, (x,))[0])(xs)
    with torch.no_grad():
        want = torch.stack([call(layer, model, x)[0] for x in xs])
    torch.testing.assert_close(got, want)


def _finite_difference(layer, model, x: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    with torch.no_grad():
        plus = call(layer, model, x + eps * v)[0]
        minus = call(layer, model, x - eps * v)[0]
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("api", ["jvp", "forward_ad"])
@pytest.mark.parametrize("params", ["frozen", "trainable"])
@pytest.mark.parametrize("name", names())
def test_forward_mode_ad_gives_the_right_tangent_or_a_named_error(name: str, params: str, api: str) -> None:
    layer, model = _model(name, torch.float64)
    model.requires_grad_(params == "trainable")
    torch.manual_seed(5)
    x, v = torch.randn(L, N, I, dtype=torch.float64), torch.randn(L, N, I, dtype=torch.float64)
    expected = _finite_difference(layer, model, x, v)
    try:
        if api == "jvp":
            _, tangent = jvp(lambda inp: call(layer, model, inp)[0], (x,), (v,))
        else:
            with fwAD.dual_level():
                out = call(layer, model, fwAD.make_dual(x, v))[0]
                tangent = fwAD.unpack_dual(out).tangent
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        assert FORWARD_AD_ERROR.search(str(exc)), f"not a named forward-AD error: {type(exc).__name__}: {exc}"
        return
    assert tangent is not None, "forward-mode AD dropped the tangent"
    torch.testing.assert_close(tangent, expected, rtol=1e-6, atol=1e-7)


def _second_order(layer, model, x: torch.Tensor) -> list[torch.Tensor]:
    """Gradient of ``|d loss / d (x, params)|^2`` with respect to ``x`` and the parameters."""
    x = x.clone().requires_grad_()
    params = [p for p in model.parameters() if p.requires_grad]
    out = call(layer, model, x)[0]
    firsts = torch.autograd.grad(out.sin().sum(), [x, *params], create_graph=True, allow_unused=True)
    total = sum(g.square().sum() for g in firsts if g is not None)
    seconds = torch.autograd.grad(total, [x, *params], allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(seconds, [x, *params], strict=True)]


@pytest.mark.parametrize("name", names())
def test_double_backward_equals_the_reference_or_names_backend_reference(name: str) -> None:
    layer, model = _model(name, torch.float64)
    x = torch.randn(L, N, I, dtype=torch.float64)
    reference = BY_NAME[name].make().to(torch.float64)
    if "reference" in layer.backends:
        set_backend(reference, "reference")
    try:
        want = _second_order(layer, reference, x)
    except (RuntimeError, NotImplementedError) as exc:
        assert not layer.double_backward, f"{name} claims double backward: {exc}"
        if "reference" in layer.backends:  # torch itself lacks a second derivative on the reference path
            pytest.skip(f"the reference itself has no second derivative here (torch): {exc}")
        # no reference backend to compare with: the layer's own error must say what has second derivatives
        assert REFERENCE_NAMED.search(str(exc)), f"the error must name backend=\"reference\": {exc}"
        return
    try:
        got = _second_order(layer, model, x)
    except (RuntimeError, NotImplementedError) as exc:
        assert not layer.double_backward, f"{name} claims double backward: {exc}"
        assert REFERENCE_NAMED.search(str(exc)), f"the error must name backend=\"reference\": {exc}"
        return
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9)

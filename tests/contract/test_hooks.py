"""Module plumbing: every inner layer is called as a module, so forward hooks, pre-hooks, pruning and
`torch.nn.utils.parametrize` act on it, in forward and in step(), in training and in evaluation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
from torch import nn

from .registry import BY_NAME, I, L, N, call, inner_layers, leaf_layers, names, weight_name

MODES = ["train", "eval"]


def _count_calls(model: nn.Module) -> dict[str, list[int]]:
    """A forward pre-hook and a forward hook on every inner layer, counting their calls."""
    inner = inner_layers(model)
    assert inner, "the layer exposes its inner layers"
    calls = {"pre": [0] * len(inner), "post": [0] * len(inner)}
    for k, sub in enumerate(inner):
        sub.register_forward_pre_hook(lambda *_, k=k: calls["pre"].__setitem__(k, calls["pre"][k] + 1))
        sub.register_forward_hook(lambda *_, k=k: calls["post"].__setitem__(k, calls["post"][k] + 1))
    return calls


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", names())
def test_hooks_and_pre_hooks_on_every_inner_layer_fire(name: str, mode: str) -> None:
    layer = BY_NAME[name]
    model = layer.make().train(mode == "train")
    calls = _count_calls(model)
    x = torch.randn(L, N, I)
    with torch.set_grad_enabled(mode == "train"):
        call(layer, model, x)
        call(layer, model, x, lengths=[L, 4, 2])
    assert calls["pre"] == calls["post"] and min(calls["pre"]) >= 2, calls


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", names(step=True))
def test_hooks_on_every_inner_layer_fire_in_step(name: str, mode: str) -> None:
    model = BY_NAME[name].make().train(mode == "train")
    calls = _count_calls(model)
    with torch.set_grad_enabled(mode == "train"):
        model.step(torch.randn(N, I), None)
    assert calls["pre"] == calls["post"] and min(calls["pre"]) >= 1, calls


def _pruned_pair(name: str) -> tuple[nn.Module, nn.Module, list[tuple[nn.Module, nn.Module, str]]]:
    """A model whose leaf layers are pruned (50 %, L1) and an unpruned copy to hold ``orig * mask``."""
    model = BY_NAME[name].make()
    reference = copy.deepcopy(model)
    pairs = []
    for sub, ref in zip(leaf_layers(model), leaf_layers(reference), strict=True):
        wname = weight_name(sub)
        prune.l1_unstructured(sub, wname, 0.5)
        pairs.append((sub, ref, wname))
    return model, reference, pairs


def _sync(pairs: list[tuple[nn.Module, nn.Module, str]]) -> None:
    with torch.no_grad():
        for sub, ref, wname in pairs:
            getattr(ref, wname).copy_(getattr(sub, wname + "_orig") * getattr(sub, wname + "_mask"))


@pytest.mark.parametrize("name", names())
def test_pruning_trains_3_steps_and_a_write_to_weight_orig_reaches_the_output(name: str) -> None:
    layer = BY_NAME[name]
    model, reference, pairs = _pruned_pair(name)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    opt_ref = torch.optim.SGD(reference.parameters(), 0.1)
    x = torch.randn(L, N, I)
    for _ in range(3):
        _sync(pairs)
        opt.zero_grad()
        opt_ref.zero_grad()
        out, out_ref = call(layer, model, x)[0], call(layer, reference, x)[0]
        torch.testing.assert_close(out, out_ref)
        out.pow(2).mean().backward()
        out_ref.pow(2).mean().backward()
        for sub, ref, wname in pairs:
            mask = getattr(sub, wname + "_mask")
            torch.testing.assert_close(getattr(sub, wname + "_orig").grad, getattr(ref, wname).grad * mask)
        opt.step()
        opt_ref.step()
    model.eval()
    reference.eval()
    with torch.no_grad():
        for sub, _, wname in pairs:
            getattr(sub, wname + "_orig").mul_(-2.0)  # a write the next forward must see
    _sync(pairs)
    with torch.no_grad():
        torch.testing.assert_close(call(layer, model, x)[0], call(layer, reference, x)[0])


class _Halve(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 0.5


@pytest.mark.parametrize("name", names())
def test_parametrize_acts_on_every_leaf_layer(name: str) -> None:
    layer = BY_NAME[name]
    model = layer.make()
    reference = copy.deepcopy(model)
    for sub, ref in zip(leaf_layers(model), leaf_layers(reference), strict=True):
        wname = weight_name(sub)
        parametrize.register_parametrization(sub, wname, _Halve())
        with torch.no_grad():
            getattr(ref, wname).mul_(0.5)
    x = torch.randn(L, N, I)
    out, out_ref = call(layer, model, x)[0], call(layer, reference, x)[0]
    torch.testing.assert_close(out, out_ref)
    out.sum().backward()
    out_ref.sum().backward()
    for sub, ref in zip(leaf_layers(model), leaf_layers(reference), strict=True):
        wname = weight_name(ref)
        original = sub.parametrizations[wname].original
        torch.testing.assert_close(original.grad, getattr(ref, wname).grad * 0.5)

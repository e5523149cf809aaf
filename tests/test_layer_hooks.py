"""Hooks on the layers of `SRU`, `SRUpp`, `parrnn.compat.sru.SRU` and the cells (QRNN, MinGRU, MinLSTM, HGRN) fire:
the stacks call their layers as modules, in `forward` and in `step`.

Pruning (a forward pre-hook), `torch.nn.utils.parametrize`, forward hooks and pre-hooks are compared against the
same model without the hook machinery, in training and in inference (issue 21, section 2).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
from torch import nn

import parrnn
import parrnn.compat.sru as compat

# kind -> (build the model, the name of its layer list, a parameter owned by each layer itself)
KINDS = {
    "SRU": (lambda: parrnn.SRU(6, 6, 2), "layers", "weight"),
    "SRUpp": (lambda: parrnn.SRUpp(6, 6, 4, 2, num_heads=2), "layers", "weight_c"),
    "compat.SRU": (lambda: compat.SRU(6, 6, 2), "rnn_lst", "weight"),
    "QRNN": (lambda: parrnn.QRNN(6, 6, 2, window=2), "layers", "weight"),
    "MinGRU": (lambda: parrnn.MinGRU(6, 6, 2), "layers", "weight"),
    "MinLSTM": (lambda: parrnn.MinLSTM(6, 6, 2), "layers", "weight"),
    "HGRN": (lambda: parrnn.HGRN(6, 6, 2, lower_bound=False), "layers", "weight"),
}
CELLS = ["QRNN", "MinGRU", "MinLSTM", "HGRN"]


def _build(kind: str) -> tuple[nn.Module, list[nn.Module], str]:
    make, layers, name = KINDS[kind]
    torch.manual_seed(0)
    model = make()
    return model, list(getattr(model, layers)), name


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_pruning_trains_and_infers_with_the_live_weights(kind: str) -> None:
    """Three SGD steps of a pruned model equal those of an unpruned copy whose weight is set to
    weight_orig * weight_mask before each step; then inference after a write to weight_orig."""
    model, layers, name = _build(kind)
    reference = copy.deepcopy(model)
    ref_layers = list(getattr(reference, KINDS[kind][1]))
    for layer in layers:
        prune.l1_unstructured(layer, name, 0.3)
    opt = torch.optim.SGD(model.parameters(), 0.5)
    opt_ref = torch.optim.SGD(reference.parameters(), 0.5)
    x = torch.randn(7, 3, 6)

    def sync() -> None:
        with torch.no_grad():
            for layer, ref in zip(layers, ref_layers, strict=True):
                getattr(ref, name).copy_(getattr(layer, name + "_orig") * getattr(layer, name + "_mask"))

    for _ in range(3):
        sync()
        opt.zero_grad()
        opt_ref.zero_grad()
        out, out_ref = _output(model, x), _output(reference, x)
        torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
        out.pow(2).mean().backward()
        out_ref.pow(2).mean().backward()
        for layer, ref in zip(layers, ref_layers, strict=True):
            mask = getattr(layer, name + "_mask")
            torch.testing.assert_close(getattr(layer, name + "_orig").grad, getattr(ref, name).grad * mask)
        opt.step()
        opt_ref.step()
    model.eval()
    reference.eval()
    with torch.no_grad():
        for layer in layers:
            getattr(layer, name + "_orig").mul_(-2.0)  # a write the next forward must see
    sync()
    with torch.no_grad():
        torch.testing.assert_close(_output(model, x), _output(reference, x), rtol=0, atol=0)


class _Halve(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 0.5


PARAMETRIZATIONS = {
    "SRU": lambda layer, name: torch.nn.utils.parametrizations.orthogonal(layer, name),
    "SRUpp": lambda layer, name: parametrize.register_parametrization(layer, name, _Halve()),
    "compat.SRU": lambda layer, name: torch.nn.utils.parametrizations.weight_norm(layer, name),
    **{cell: (lambda layer, name: parametrize.register_parametrization(layer, name, _Halve())) for cell in CELLS},
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", KINDS)
def test_parametrizations_equal_the_plain_weight(kind: str, training: bool) -> None:
    """An orthogonal, weight-norm or custom parametrization on every layer's weight: the same outputs as a plain
    model holding the parametrized values, and gradients reach the parametrization's parameters."""
    model, layers, name = _build(kind)
    model.train(training)
    for layer in layers:
        PARAMETRIZATIONS[kind](layer, name)
    reference, ref_layers, _ = _build(kind)
    reference.train(training)
    with torch.no_grad():
        for layer, ref in zip(layers, ref_layers, strict=True):
            getattr(ref, name).copy_(getattr(layer, name))
    x = torch.randn(5, 2, 6)
    torch.manual_seed(1)
    out = _output(model, x)
    torch.manual_seed(1)
    out_ref = _output(reference, x)
    torch.testing.assert_close(out, out_ref)
    if training:
        out.sum().backward()
        for layer in layers:
            assert all(p.grad is not None for p in layer.parametrizations[name].parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_forward_hooks_and_pre_hooks_fire_on_every_layer(kind: str) -> None:
    """A pre-hook doubling each layer's input and a forward hook recording the output: the result equals calling
    the layers one by one on doubled inputs, in training (with gradients) and in inference."""
    model, layers, _ = _build(kind)
    calls: list[int] = []
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda mod, args: (args[0] * 2.0, *args[1:]))
        layer.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
    reference = copy.deepcopy(model)
    ref_layers = list(getattr(reference, KINDS[kind][1]))
    for layer in ref_layers:
        layer._forward_pre_hooks.clear()
        layer._forward_hooks.clear()
    x = torch.randn(5, 2, 6, requires_grad=True)
    for training in (True, False):
        model.train(training)
        reference.train(training)
        calls.clear()
        out = _output(model, x)
        assert calls == list(range(len(layers)))
        h = x
        for ref in ref_layers:
            h = ref(h * 2.0)[0]
        torch.testing.assert_close(out, h)


def test_srupp_step_fires_the_layer_hooks_and_uses_pruned_weights() -> None:
    """SRUpp.step calls its layers as modules too: hooks fire once per layer and token, and a pruned
    weight_c written after pruning is what decoding uses."""
    model, layers, _ = _build("SRUpp")
    model.eval()
    calls: list[int] = []
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
        prune.l1_unstructured(layer, "weight_c", 0.5)
    with torch.no_grad():
        for layer in layers:
            layer.weight_c_orig.add_(1.0)
    x = torch.randn(4, 2, 6)
    with torch.no_grad():
        expected = model(x, attn_mask="causal")[0]
        calls.clear()
        state = model.init_state(2)
        outs = []
        for t in range(4):
            out, state = model.step(x[t], state)
            outs.append(out)
    assert calls == [0, 1] * 4
    torch.testing.assert_close(torch.stack(outs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_step_fires_the_layer_hooks_and_uses_pruned_weights(kind: str) -> None:
    """DiagonalRNN.step calls its layers as modules too: hooks fire once per layer and token, and a write to
    weight_orig after pruning is what the step uses (step equals forward token by token)."""
    model, layers, _ = _build(kind)
    model.eval()
    calls: list[int] = []
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
        prune.l1_unstructured(layer, "weight", 0.5)
    with torch.no_grad():
        for layer in layers:
            layer.weight_orig.mul_(-3.0)
    x = torch.randn(4, 2, 6)
    with torch.no_grad():
        expected = model(x)[0]
        assert calls == [0, 1]
        calls.clear()
        state, outs = model.init_state(2), []
        for t in range(4):
            out, state = model.step(x[t], state)
            outs.append(out)
    assert calls == [0, 1] * 4
    torch.testing.assert_close(torch.stack(outs), expected, rtol=1e-5, atol=1e-6)


def test_sru_step_fires_the_layer_hooks() -> None:
    """SRU.step runs each layer as a module (the fused forward at L = 1): hooks fire once per layer and token."""
    model, layers, _ = _build("SRU")
    model.eval()
    calls: list[int] = []
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
    x = torch.randn(3, 2, 6)
    with torch.no_grad():
        expected = model(x)[0]
        calls.clear()
        state, outs = model.init_state(2), []
        for t in range(3):
            out, state = model.step(x[t], state)
            outs.append(out)
    assert calls == [0, 1] * 3
    torch.testing.assert_close(torch.stack(outs), expected)

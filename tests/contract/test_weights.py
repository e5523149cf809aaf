"""No hidden copy of the weights: every way of writing a parameter reaches the next output, and a module
survives state_dict save/load, deepcopy and pickle with the same outputs."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from .registry import BY_NAME, I, L, N, call, names

ROUTES = ["data", "numpy", "copy_", "load_state_dict"]


def _perturbed(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with every floating parameter moved (buffers as they are)."""
    gen = torch.Generator().manual_seed(7)
    params = dict(model.named_parameters())
    return {k: (v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if k in params else v).detach().clone()
            for k, v in model.state_dict().items()}


def _write(model: nn.Module, target: dict[str, torch.Tensor], route: str) -> None:
    if route == "load_state_dict":
        model.load_state_dict(target)
        return
    for key, param in model.named_parameters():
        value = target[key]
        if route == "data":
            param.data = value.clone()
        elif route == "numpy":
            param.detach().numpy()[...] = value.numpy()  # a view: no version counter bump
        else:
            with torch.no_grad():
                param.copy_(value)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", names())
def test_a_write_to_the_weights_reaches_the_output(name: str, route: str, mode: str) -> None:
    """After a first forward (which may fill any cache), a write through ``route`` gives the output of a fresh
    module holding those weights."""
    layer = BY_NAME[name]
    model = layer.make().train(mode == "train")
    x = torch.randn(L, N, I)
    grad = mode == "train"
    with torch.set_grad_enabled(grad):
        call(layer, model, x)
        call(layer, model, x, lengths=[L, 4, 2])
    target = _perturbed(model)
    _write(model, target, route)
    fresh = layer.make(seed=1).train(mode == "train")
    fresh.load_state_dict(target)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(call(layer, model, x)[0], call(layer, fresh, x)[0])
        torch.testing.assert_close(call(layer, model, x, lengths=[L, 4, 2])[0],
                                   call(layer, fresh, x, lengths=[L, 4, 2])[0])


def _outputs(layer, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return call(layer, model.eval(), x)[0]


@pytest.mark.parametrize("how", ["state_dict", "deepcopy", "pickle"])
@pytest.mark.parametrize("name", names())
def test_save_load_deepcopy_pickle_keep_the_outputs(name: str, how: str) -> None:
    layer = BY_NAME[name]
    model = layer.make()
    x = torch.randn(L, N, I)
    expected = _outputs(layer, model, x)
    if how == "state_dict":
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        other = layer.make(seed=1)
        other.load_state_dict(torch.load(buffer, weights_only=True))
    elif how == "deepcopy":
        other = copy.deepcopy(model)
    else:
        other = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(_outputs(layer, other, x), expected, rtol=0, atol=0)
    with torch.no_grad():  # the copy owns its parameters
        next(other.parameters()).add_(1.0)
    torch.testing.assert_close(_outputs(layer, model, x), expected, rtol=0, atol=0)

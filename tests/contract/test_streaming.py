"""Streaming: ``step(x_t, state)`` equals ``forward`` at every step (from an initial state, and per sequence with
lengths), on every CPU backend; ``init_state(batch)`` has the structure of forward's state and means "zeros"."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from .registry import BY_NAME, I, L, N, all_tensors, call, layers, set_backend, state_tensors

LENGTHS = [L, 4, 2]


def _backend_params() -> list:
    return [pytest.param(la.name, b, id=f"{la.name}-{b}") for la in layers(step=True) for b in la.backends]


def _initial_state(layer, model):
    """A non-zero state of forward's structure: the final state after a random prefix."""
    with torch.no_grad():
        return call(layer, model, torch.randn(3, N, I), **layer.forward_kwargs)[1]


def _steps(model, x: torch.Tensor, state) -> tuple[list[torch.Tensor], list]:
    outputs, states = [], []
    for t in range(x.size(0)):
        out, state = model.step(x[t], state)
        outputs.append(out)
        states.append(state)
    return outputs, states


@pytest.mark.parametrize(("name", "backend"), _backend_params())
def test_step_equals_forward_at_every_step_from_an_initial_state(name: str, backend: str) -> None:
    layer = BY_NAME[name]
    model = layer.make().eval()
    set_backend(model, backend)
    x = torch.randn(L, N, I)
    state0 = _initial_state(layer, model)
    with torch.no_grad():
        out, state = call(layer, model, x, state0, **layer.forward_kwargs)
        outputs, states = _steps(model, x, layer.step_state(model, state0))
    torch.testing.assert_close(torch.stack(outputs), out)
    for got, want in zip(state_tensors(states[-1]), state_tensors(state), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("name", "backend"), _backend_params())
def test_step_equals_forward_with_lengths(name: str, backend: str) -> None:
    """Sequence ``n`` streamed for ``lengths[n]`` steps gives forward's outputs on its valid steps and forward's
    final state for it."""
    layer = BY_NAME[name]
    model = layer.make().eval()
    set_backend(model, backend)
    x = torch.randn(L, N, I)
    with torch.no_grad():
        out, state = call(layer, model, x, lengths=LENGTHS, **layer.forward_kwargs)
        outputs, states = _steps(model, x, None)
    for n, length in enumerate(LENGTHS):
        torch.testing.assert_close(torch.stack(outputs)[:length, n], out[:length, n])
        assert (out[length:, n] == 0).all(), "padded steps output 0"
        for got, want in zip(state_tensors(states[length - 1]), state_tensors(state), strict=True):
            torch.testing.assert_close(got[:, n], want[:, n])


def _structure(state) -> object:
    """Type and shapes/dtypes of a (nested) state."""
    if isinstance(state, torch.Tensor):
        return ("tensor", tuple(state.shape), state.dtype)
    if isinstance(state, (tuple, list)):
        return (type(state).__name__, [_structure(s) for s in state])
    if dataclasses.is_dataclass(state):
        return (type(state).__name__, {f.name: _structure(getattr(state, f.name)) for f in dataclasses.fields(state)})
    return type(state).__name__


@pytest.mark.parametrize("name", [la.name for la in layers(step=True)])
def test_init_state_has_forward_s_structure_and_means_zeros(name: str) -> None:
    layer = BY_NAME[name]
    model = layer.make().eval()
    x = torch.randn(L, N, I)
    with torch.no_grad():
        out, state = call(layer, model, x, **layer.forward_kwargs)
        zero = model.init_state(N)
        _, stepped = model.step(x[0], zero)
        if "state_object" in layer.exceptions:  # SRUpp: a state object (its key cache grows) whose c is forward's
            assert type(stepped) is type(zero), "step returns the state init_state makes"
            assert [t.shape for t in state_tensors(zero)] == [t.shape for t in state_tensors(state)]
            zero_for_forward = state_tensors(zero)[0]
        else:
            assert _structure(stepped) == _structure(zero), "step returns the state init_state makes"
            assert _structure(zero) == _structure(state)
            zero_for_forward = zero
        assert all((t == 0).all() for t in state_tensors(zero))
        wide = model.init_state(N, dtype=torch.float64)
        assert all(t.dtype == torch.float64 for t in state_tensors(wide)), "init_state(dtype=...)"
        out_zero, state_zero = call(layer, model, x, zero_for_forward, **layer.forward_kwargs)
        step_none, _ = model.step(x[0], None)
        step_zero, _ = model.step(x[0], model.init_state(N))
    torch.testing.assert_close(out_zero, out)
    for got, want in zip(all_tensors(state_zero), all_tensors(state), strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(step_zero, step_none)
    torch.testing.assert_close(step_none, out[0])

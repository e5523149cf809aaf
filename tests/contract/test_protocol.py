"""The protocol's shape: ``forward(input, state=None, lengths=None, *, mask=None) -> (output, state)`` on every
parrnn layer, and ``parrnn.last_output`` gives each sequence's output at its last valid step."""

from __future__ import annotations

import inspect

import pytest
import torch

import parrnn

from .registry import BY_NAME, I, L, N, call, names

LENGTHS = [L, 4, 2]


@pytest.mark.parametrize("name", names(step=True))
def test_forward_takes_state_lengths_and_mask_and_returns_output_and_state(name: str) -> None:
    layer = BY_NAME[name]
    model = layer.make()
    params = inspect.signature(model.forward).parameters
    assert list(params)[:3] == ["input", "state", "lengths"], list(params)
    assert "mask" in params and list(params).index("mask") > 2, list(params)  # keyword (TorchScript: no "*")
    with torch.no_grad():
        result = model(torch.randn(L, N, I), state=None, lengths=LENGTHS, mask=None, **layer.forward_kwargs)
    expected = 3 if "third_output" in layer.exceptions else 2  # SRUpp's memory_out (documented)
    assert isinstance(result, tuple) and len(result) == expected, f"forward returns (output, state), got {len(result)}"


@pytest.mark.parametrize("name", names(step=True))
def test_last_output_is_each_sequence_s_output_at_its_last_valid_step(name: str) -> None:
    layer = BY_NAME[name]
    with torch.no_grad():
        out = call(layer, layer.make(), torch.randn(L, N, I), lengths=LENGTHS)[0]
    last = parrnn.last_output(out, torch.tensor(LENGTHS))
    assert last.shape == (N, out.size(-1))
    for n, length in enumerate(LENGTHS):
        torch.testing.assert_close(last[n], out[length - 1, n])

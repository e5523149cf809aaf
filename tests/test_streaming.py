"""Streaming: a unidirectional SRU fed chunk by chunk, each chunk starting from the previous chunk's c_n,
gives exactly the whole sequence's output and final state (the recipe in docs/deploying.md)."""

from __future__ import annotations

import pytest
import torch

import parrnn


def stream(model: parrnn.SRU, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    state, outputs = None, []
    for piece in x.split(chunk):
        out, state = model(piece, state)
        outputs.append(out)
    return torch.cat(outputs), state


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(("layer_norm", "normalize_after"), [(False, False), (True, False), (True, True)])
def test_chunks_equal_whole_sequence(version: str, layer_norm: bool, normalize_after: bool) -> None:
    torch.manual_seed(0)
    model = parrnn.SRU(5, 4, num_layers=3, version=version, layer_norm=layer_norm, normalize_after=normalize_after,
                       projection_size=3, backend="reference").double().eval()
    x = torch.randn(23, 2, 5, dtype=torch.float64)
    with torch.no_grad():
        expected, c_expected = model(x)
        for chunk in (1, 4, 7, 23):
            out, c_n = stream(model, x, chunk)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(c_n, c_expected, rtol=1e-12, atol=1e-12)


def test_chunks_on_the_default_backend() -> None:
    torch.manual_seed(0)
    model = parrnn.SRU(5, 4, num_layers=2).eval()
    x = torch.randn(30, 3, 5)
    with torch.no_grad():
        expected, c_expected = model(x)
        out, c_n = stream(model, x, 8)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(c_n, c_expected)


def test_bidirectional_does_not_stream() -> None:
    """The reverse direction reads the future: chunked outputs differ from the whole sequence's."""
    torch.manual_seed(0)
    model = parrnn.SRU(5, 4, num_layers=1, bidirectional=True, backend="reference").double().eval()
    x = torch.randn(12, 2, 5, dtype=torch.float64)
    with torch.no_grad():
        expected, _ = model(x)
        out, _ = stream(model, x, 4)
    hidden = model.hidden_size
    torch.testing.assert_close(out[-1, :, :hidden], expected[-1, :, :hidden])  # the forward direction streams
    assert not torch.allclose(out[:, :, hidden:], expected[:, :, hidden:])  # the backward one does not

"""Streaming: a unidirectional SRU fed chunk by chunk, each chunk starting from the previous chunk's c_n,
gives exactly the whole sequence's output and final state (the recipe in docs/deploying.md); `step()` (one token at a
time, the layer protocol) equals `forward` for SRU and SRUCell, v1 and v2, with an initial state, on every backend
here."""

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


def _step_through(model, x: torch.Tensor, state):
    outputs = []
    for token in x:
        out, state = model.step(token, state)
        outputs.append(out)
    return torch.stack(outputs), state


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("cls", ["SRU", "SRUCell"])
def test_step_equals_forward(cls: str, version: str, backend: str) -> None:
    torch.manual_seed(0)
    if cls == "SRU":
        model = parrnn.SRU(5, 4, num_layers=3, version=version, layer_norm=True, projection_size=[0, 3, 0],
                           backend=backend)
        state = torch.randn(3, 2, 4)
    else:
        model = parrnn.SRUCell(5, 4, version=version, backend=backend)
        state = torch.randn(2, 4)
    model = model.double().eval()
    x = torch.randn(9, 2, 5, dtype=torch.float64)
    state = state.double()
    with torch.no_grad():
        for start in (None, state):
            expected, c_expected = model(x, start)
            out, c_n = _step_through(model, x, start)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(c_n, c_expected, rtol=1e-12, atol=1e-12)
        first, mid = model(x[:4], state)  # a prefix by forward, the rest by step
        rest, c_n = _step_through(model, x[4:], mid)
        torch.testing.assert_close(torch.cat([first, rest]), model(x, state)[0], rtol=1e-12, atol=1e-12)


def test_step_gradients_equal_forward() -> None:
    torch.manual_seed(0)
    model = parrnn.SRU(3, 3, num_layers=2, backend="reference").double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, c_n = model(x)
    grads = torch.autograd.grad(out.sum() + c_n.sum(), list(model.parameters()))
    out_s, c_s = _step_through(model, x, model.init_state(2))
    grads_s = torch.autograd.grad(out_s.sum() + c_s.sum(), list(model.parameters()))
    for got, want in zip(grads_s, grads, strict=True):
        torch.testing.assert_close(got, want)


def test_step_refuses_bidirectional_and_bad_input() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        parrnn.SRU(4, 4, num_layers=1, bidirectional=True).step(torch.randn(2, 4))
    model = parrnn.SRU(4, 4, num_layers=1)
    with pytest.raises(ValueError, match=r"\(N, input_size\)"):
        model.step(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="state must have shape"):
        model.step(torch.randn(2, 4), torch.zeros(2, 4))


@pytest.mark.parametrize("make", [lambda: parrnn.SRU(4, 4, num_layers=1), lambda: parrnn.SRUCell(4, 4),
                                  lambda: parrnn.MinGRU(4, 4), lambda: parrnn.QRNN(4, 4, window=2)],
                         ids=["SRU", "SRUCell", "MinGRU", "QRNN"])
def test_empty_batch_is_the_same_named_error_in_forward_and_step(make) -> None:
    model = make()
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.randn(3, 0, 4))
    with pytest.raises(ValueError, match="empty batch"):
        model.step(torch.randn(0, 4))

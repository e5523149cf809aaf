"""parrnn.RGLRU against recurrentgemma 1.0.1's torch RecurrentBlock (forward, and decoding with its cache), against
its reference step in float64 (values and gradients), gradcheck, padding, step() == forward, initialisation."""

from __future__ import annotations

import importlib
import math
import sys
import types
from pathlib import Path

import pytest
import torch

import parrnn
from parrnn.cells import reference_forward
from parrnn.rglru import MAX_SQRT_GRADIENT, sqrt_bounded_gradient

D, H = 5, 8


def load_recurrentgemma():
    """recurrentgemma's torch modules without its package __init__ (which imports JAX): the two folders are
    registered as bare packages. Installed by scripts/bootstrap.sh under .venv/recurrentgemma."""
    if "recurrentgemma.torch.modules" in sys.modules:
        return sys.modules["recurrentgemma.torch.modules"]
    pytest.importorskip("einops")
    pytest.importorskip("jaxtyping")
    root = Path(sys.prefix) / "recurrentgemma" / "recurrentgemma"
    if not (root / "torch" / "modules.py").is_file():
        pytest.skip("recurrentgemma 1.0.1 is not installed under .venv/recurrentgemma (scripts/bootstrap.sh)")
    for name, path in (("recurrentgemma", root), ("recurrentgemma.torch", root / "torch")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    return importlib.import_module("recurrentgemma.torch.modules")


@pytest.fixture(scope="module")
def rg():
    return load_recurrentgemma()


def random_blocks(rg, count: int, *, width: int = 6, lru_width: int = 8, heads: int = 2, dtype=torch.float32):
    """recurrentgemma blocks with every parameter (biases included) moved off its initial value."""
    torch.manual_seed(0)
    blocks = [rg.RecurrentBlock(width, heads, lru_width=lru_width, dtype=dtype) for _ in range(count)]
    with torch.no_grad():
        for block in blocks:
            for p in block.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return blocks


def zero_state(model: parrnn.RGLRU, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented zero state ``(h (num_layers, N, H), x (num_layers, N, (K - 1) * H + 1))``."""
    options = {"dtype": model.layers[0].weight.dtype}
    return (torch.zeros(model.num_layers, batch, model.hidden_size, **options),
            torch.zeros(model.num_layers, batch, (model.conv_width - 1) * model.hidden_size + 1, **options))


def make(num_layers: int = 2, **options) -> parrnn.RGLRU:
    torch.manual_seed(0)
    model = parrnn.RGLRU(D, H, num_layers, **{"num_heads": 2, **options}).double()
    with torch.no_grad():  # off the initial values: nonzero biases, a spread of decays
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


# ---- recurrentgemma ----------------------------------------------------------------------------------------------

def test_forward_matches_recurrentgemma(rg) -> None:
    blocks = random_blocks(rg, 2)
    model = parrnn.RGLRU.from_recurrentgemma(*blocks)
    x = torch.randn(3, 11, 6)
    segment_pos = torch.arange(11).expand(3, 11)
    want, caches = x, []
    for block in blocks:
        want, cache = block(want, segment_pos)
        caches.append(cache)
    got, (h_n, conv_n) = model(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for k, cache in enumerate(caches):
        torch.testing.assert_close(h_n[k], cache.rg_lru_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv_n[k, :, :-1].view(3, 3, 8), cache.conv1d_state)
        assert bool((conv_n[k, :, -1] == 1).all())


@pytest.mark.parametrize("prompt", [0, 5], ids=["from-scratch", "after-prompt"])
def test_step_matches_recurrentgemma_decoding(rg, prompt: int) -> None:
    (block,) = random_blocks(rg, 1)
    model = parrnn.RGLRU.from_recurrentgemma(block)
    x = torch.randn(2, prompt + 6, 6)
    state = None
    if prompt:
        _, cache = block(x[:, :prompt], torch.arange(prompt).expand(2, prompt))
        _, state = model(x[:, :prompt])
    else:
        cache = rg.RecurrentBlock.init_cache(2, 8, torch.float32)
    for t in range(prompt, x.size(1)):
        want, cache = block(x[:, t:t + 1], torch.full((2, 1), t), cache)
        got, state = model.step(x[:, t], state)
        torch.testing.assert_close(got, want[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state[0][0], cache.rg_lru_state, atol=1e-5, rtol=1e-5)


def test_from_recurrentgemma_rejects_mismatched_blocks(rg) -> None:
    (a,) = random_blocks(rg, 1)
    (b,) = random_blocks(rg, 1, lru_width=4)
    with pytest.raises(ValueError, match="lru_width"):
        parrnn.RGLRU.from_recurrentgemma(a, b)
    with pytest.raises(ValueError, match="at least one"):
        parrnn.RGLRU.from_recurrentgemma()


# ---- the equations ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"conv_width": 1}, {"conv_width": 2, "bias": False},
                                     {"num_heads": 4, "output_size": 3}], ids=str)
def test_values_and_gradients_match_the_reference_step(options: dict) -> None:
    model = make(**options)
    x = torch.randn(7, 3, D, dtype=torch.float64)
    for state in (None, "random"):
        if state == "random":
            h0, carried = (torch.randn_like(part) for part in zero_state(model, 3))
            carried[..., -1] = torch.tensor([1.0, 0.0, 1.0])  # sequences 0 and 2 continue, 1 starts
            state = (h0, carried)
        out, (h_n, carry_n) = model(x, state)
        ref, (ref_h, ref_carry) = reference_forward(model, x, state)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(h_n, ref_h)
        torch.testing.assert_close(carry_n, ref_carry)
        names, params = zip(*model.named_parameters(), strict=True)
        weights = torch.randn_like(out)
        grads = torch.autograd.grad((out * weights).sum() + h_n.sum(), params)
        ref_grads = torch.autograd.grad((ref * weights).sum() + ref_h.sum(), params)
        for name, got, want in zip(names, grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, msg=name)


def test_gradcheck() -> None:
    model = make(num_layers=2, conv_width=3)
    x = torch.randn(5, 2, D, dtype=torch.float64, requires_grad=True)
    h0, carried = (torch.randn_like(part) for part in zero_state(model, 2))
    h0.requires_grad_()
    carried[..., -1] = 1
    carried.requires_grad_()

    def run(x, h0, carried):
        out, (h_n, carry_n) = model(x, (h0, carried), lengths=torch.tensor([5, 3]))
        return out, h_n, carry_n

    assert torch.autograd.gradcheck(run, (x, h0, carried))


def test_sqrt_bounded_gradient() -> None:
    v = torch.tensor([0.0, 1e-9, 0.25, 1.0], dtype=torch.float64, requires_grad=True)
    out = sqrt_bounded_gradient(v)
    torch.testing.assert_close(out, v.detach().sqrt())
    (grad,) = torch.autograd.grad(out.sum(), v)
    torch.testing.assert_close(grad, torch.tensor([MAX_SQRT_GRADIENT, MAX_SQRT_GRADIENT, 1.0, 0.5],
                                                  dtype=torch.float64))


# ---- the contract ------------------------------------------------------------------------------------------------

def test_step_and_chunks_equal_forward() -> None:
    model = make(num_layers=3)
    x = torch.randn(9, 4, D, dtype=torch.float64)
    out, state = model(x)
    step_state, outs = None, []
    for t in range(9):
        y, step_state = model.step(x[t], step_state)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs), out)
    for got, want in zip(step_state, state, strict=True):
        torch.testing.assert_close(got, want)
    first, middle = model(x[:2])
    second, end = model(x[2:], middle)
    torch.testing.assert_close(torch.cat([first, second]), out)
    torch.testing.assert_close(end[1], state[1])
    zero, _ = model(x, zero_state(model, 4))  # a zero state starts a sequence, as None does
    torch.testing.assert_close(zero, out)
    if hasattr(model, "init_state"):  # (the layer protocol's init_state)
        for got, want in zip(model.init_state(4), zero_state(model, 4), strict=True):
            torch.testing.assert_close(got, want)


def test_padding_never_leaks() -> None:
    model = make(num_layers=2)
    lengths = [7, 2, 5, 1]
    x = torch.randn(7, 4, D, dtype=torch.float64)
    for n, length in enumerate(lengths):
        x[length:, n] = float("nan")
    x.requires_grad_()
    out, (h_n, carry_n) = model(x, lengths=torch.tensor(lengths))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    for n, length in enumerate(lengths):
        alone, (h_alone, carry_alone) = model(x[:length, n:n + 1].detach())
        torch.testing.assert_close(out[:length, n:n + 1], alone)
        assert bool((out[length:, n] == 0).all())
        assert bool((x.grad[length:, n] == 0).all())
        torch.testing.assert_close(h_n[:, n:n + 1], h_alone)
        torch.testing.assert_close(carry_n[:, n:n + 1], carry_alone)  # a short sequence keeps zeros before it


def test_packed_sequence_and_batch_first() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    model = make(num_layers=1)
    x = torch.randn(6, 3, D, dtype=torch.float64)
    lengths = torch.tensor([4, 6, 2])
    want, _ = model(x, lengths=lengths)
    packed, _ = model(pack_padded_sequence(x, lengths, enforce_sorted=False))
    torch.testing.assert_close(pad_packed_sequence(packed)[0], want[:6])
    model.batch_first = True
    got, _ = model(x.transpose(0, 1), lengths=lengths)
    torch.testing.assert_close(got.transpose(0, 1), want)


def test_initialisation_follows_the_paper() -> None:
    torch.manual_seed(0)
    model = parrnn.RGLRU(64, 4096, num_heads=8, output_size=32)
    layer = model.layers[0]
    radius_squared = torch.exp(-torch.nn.functional.softplus(layer.a_param)) ** 2
    assert radius_squared.min() >= 0.9**2 - 1e-6 and radius_squared.max() <= 0.999**2 + 1e-6
    assert abs(radius_squared.mean().item() - (0.9**2 + 0.999**2) / 2) < 3e-3  # uniform on the ring
    for name, expected in (("weight", 1 / 64), ("conv_weight", 0.01 / 4), ("gate_weight", 8 / 4096),
                           ("weight_out", 1 / 4096)):
        std = getattr(layer, name).std().item()
        assert abs(std - math.sqrt(expected)) < 0.05 * math.sqrt(expected), name
    for name in ("bias", "conv_bias", "gate_bias", "bias_out"):
        assert bool((getattr(layer, name) == 0).all()), name
    assert model.output_size == 32 and layer.gate_weight.shape == (2, 8, 512, 512)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="bidirectional=True is not supported by RGLRU"):
        parrnn.RGLRU(D, H, bidirectional=True)
    with pytest.raises(ValueError, match=r"hidden_size must be a multiple of num_heads \(3\)"):
        parrnn.RGLRU(D, H, num_heads=3)
    with pytest.raises(ValueError, match="conv_width"):
        parrnn.RGLRU(D, H, conv_width=0)
    model = make(num_layers=1)
    with pytest.raises(TypeError, match=r"pair \(h, x\)"):
        model(torch.randn(3, 2, D, dtype=torch.float64), torch.zeros(1, 2, H, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["sequential", "scan"])
def test_fused_backends_equal_the_reference(backend: str) -> None:
    available, why = parrnn.ops.linear_recurrence.op.backend_availability(backend, "cpu", torch.float32)
    if not available:
        pytest.skip(f"backend {backend!r} unavailable here: {why}")
    model = make(num_layers=2).float()
    x = torch.randn(9, 3, D)
    lengths = torch.tensor([9, 4, 1])
    model.backend = "reference"
    want, want_state = model(x, lengths=lengths)
    want_grads = torch.autograd.grad(want.square().sum(), list(model.parameters()))
    model.backend = backend
    got, got_state = model(x, lengths=lengths)
    torch.testing.assert_close(got, want)
    for a, b in zip(got_state, want_state, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(torch.autograd.grad(got.square().sum(), list(model.parameters())), want_grads, strict=True):
        torch.testing.assert_close(a, b)

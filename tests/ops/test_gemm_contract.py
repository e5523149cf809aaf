"""The matrix-product engine's contract: a product always reads the weight as it is now.

For every engine (pinned) and for ``"auto"`` (made to choose each engine), a model's outputs after any write
to a weight -- ``.data``, a numpy view, ``set_``, ``copy_``, steps of ``torch.optim`` optimizers (fused
included) and of a hand-written one, pruning -- equal those of a fresh model built from the current
``state_dict``. Also: deterministic algorithms give bit-identical results across processes, and
``torch.func`` transforms differentiate through the engine's products.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import parrnn
from parrnn.ops import gemm

AVAILABLE = [name for name, (ok, _) in gemm.engines().items() if ok]
#: pinned engines, and "auto" made to choose each engine by an injected timer
SETTINGS = [f"pin-{name}" for name in AVAILABLE] + [f"auto-{name}" for name in AVAILABLE]


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch):
    monkeypatch.delenv("PARRNN_GEMM", raising=False)
    monkeypatch.delenv("PARRNN_GEMM_CACHE", raising=False)
    gemm.reset()
    yield
    fallen_back = gemm.fallbacks()
    gemm.reset()
    gemm.set_timer(None)
    assert not fallen_back, f"an engine raised and torch.mm silently ran instead: {fallen_back}"


def _use(setting: str) -> None:
    how, engine = setting.split("-", 1)
    if how == "pin":
        gemm.set_engine(engine)
    else:
        gemm.set_engine("auto")
        gemm.set_timer(lambda name, run: (run(), 0.0 if name == engine else 1.0)[1])


def _sru() -> torch.nn.Module:
    return parrnn.SRU(24, 24, num_layers=2, projection_size=8, backend="cpu")


def _sliced() -> torch.nn.Module:
    return parrnn.SlicedRNN(24, 24, slices=2, levels=1, cell="gru")


MODELS = {"sru": _sru, "sliced-gru": _sliced}


def _first_weight(model: torch.nn.Module) -> torch.nn.Parameter:
    return next(p for name, p in model.named_parameters() if p.dim() == 2 and "weight" in name)


def _write_data(w):
    w.data[:, 1] = 0


def _write_prune(w):
    w.data.mul_(w.data.abs() > w.data.abs().quantile(0.3))


def _write_numpy(w):
    w.detach().numpy()[0, :] += 1.0


def _write_set(w):
    with torch.no_grad():
        w.set_(w.detach().clone().mul_(-0.5))


def _write_copy(w):
    with torch.no_grad():
        w.copy_(torch.randn_like(w))


WRITES = {"data": _write_data, "prune": _write_prune, "numpy": _write_numpy, "set_": _write_set,
          "copy_": _write_copy}


def _output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def _fresh_copy(model: torch.nn.Module, build) -> torch.nn.Module:
    fresh = build()
    fresh.load_state_dict(model.state_dict())
    return fresh.train(model.training)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("write", sorted(WRITES))
def test_outputs_after_a_write_equal_a_fresh_model(setting, model_name, write):
    _use(setting)
    torch.manual_seed(0)
    model = MODELS[model_name]().eval()
    x = torch.randn(8, 3, 24)
    with torch.no_grad():
        before = _output(model, x)
        WRITES[write](_first_weight(model))
        after = _output(model, x)
        fresh = _output(_fresh_copy(model, MODELS[model_name]), x)
    assert not torch.equal(before, after), "the write changed nothing: the test would not see a stale weight"
    torch.testing.assert_close(after, fresh, rtol=1e-6, atol=1e-6)


class _HandWrittenSGD:
    """An optimizer outside torch.optim: writes through ``.data`` (no version bump, no torch.optim hooks)."""

    def __init__(self, params, lr: float) -> None:
        self.params, self.lr = list(params), lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.data.add_(p.grad, alpha=-self.lr)


OPTIMIZERS = {
    "adamw-fused": lambda ps: torch.optim.AdamW(ps, lr=0.05, fused=True),
    "adamw-foreach": lambda ps: torch.optim.AdamW(ps, lr=0.05, foreach=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "hand-written": lambda ps: _HandWrittenSGD(ps, lr=0.05),
}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_steps_are_always_seen(setting, model_name, optimizer):
    """Train a few steps; after each, evaluation and the next gradient equal a fresh model's."""
    _use(setting)
    torch.manual_seed(0)
    model = MODELS[model_name]()
    x = torch.randn(8, 3, 24)
    opt = OPTIMIZERS[optimizer](model.parameters())
    for _ in range(3):
        opt.zero_grad()
        _output(model, x).square().mean().backward()
        opt.step()
        fresh = _fresh_copy(model, MODELS[model_name])
        with torch.no_grad():
            torch.testing.assert_close(_output(model.eval(), x), _output(fresh.eval(), x), rtol=1e-6, atol=1e-6)
        model.train()
        fresh.train()
        grads = torch.autograd.grad(_output(model, x).square().mean(), list(model.parameters()))
        fresh_grads = torch.autograd.grad(_output(fresh, x).square().mean(), list(fresh.parameters()))
        for got, want in zip(grads, fresh_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_reported_reproduction(setting):
    """The issue's example: a ``.data`` write between two inference calls changed nothing (error 0.0)."""
    _use(setting)
    torch.manual_seed(0)
    m = parrnn.SRU(32, 32).eval()
    x = torch.randn(20, 4, 32)
    with torch.no_grad():
        y0 = m(x)[0]
        m.layers[0].weight.data[:, 1] = 0
        y1 = m(x)[0]
        fresh = parrnn.SRU(32, 32).eval()
        fresh.load_state_dict(m.state_dict())
        torch.testing.assert_close(y1, fresh(x)[0], rtol=1e-6, atol=1e-6)
    assert (y1 - y0).abs().max() > 0.1


def test_no_process_wide_hooks():
    from torch.optim import optimizer as optim_module

    hooks_before = dict(optim_module._global_optimizer_post_hooks)
    _use("auto-mm")
    torch.manual_seed(0)
    model = _sru()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _output(model, torch.randn(4, 2, 24)).sum().backward()
    opt.step()
    assert dict(optim_module._global_optimizer_post_hooks) == hooks_before


def test_deterministic_mode_never_times():
    gemm.set_engine("auto")
    gemm.set_timer(lambda name, run: pytest.fail("timed under deterministic algorithms"))
    torch.use_deterministic_algorithms(True)
    try:
        x, w = torch.randn(64, 32), torch.randn(32, 48)
        torch.testing.assert_close(gemm.matmul(x, w), x @ w)
        assert gemm.choose("kn", 64, 32, 48, torch.float32, 2, measure=lambda n: lambda: None) == "mm"
    finally:
        torch.use_deterministic_algorithms(False)


_DETERMINISTIC_RUN = textwrap.dedent("""
    import hashlib, torch, parrnn
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    m = parrnn.SRU(64, 64, num_layers=2)
    x = torch.randn(32, 8, 64, requires_grad=True)
    out, c = m(x)
    (out.square().mean() + c.sum()).backward()
    h = hashlib.sha256()
    for t in (out, c, x.grad, *(p.grad for p in m.parameters())):
        h.update(t.detach().contiguous().numpy().tobytes())
    print(h.hexdigest())
""")


def test_deterministic_algorithms_give_bit_identical_results_across_processes():
    digests = {subprocess.run([sys.executable, "-c", _DETERMINISTIC_RUN], check=True, capture_output=True,
                              text=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1, digests


@pytest.mark.parametrize("setting", SETTINGS)
def test_torch_func_grad_through_the_engine(setting):
    _use(setting)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 24, generator=g), torch.randn(24, 24, generator=g)
    got = torch.func.grad(lambda w: gemm.matmul(x, w).square().sum())(w)
    torch.testing.assert_close(got, 2 * x.t() @ (x @ w))


@pytest.mark.parametrize("cls", ["SRU", "SRUpp"])
def test_torch_func_grad_of_layers_equals_autograd(cls):
    torch.manual_seed(0)
    model = parrnn.SRU(16, 16, num_layers=2) if cls == "SRU" else parrnn.SRUpp(16, 16, 8, num_layers=2)
    x = torch.randn(6, 3, 16)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p):
        return torch.func.functional_call(model, p, (x,))[0].square().mean()

    got = torch.func.grad(loss)(params)
    model(x)[0].square().mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-5, atol=1e-7)

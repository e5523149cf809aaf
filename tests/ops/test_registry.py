"""`parrnn.ops.registry`: one backend choice for every op -- availability cached and re-probed, one fallback
warning, deprecated aliases, every op reachable; and the paths it routes to: ``torch.func`` and forward-mode AD
through the differentiable reference, a named error for double backward through a fused backward, and a graph
that chooses ``"auto"`` at run time (``torch.compile(fullgraph=True)`` at ``L * N * C >= 2**23``)."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch
from torch import Tensor
from torch.autograd import forward_ad

import parrnn
from parrnn.ops import registry
from parrnn.ops.linear_recurrence import linear_recurrence
from parrnn.ops.linear_recurrence import reference as lr_reference
from parrnn.ops.sru import dispatch
from parrnn.ops.sru import reference as sru_reference

CPU = torch.device("cpu")


# ---- a fake op over a fake backend module -------------------------------------------------------------------------

@pytest.fixture
def fake_op(monkeypatch):
    """An op ``"fake"`` whose only fused backend (``sequential`` on the CPU) is a module counting its probes;
    ``module.works`` says what the next probe answers."""
    module = types.ModuleType("parrnn_test_fake_backend")
    module.probes = 0
    module.works = True

    def availability(device, dtype):
        module.probes += 1
        return module.works, "fake kernel" if module.works else "fake build failed"

    module.availability = availability
    monkeypatch.setitem(sys.modules, module.__name__, module)
    op = registry.Op("fake", modules={("sequential", "cpu"): module.__name__},
                     rules=(registry.AutoRule("cpu", "sequential", measurement="a test"),))
    monkeypatch.setitem(registry.OPS, "fake", op)
    yield op, module
    registry.reprobe("fake")


def test_availability_is_probed_once_and_reprobe_forgets_it(fake_op) -> None:
    op, module = fake_op
    assert registry.backend_availability(op, "sequential") == (True, "fake kernel")
    assert registry.backend_availability("fake", "sequential", "cpu", torch.float32) == (True, "fake kernel")
    assert module.probes == 1
    registry.backend_availability(op, "sequential", "cpu", torch.float64)  # another dtype is another probe
    assert module.probes == 2
    module.works = False
    assert registry.backend_availability(op, "sequential")[0]  # still the cached answer
    registry.reprobe("fake")
    assert registry.backend_availability(op, "sequential") == (False, "fake build failed")
    assert module.probes == 3


def test_an_unavailable_auto_backend_warns_once_then_again_after_reprobe(fake_op) -> None:
    op, module = fake_op
    module.works = False

    def choose() -> str:
        return registry.choose(op, "auto", CPU, torch.float32, length=4, columns=4)

    with pytest.warns(RuntimeWarning, match=r"fake: the 'sequential' backend is unavailable .*fake build failed"):
        assert choose() == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose() == "reference"  # once
    registry.reprobe(op)
    with pytest.warns(RuntimeWarning, match="fake build failed"):
        choose()


def test_an_explicit_unavailable_backend_raises_with_the_reason(fake_op) -> None:
    op, module = fake_op
    module.works = False
    with pytest.raises(RuntimeError, match="fake backend 'sequential' is unavailable .*fake build failed"):
        registry.choose(op, "sequential", CPU, torch.float32, length=4, columns=4)
    ok, why = registry.backend_availability(op, "scan")
    assert not ok and "no scan kernel for cpu" in why


def test_the_graph_choice_defers_auto_and_reads_no_thread_count(fake_op, monkeypatch) -> None:
    op, module = fake_op
    monkeypatch.setattr(torch, "get_num_threads", lambda: pytest.fail("read the thread count at graph time"))
    assert registry.graph_choice(op, "auto", CPU, torch.float32) == "auto"
    assert registry.graph_choice(op, "sequential", CPU, torch.float32) == "sequential"
    module.works = False
    registry.reprobe(op)
    with pytest.warns(RuntimeWarning, match="fake build failed"):
        assert registry.graph_choice(op, "auto", CPU, torch.float32) == "reference"


# ---- words and aliases --------------------------------------------------------------------------------------------

def test_backend_words_are_the_same_for_every_op() -> None:
    for name in ("sru", "linear_recurrence", "gru_rows"):
        for word in registry.WORDS:
            assert registry.normalize(name, word) == word
        with pytest.raises(ValueError, match="backend must be one of"):
            registry.normalize(name, "triton")


@pytest.mark.parametrize("alias", ["cpu", "cuda"])
def test_sru_old_words_are_deprecated_aliases_of_sequential(alias: str) -> None:
    with pytest.warns(DeprecationWarning, match="backend='sequential'"):
        assert dispatch.check_backend(alias) == "sequential"
    with pytest.warns(DeprecationWarning, match="backend='sequential'"):
        model = parrnn.SRU(4, 4, num_layers=1, backend=alias)
    x = torch.randn(3, 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        got = model(x)[0]
    model.backend = "reference"
    torch.testing.assert_close(got, model(x)[0])
    with pytest.raises(ValueError, match="backend must be one of"):
        registry.normalize("linear_recurrence", alias)  # the aliases are SRU's only


def test_every_op_is_reachable_through_the_registry() -> None:
    report = parrnn.available_backends()
    for name in ("sru", "linear_recurrence", "gru_rows"):
        for backend in ("reference", "sequential", "scan"):
            assert f"{name} {backend}" in report
        assert report[f"{name} reference"] == (True, "pure PyTorch")
        ok, why = report[f"{name} sequential"]
        assert ok, why
        assert registry.backend_module(name, "sequential", "cpu").availability
    assert not report["gru_rows scan"][0]
    compiled = parrnn.precompile("cpu")
    assert {key.rsplit(" ", 1)[0] for key in compiled} == {
        "sru sequential", "sru scan", "linear_recurrence sequential", "linear_recurrence scan", "gru_rows sequential"}
    assert all(key.endswith(" float32") for key in compiled)


# ---- torch.func, forward-mode AD, double backward -----------------------------------------------------------------

def _lr_inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = 0.5 + 0.5 * torch.rand(6, 3, 4, generator=gen, dtype=torch.float64)
    return a, torch.randn(6, 3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 4, generator=gen,
                                                                                   dtype=torch.float64)


def _lr(backend: str):
    def fn(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h, h_n = linear_recurrence(a, b, h0, backend=backend)
        return (h * h).sum() + h_n.sum()
    return fn


def _sru_inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(5, 2, 3, 4, generator=gen, dtype=torch.float64),
            torch.randn(2, 4, generator=gen, dtype=torch.float64),
            torch.randn(2, 4, generator=gen, dtype=torch.float64),
            torch.randn(2, 4, generator=gen, dtype=torch.float64))


def _sru(backend: str):
    def fn(u: Tensor, weight_c: Tensor, bias: Tensor, c0: Tensor) -> Tensor:
        h, c_n = dispatch.sru_recurrence(u, None, weight_c, bias, c0, None, None, backend=backend)
        return (h * h).sum() + c_n.sum()
    return fn


OPS = {"linear_recurrence": (_lr, _lr_inputs), "sru": (_sru, _sru_inputs)}


def _autograd_grads(fn, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    return torch.autograd.grad(fn(*leaves), leaves)


@pytest.mark.parametrize("op", list(OPS))
def test_torch_func_grad_equals_autograd(op: str) -> None:
    make_fn, make_inputs = OPS[op]
    inputs = make_inputs()
    want = _autograd_grads(make_fn("reference"), inputs)
    got = torch.func.grad(make_fn("sequential"), argnums=tuple(range(len(inputs))))(*inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert _autograd_grads(make_fn("sequential"), inputs)[0].shape == want[0].shape


@pytest.mark.parametrize("op", list(OPS))
def test_torch_func_vmap_equals_a_loop(op: str) -> None:
    make_fn, make_inputs = OPS[op]
    batches = [make_inputs(seed) for seed in range(3)]
    stacked = [torch.stack(ts) for ts in zip(*batches, strict=True)]
    got = torch.func.vmap(make_fn("sequential"))(*stacked)
    want = torch.stack([make_fn("reference")(*inputs) for inputs in batches])
    torch.testing.assert_close(got, want)


def _finite_difference(fn, inputs: tuple[Tensor, ...], tangents: tuple[Tensor, ...], eps: float = 1e-6) -> Tensor:
    plus = fn(*(t + eps * v for t, v in zip(inputs, tangents, strict=True)))
    minus = fn(*(t - eps * v for t, v in zip(inputs, tangents, strict=True)))
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("op", list(OPS))
def test_torch_func_jvp_equals_finite_differences(op: str) -> None:
    make_fn, make_inputs = OPS[op]
    inputs, tangents = make_inputs(0), make_inputs(1)
    value, tangent = torch.func.jvp(make_fn("sequential"), inputs, tangents)
    torch.testing.assert_close(value, make_fn("reference")(*inputs))
    torch.testing.assert_close(tangent, _finite_difference(make_fn("reference"), inputs, tangents))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["frozen", "requires_grad"])
@pytest.mark.parametrize("op", list(OPS))
def test_forward_mode_ad_tangent_equals_finite_differences(op: str, requires_grad: bool) -> None:
    """Dual tensors through the fused backend: the right tangent, with and without inputs that require grad
    (frozen parameters used to reach the kernel directly and lose the tangent)."""
    make_fn, make_inputs = OPS[op]
    inputs, tangents = make_inputs(0), make_inputs(1)
    want = _finite_difference(make_fn("reference"), inputs, tangents)
    inputs = tuple(t.detach().clone().requires_grad_(requires_grad) for t in inputs)
    with forward_ad.dual_level():
        duals = [forward_ad.make_dual(t, v) for t, v in zip(inputs, tangents, strict=True)]
        tangent = forward_ad.unpack_dual(make_fn("sequential")(*duals)).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, want)


def test_forward_mode_ad_with_one_dual_input_and_no_grad() -> None:
    a, b, h0 = _lr_inputs()
    tb = torch.randn_like(b)
    with torch.no_grad(), forward_ad.dual_level():
        h, _ = linear_recurrence(a, forward_ad.make_dual(b, tb), h0, backend="sequential")
        tangent = forward_ad.unpack_dual(h).tangent
    # h is linear in b: its tangent is the recurrence of tb from a zero state
    torch.testing.assert_close(tangent, lr_reference.linear_recurrence(a, tb)[0])


class _Decay(torch.nn.Module):
    """A module over the op: ``h_t = sigmoid(w) * h_{t-1} + x_t``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return linear_recurrence(torch.sigmoid(self.w).expand_as(x), x, backend="sequential")[0]


def test_functional_call_and_grad_through_the_op_equal_the_module() -> None:
    model, x = _Decay(), torch.randn(6, 2, 4, dtype=torch.float64)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    torch.testing.assert_close(torch.func.functional_call(model, params, (x,)), model(x))
    grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params)
    model(x).sum().backward()
    torch.testing.assert_close(grads["w"], model.w.grad)


@pytest.mark.parametrize("op", list(OPS))
def test_double_backward_through_a_fused_backward_names_the_reference(op: str) -> None:
    make_fn, make_inputs = OPS[op]
    leaves = [t.detach().clone().requires_grad_() for t in make_inputs()]
    grads = torch.autograd.grad(make_fn("sequential")(*leaves), leaves, create_graph=True)
    with pytest.raises(registry.DoubleBackwardError, match='backend="reference"'):
        sum(g.sum() for g in grads).backward()
    # the reference supports it
    leaves = [t.detach().clone().requires_grad_() for t in make_inputs()]
    assert torch.autograd.gradgradcheck(make_fn("reference"), leaves)


# ---- graphs -------------------------------------------------------------------------------------------------------

def test_compile_fullgraph_sru_v1_where_auto_may_pick_the_scan(monkeypatch) -> None:
    """``L * N * C >= 2**23`` is where the SRU's auto rule asks the thread count; the graph must not (it chooses
    inside the custom op at run time: the scan on 2 threads), forward and backward."""
    chosen: list[str] = []
    choice = registry.run_time_choice
    monkeypatch.setattr(registry, "run_time_choice",
                        lambda *args, **kwargs: chosen.append(choice(*args, **kwargs)) or chosen[-1])
    torch._dynamo.reset()
    model = parrnn.SRU(4, 256, num_layers=1, version="v1")
    x = torch.randn(1 << 15, 1, 4)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out, c = compiled(x)
        out.sum().backward()
        grad = model.weight_proj.grad.clone() if hasattr(model, "weight_proj") else None
        want, want_c = model(x)
    finally:
        torch.set_num_threads(saved)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c, want_c, rtol=1e-4, atol=1e-4)
    assert grad is None or torch.isfinite(grad).all()
    assert chosen == ["scan", "scan"]  # forward and backward of the compiled call


def test_export_records_auto_for_the_custom_op_to_choose() -> None:
    model = parrnn.SRU(4, 4, num_layers=1, version="v1")
    program = torch.export.export(model, (torch.randn(5, 2, 4),))
    assert "sru_forward" in program.graph_module.code and "'auto'" in program.graph_module.code
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(program.module()(x)[0], model(x)[0])


def test_the_reference_is_the_definition() -> None:
    """The paths above compare against these two references; they agree with the fused kernels."""
    u, weight_c, bias, c0 = _sru_inputs()
    for got, want in zip(dispatch.sru_recurrence(u, None, weight_c, bias, c0, None, None, backend="sequential"),
                         sru_reference.sru_recurrence(u, None, weight_c, bias, c0, None, None), strict=True):
        torch.testing.assert_close(got, want)


def test_gru_rows_steps_aside_for_graphs_transforms_and_dual_tensors() -> None:
    """SlicedRNN's fused GRU rows run eagerly only; elsewhere nn.GRU (differentiable, traceable) runs."""
    from parrnn.ops.gru_rows.fused_cpu import fast_gru_applies

    rnn, x = torch.nn.GRU(3, 4), torch.randn(5, 2, 3)
    assert fast_gru_applies(rnn, x)
    with forward_ad.dual_level():
        assert not fast_gru_applies(rnn, forward_ad.make_dual(x, torch.ones_like(x)))
    seen: list[bool] = []

    def loss(x: Tensor) -> Tensor:
        seen.append(fast_gru_applies(rnn, x))
        return rnn(x)[0].sum()

    torch.func.grad(loss)(x)
    assert seen == [False]


@pytest.mark.parametrize("name", ["SRU", "QRNN", "MinGRU", "MinLSTM", "HGRN"])
def test_layers_over_the_ops_give_forward_ad_tangents_and_torch_func_gradients(name: str) -> None:
    """Frozen parameters used to reach the kernels directly (a None tangent); the cells' hand-written gate
    backwards had no jvp and no setup_context. Through the registry both run plain, differentiable ops."""
    torch.manual_seed(0)
    model = getattr(parrnn, name)(4, 4, **({"num_layers": 1} if name == "SRU" else {})).double()
    model.requires_grad_(False)
    x, v = torch.randn(5, 2, 4, dtype=torch.float64), torch.randn(5, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        want = _finite_difference(lambda t: model(t)[0], (x,), (v,))
    with forward_ad.dual_level():
        tangent = forward_ad.unpack_dual(model(forward_ad.make_dual(x, v))[0]).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, want)
    model.requires_grad_(True)
    leaf = x.clone().requires_grad_()
    model(leaf)[0].sum().backward()
    torch.testing.assert_close(torch.func.grad(lambda t: model(t)[0].sum())(x), leaf.grad)


def test_sliced_gru_double_backward_names_the_way_that_works(monkeypatch) -> None:
    """The fused GRU rows are first-order; the error names torch.func.grad, under which SlicedRNN runs nn.GRU,
    and that way gives the second derivative of the plain nn.GRU path."""
    import parrnn.sliced as sliced

    torch.manual_seed(0)
    model = parrnn.SlicedRNN(3, 4, cell="gru", slices=2, levels=1).double()
    x = torch.randn(8, 2, 3, dtype=torch.float64)

    def loss(t: Tensor) -> Tensor:
        return model(t)[0].pow(2).sum()

    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(leaf), leaf, create_graph=True)
    with pytest.raises(registry.DoubleBackwardError, match=r'torch\.func\.grad.*backend="reference"'):
        grad.pow(2).sum().backward()
    got = torch.func.grad(lambda t: torch.func.grad(loss)(t).pow(2).sum())(x)
    monkeypatch.setattr(sliced, "fast_gru_applies", lambda rnn, t: False)  # nn.GRU everywhere: the definition
    (grad,) = torch.autograd.grad(loss(leaf), leaf, create_graph=True)
    (want,) = torch.autograd.grad(grad.pow(2).sum(), leaf)
    torch.testing.assert_close(got, want)

"""The matrix-product engine (parrnn/ops/gemm.py): every engine against torch.mm, pinning, fallbacks and the
choice logic with an injected timer."""

from __future__ import annotations

import pytest
import torch

from parrnn.ops import gemm

AVAILABLE = [name for name, (ok, _) in gemm.engines().items() if ok]


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch):
    monkeypatch.delenv("PARRNN_GEMM", raising=False)
    monkeypatch.delenv("PARRNN_GEMM_CACHE", raising=False)
    gemm.reset()
    gemm.set_timer(None)
    yield
    fallen_back = gemm.fallbacks()
    gemm.reset()
    gemm.set_timer(None)
    assert not fallen_back, f"an engine raised and torch.mm silently ran instead: {fallen_back}"


def _operands(m=37, k=24, n=40, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=dtype).requires_grad_()
    w = torch.nn.Parameter(torch.randn(k, n, generator=g, dtype=dtype))
    return x, w


@pytest.mark.parametrize("engine", AVAILABLE)
@pytest.mark.parametrize("n", [40, 24], ids=["non-square", "square"])
def test_values_and_gradients_match_mm(engine, n):
    """Square weights too: with a (24, 24) weight a wrong transposition gives the right shapes and wrong
    values, so only the values can tell."""
    gemm.set_engine(engine)
    x, w = _operands(n=n)
    grad = torch.randn(37, n, generator=torch.Generator().manual_seed(1))
    y = gemm.matmul(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), grad)
    assert y.grad_fn is not None and "MatMul" in type(y.grad_fn).__name__  # the engine ran, not plain @
    torch.testing.assert_close(y, torch.mm(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, torch.mm(grad, w.t()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, torch.mm(x.t(), grad), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine", AVAILABLE)
def test_mm_and_linear_with_out_and_accumulate(engine):
    gemm.set_engine(engine)
    g = torch.Generator().manual_seed(2)
    a, b, w = torch.randn(9, 16, generator=g), torch.randn(16, 12, generator=g), torch.randn(12, 16, generator=g)
    torch.testing.assert_close(gemm.mm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gemm.linear(a, w), a @ w.t(), rtol=1e-5, atol=1e-5)
    out = torch.ones(9, 12)
    gemm.mm(a, b, out=out, accumulate=True)
    torch.testing.assert_close(out, 1 + a @ b, rtol=1e-5, atol=1e-5)
    gemm.linear(a, w, out=out)
    torch.testing.assert_close(out, a @ w.t(), rtol=1e-5, atol=1e-5)


def test_bfloat16_every_engine_close_to_float32():
    x, w = _operands(dtype=torch.float32)
    expected = (x @ w).detach()
    for engine in AVAILABLE:
        gemm.set_engine(engine)
        y = gemm.matmul(x.detach().bfloat16(), w.detach().bfloat16())
        torch.testing.assert_close(y.float(), expected, rtol=3e-2, atol=0.3)


def test_gradcheck_float64_through_the_function():
    gemm.set_engine("mm")
    x, w = _operands(m=5, k=4, n=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(gemm._MatMul.apply, (x, w))
    assert torch.autograd.gradgradcheck(gemm._MatMul.apply, (x, w))  # create_graph: plain products


def test_pin_by_environment_variable(monkeypatch):
    monkeypatch.setenv("PARRNN_GEMM", "mm")
    assert gemm.pinned_engine() == "mm"
    assert gemm.choose("kn", 64, 64, 64, torch.float32, 2) == "mm"


def test_unknown_engine_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="expected one of mm, onednn"):
        gemm.set_engine("blas9000")
    monkeypatch.setenv("PARRNN_GEMM", "blas9000")
    gemm.reset()
    with pytest.raises(ValueError, match="blas9000"):
        gemm.matmul(torch.randn(2, 2), torch.randn(2, 2))


def test_unavailable_engine_falls_back(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    gemm.reset()
    assert [n for n, (ok, _) in gemm.engines().items() if ok] == ["mm"]
    assert "without oneDNN" in gemm.engines()["onednn"][1]
    with pytest.raises(RuntimeError, match="unavailable"):
        gemm.set_engine("onednn")
    monkeypatch.setenv("PARRNN_GEMM", "onednn")
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert gemm.pinned_engine() == "auto"
    x, w = _operands()
    torch.testing.assert_close(gemm.matmul(x, w), x @ w)
    assert gemm.choose("kn", 64, 64, 64, torch.float32, 2, measure=lambda n: lambda: None) == "mm"


def test_plain_matmul_where_no_engine_applies(monkeypatch):
    gemm.set_engine("onednn")
    x, w = _operands(dtype=torch.float64)
    assert gemm.matmul(x, w).grad_fn.name() == "MmBackward0"  # float64: plain @
    x, w = _operands()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gemm.matmul(x, w).dtype == torch.bfloat16  # autocast decides, as for @
    assert gemm.matmul(x, w).grad_fn.name() != "MmBackward0"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # torch.compile / export tracing
    assert gemm.matmul(x, w).grad_fn.name() == "MmBackward0"
    monkeypatch.undo()
    gemm.set_engine("onednn")


def test_fallbacks_are_counted_and_warned(monkeypatch):
    if "onednn" not in AVAILABLE:
        pytest.skip("no oneDNN")
    gemm.set_engine("onednn")

    def broken(*args):
        raise RuntimeError("cannot")

    monkeypatch.setattr(gemm, "_run", lambda name, a, b: broken() if name == "onednn" else torch.mm(a, b))
    x, w = _operands()
    with pytest.warns(RuntimeWarning, match="could not run"):
        torch.testing.assert_close(gemm.matmul(x, w), x @ w)
    gemm.matmul(x, w)
    assert gemm.fallbacks() == {f"onednn kn 64x32@32x64 float32 t{torch.get_num_threads()}": 2}
    gemm._fallbacks.clear()  # expected here; the fixture fails any other test that falls back


def test_pinned_engine_without_the_dtype_uses_mm():
    gemm.set_engine("onednn") if "onednn" in AVAILABLE else pytest.skip("no oneDNN")
    assert gemm.choose("kn", 8, 8, 8, torch.float64, 2) == "mm"
    assert gemm.choose("nk", 8, 8, 8, torch.float32, 2) == "onednn"


def test_choice_with_injected_timer_is_cached_per_shape_class(monkeypatch):
    monkeypatch.setattr(gemm, "_availability", {n: (True, "test") for n in gemm.ENGINES})
    fake = {("kn", "mm"): 3.0, ("kn", "onednn"): 1.0, ("nk", "mm"): 1.0, ("nk", "onednn"): 2.0}
    timed = []
    layout = "kn"

    def timer(name, run):
        timed.append(name)
        return fake[(layout, name)]

    gemm.set_timer(timer)
    measure = lambda name: lambda: None  # noqa: E731
    assert gemm.choose("kn", 100, 64, 64, torch.float32, 2, measure=measure) == "onednn"
    assert sorted(timed) == sorted(gemm.ENGINES)
    assert gemm.choose("kn", 120, 60, 50, torch.float32, 2, measure=measure) == "onednn"  # same class
    assert len(timed) == 2  # not re-timed
    layout = "nk"
    assert gemm.choose("nk", 100, 64, 64, torch.float32, 2, measure=measure) == "mm"  # another layout
    layout = "kn"
    assert gemm.choose("kn", 100, 64, 64, torch.float32, 1, measure=measure) == "onednn"  # threads
    assert gemm.choose("kn", 100, 64, 64, torch.float64, 2, measure=measure) == "mm"  # only mm: not timed
    assert len(timed) == 6
    assert gemm.choices() == {
        "kn 128x64@64x64 float32 t1": "onednn",
        "kn 128x64@64x64 float32 t2": "onednn",
        "nk 128x64@64x64 float32 t2": "mm",
    }
    with pytest.raises(ValueError, match="layout"):
        gemm.choose("weight", 8, 8, 8, torch.float32, 2)


def test_an_engine_that_raises_is_skipped(monkeypatch):
    monkeypatch.setattr(gemm, "_availability", {n: (True, "test") for n in gemm.ENGINES})

    def timer(name, run):
        if name != "onednn":
            raise RuntimeError("cannot")
        return 1.0

    gemm.set_timer(timer)
    assert gemm.choose("kn", 8, 8, 8, torch.float32, 2, measure=lambda n: lambda: None) == "onednn"


def test_disk_cache_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("PARRNN_GEMM_CACHE", "1")
    monkeypatch.setenv("PARRNN_CACHE_DIR", str(tmp_path))
    gemm.set_timer(lambda name, run: {"mm": 2.0}.get(name, 1.0))
    first = gemm.choose("kn", 64, 64, 64, torch.float32, 2, measure=lambda n: lambda: None)
    assert len(list(tmp_path.glob("gemm-*.json"))) == 1
    gemm.reset()
    gemm.set_timer(lambda name, run: pytest.fail("re-timed although the disk cache has the choice"))
    gemm.reset()  # set_timer cleared the in-memory choices; the file still has them
    assert gemm.choose("kn", 64, 64, 64, torch.float32, 2, measure=lambda n: lambda: None) == first


def test_default_timing_interleaves_engines_and_drops_those_that_raise():
    calls = []

    def engine(name, fail_at=None):
        def run():
            calls.append(name)
            if fail_at is not None and calls.count(name) >= fail_at:
                raise RuntimeError("cannot")
        return run

    times = gemm._interleaved_times({"a": engine("a"), "b": engine("b"), "c": engine("c", fail_at=1),
                                     "d": engine("d", fail_at=3)})
    assert set(times) == {"a", "b"} and all(t >= 0.0 for t in times.values())
    timed = [n for n in calls if n in "ab"]
    assert timed[:6] == ["a", "b", "a", "b", "a", "b"]  # first calls, then rounds over every engine in turn
    assert 2 <= calls.count("a") <= 5 and calls.count("c") == 1 and calls.count("d") == 3


def test_default_choice_times_real_engines():
    gemm.set_timer(None)
    a, b = torch.randn(64, 32), torch.randn(32, 48)
    measure = lambda n: lambda: gemm._run(n, a, b)  # noqa: E731
    name = gemm.choose("kn", 64, 32, 48, torch.float32, measure=measure)
    assert name in AVAILABLE and gemm.choices() == {f"kn 64x32@32x64 float32 t{torch.get_num_threads()}": name}


def _grads(loss, params):
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("engine", AVAILABLE)
def test_layers_on_every_engine_match_mm(engine):
    """The SRU projection (with projection_size) and the SlicedRNN GRU rows: values and gradients."""
    import parrnn
    from parrnn.ops.gru_rows.fused_cpu import gru_rows

    torch.manual_seed(0)
    sru = parrnn.SRU(12, 10, num_layers=2, projection_size=6, backend="reference")
    gru = torch.nn.GRU(12, 10, num_layers=1)
    x = torch.randn(7, 3, 12, requires_grad=True)
    x4 = torch.randn(2, 5, 3, 12, requires_grad=True)
    results = {}
    for name in ("mm", engine):
        gemm.set_engine(name)
        out, c_n = sru(x)
        rows, final = gru_rows(gru, x4, need_output=True)
        loss = out.square().sum() + c_n.sum() + rows.square().sum() + final.sum()
        params = [x, x4, *sru.parameters(), *gru.parameters()]
        results[name] = (out, rows, *_grads(loss, params))
    for got, want in zip(results[engine], results["mm"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_bogus_environment_variable_names_the_variable_and_the_values(monkeypatch):
    monkeypatch.setenv("PARRNN_GEMM", "bogus")
    gemm.reset()
    with pytest.raises(ValueError, match=r"PARRNN_GEMM='bogus'.*expected one of mm, onednn, auto"):
        gemm.matmul(torch.randn(2, 2), torch.randn(2, 2))


def test_long_products_share_one_shape_class():
    """A new sequence length or batch size re-uses the choice: every product longer than the timing cut with the
    same weight is one class (M for ``x @ W``, K for ``x^T @ dY``), and the timed operands are that cut."""
    f32 = torch.float32
    assert gemm.shape_class("kn", 5328, 64, 192, f32, 2) == gemm.shape_class("kn", 16000, 64, 192, f32, 2)
    assert gemm.shape_class("kn", 64, 5328, 192, f32, 2) == gemm.shape_class("kn", 64, 16000, 192, f32, 2)
    assert gemm.shape_class("kn", 40, 64, 192, f32, 2) != gemm.shape_class("kn", 80, 64, 192, f32, 2)  # short: M
    a, w = torch.randn(16000, 64), torch.randn(192, 64)
    ta, tb = gemm.timing_operands(a, w.t())
    assert 2 * ta.shape[0] * 64 * 192 <= 16e6 and ta.shape[1] == 64 and tb.shape == (64, 192)
    assert gemm._layout(tb) == "nk" and ta.data_ptr() == a.data_ptr()  # views: same layout, nothing copied
    g, x = torch.randn(16000, 192), torch.randn(16000, 64)
    ta, tb = gemm.timing_operands(x.t(), g)  # dW = x^T dY: cut along K
    assert ta.shape[0] == 64 and ta.shape[1] == tb.shape[0] < 16000


def test_new_shape_class_is_timed_on_the_cut_operands(monkeypatch):
    """The cost of a new shape class does not grow with the product: only the cut rows are timed."""
    monkeypatch.setattr(gemm, "_availability", {n: (True, "test") for n in gemm.ENGINES})
    rows = []
    real_run = gemm._run

    def spy(name, a, b):
        rows.append(a.shape[0])
        return real_run("mm", a, b)

    monkeypatch.setattr(gemm, "_run", spy)
    gemm.mm(torch.randn(20000, 64), torch.randn(64, 192))
    assert rows and max(rows[:-1]) <= 16e6 / (2 * 64 * 192) + 1  # timing calls (the last runs the product)


def test_deterministic_mode_is_not_served_from_an_earlier_choice(monkeypatch):
    """A shape timed before ``torch.use_deterministic_algorithms(True)`` must run on ``mm`` after it (the
    docstring's rule), not on the engine its timing chose."""
    if "onednn" not in AVAILABLE:
        pytest.skip("needs oneDNN")
    gemm.set_timer(lambda name, run: 0.0 if name == "onednn" else 1.0)
    ran = []
    real_run = gemm._run
    monkeypatch.setattr(gemm, "_run", lambda name, a, b: (ran.append(name), real_run(name, a, b))[1])
    x, w = torch.randn(64, 32), torch.randn(32, 48)
    gemm.mm(x, w)
    assert ran[-1] == "onednn"  # chosen by timing, memoised for this exact shape
    ran.clear()
    torch.use_deterministic_algorithms(True)
    try:
        torch.testing.assert_close(gemm.mm(x, w), torch.mm(x, w), rtol=0, atol=0)
        assert "onednn" not in ran
    finally:
        torch.use_deterministic_algorithms(False)
    gemm.mm(x, w)
    assert ran[-1] == "onednn"  # the mode switched off: the timed choice again


@pytest.mark.parametrize("engine", AVAILABLE)
def test_second_derivatives_in_float32_match_mm(engine):
    """Double backward through `matmul` with an engine pinned, in float32 (the dtype the engines run): the
    backward must build differentiable products whenever a graph is being created, not only under tracing."""
    gemm.set_engine(engine)
    x, w = _operands(m=33, k=20, n=28)

    def second(product):
        y = product(x, w)
        gx, gw = torch.autograd.grad((y.tanh() ** 2).sum(), (x, w), create_graph=True)
        return torch.autograd.grad((gx ** 2).sum() + (gw ** 3).sum(), (x, w))

    got, want = second(gemm.matmul), second(lambda a, b: a @ b)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)

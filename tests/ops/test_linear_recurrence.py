"""`parrnn.ops.linear_recurrence`: every backend against the reference loop (values and every gradient, float64
gradcheck), padding that leaks nothing, the backward-is-a-reverse-recurrence identity, and bad input."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor

from parrnn.ops.linear_recurrence import linear_recurrence, reference
from parrnn.ops.linear_recurrence.op import backend_availability

#: Backends run on CPU tensors here (CUDA ones: the `gpu` tests at the end and the host-shim tests).
CPU_BACKENDS = ["reference", "sequential", "scan"]
#: (atol, rtol) per storage dtype, against the float64 reference on the same (rounded) inputs.
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5), torch.bfloat16: (3e-2, 3e-2),
       torch.float16: (5e-3, 5e-3)}


def make_inputs(length: int, batch: int, cols: int, dtype: torch.dtype, *, seed: int = 0, padded: bool = False,
                with_h0: bool = True, device: str = "cpu") -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(a, b, h0, lengths)``: ``a`` in (0.5, 1) (a stable recurrence), ``b``/``h0`` standard normal; with
    ``padded``, lengths from 1 to ``length`` and NaN/inf written into every padded step of ``a`` and ``b``."""
    gen = torch.Generator().manual_seed(seed)
    a = (0.5 + 0.5 * torch.rand(length, batch, cols, generator=gen, dtype=torch.float64)).to(dtype)
    b = torch.randn(length, batch, cols, generator=gen, dtype=torch.float64).to(dtype)
    h0 = torch.randn(batch, cols, generator=gen, dtype=torch.float64).to(dtype) if with_h0 else None
    lengths = None
    if padded:
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        lengths[0] = length
        pad = torch.arange(length).unsqueeze(1) >= lengths.unsqueeze(0)
        a[pad] = float("nan")
        b[pad] = float("inf")
    return tuple(None if t is None else t.to(device) for t in (a, b, h0, lengths))  # type: ignore[return-value]


def run_with_grads(fn, a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool,
                   seed: int = 1) -> tuple[Tensor, ...]:
    """``(h, h_n, grad_a, grad_b[, grad_h0])`` of ``fn`` under random output gradients (float64 draws)."""
    a, b = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    h0 = None if h0 is None else h0.detach().clone().requires_grad_()
    h, h_n = fn(a, b, h0, lengths, reverse)
    gen = torch.Generator().manual_seed(seed)
    gh = torch.randn(h.shape, generator=gen, dtype=torch.float64).to(h)
    ghn = torch.randn(h_n.shape, generator=gen, dtype=torch.float64).to(h_n)
    torch.autograd.backward([h, h_n], [gh, ghn])
    grads = (a.grad, b.grad) + (() if h0 is None else (h0.grad,))
    return (h.detach(), h_n.detach()) + grads


def on_backend(backend: str):
    def fn(a, b, h0, lengths, reverse):
        return linear_recurrence(a, b, h0, lengths, reverse=reverse, backend=backend)
    return fn


def reference64(a, b, h0, lengths, reverse):
    """The reference on the same (already rounded) inputs in float64."""
    h, h_n = reference.linear_recurrence(a.double(), b.double(), None if h0 is None else h0.double(), lengths,
                                         reverse=reverse)
    return h, h_n


def require(backend: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    ok, why = backend_availability(backend, device, dtype)
    if not ok:
        pytest.fail(f"backend {backend} unavailable on {device}: {why}")


def assert_close_all(got: tuple[Tensor, ...], want: tuple[Tensor, ...], dtype: torch.dtype) -> None:
    atol, rtol = TOL[dtype]
    for name, g, w in zip(("h", "h_n", "grad_a", "grad_b", "grad_h0"), got, want, strict=False):
        assert torch.isfinite(g).all(), f"{name} has non-finite values"
        scale = max(1.0, float(w.abs().max()))
        torch.testing.assert_close(g.double(), w.double(), atol=atol * scale, rtol=rtol,
                                   msg=lambda m, n=name: f"{n}: {m}")


# ---- every backend against the reference --------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (7, 3, 5), (33, 2, 19), (130, 4, 8)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_backend_matches_reference(backend: str, dtype: torch.dtype, shape, reverse: bool, padded: bool) -> None:
    require(backend, dtype=dtype)
    a, b, h0, lengths = make_inputs(*shape, dtype, padded=padded, with_h0=shape[0] != 7)
    got = run_with_grads(on_backend(backend), a, b, h0, lengths, reverse)
    want = run_with_grads(reference64, a, b, h0, lengths, reverse)
    assert got[0].dtype == dtype and got[2].dtype == dtype
    assert_close_all(got, want, dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gradcheck_float64(backend: str, reverse: bool) -> None:
    require(backend, dtype=torch.float64)
    a, b, h0, lengths = make_inputs(9, 3, 4, torch.float64, padded=True, seed=3)
    a = torch.where(torch.isfinite(a), a, 0.7)  # gradcheck perturbs every entry; padding is tested elsewhere
    b = torch.where(torch.isfinite(b), b, 0.3)

    def fn(a, b, h0):
        return linear_recurrence(a, b, h0, lengths, reverse=reverse, backend=backend)

    inputs = tuple(t.requires_grad_() for t in (a, b, h0))
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_padding_leaks_nothing(backend: str) -> None:
    """NaN/inf in padded steps change nothing: same outputs and gradients as finite padding, padded h = 0,
    padded gradients = 0."""
    require(backend)
    a, b, h0, lengths = make_inputs(12, 4, 6, torch.float32, padded=True, seed=5)
    pad = (torch.arange(12).unsqueeze(1) >= lengths.unsqueeze(0)).unsqueeze(2).expand_as(a)
    finite = (torch.where(pad, 0.3, a), torch.where(pad, -2.0, b))
    for reverse in (False, True):
        got = run_with_grads(on_backend(backend), a, b, h0, lengths, reverse)
        clean = run_with_grads(on_backend(backend), *finite, h0, lengths, reverse)
        for g, c in zip(got, clean, strict=True):
            torch.testing.assert_close(g, c, atol=0, rtol=0)
        h, _, grad_a, grad_b, _ = got
        assert (h[pad] == 0).all() and (grad_a[pad] == 0).all() and (grad_b[pad] == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mask_equals_lengths(backend: str) -> None:
    require(backend)
    a, b, h0, lengths = make_inputs(10, 3, 4, torch.float32, padded=True, seed=7)
    mask = torch.arange(10).unsqueeze(1) >= lengths.unsqueeze(0)
    for reverse in (False, True):
        by_len = linear_recurrence(a, b, h0, lengths, reverse=reverse, backend=backend)
        by_mask = linear_recurrence(a, b, h0, mask=mask, reverse=reverse, backend=backend)
        for x, y in zip(by_len, by_mask, strict=True):
            torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_reverse_runs_each_sequence_from_its_last_valid_step() -> None:
    """reverse with lengths == the forward recurrence on each sequence's valid steps flipped in time."""
    a, b, h0, lengths = make_inputs(8, 3, 2, torch.float64, padded=True, seed=9)
    h, h_n = reference.linear_recurrence(a, b, h0, lengths, reverse=True)
    for n, ln in enumerate(lengths.tolist()):
        hf, hnf = reference.linear_recurrence(a[:ln, n:n + 1].flip(0), b[:ln, n:n + 1].flip(0), h0[n:n + 1])
        torch.testing.assert_close(h[:ln, n:n + 1], hf.flip(0))
        torch.testing.assert_close(h_n[n:n + 1], hnf)


def test_backward_is_the_reverse_recurrence() -> None:
    """grad_b is the recurrence run backwards on the output gradients with the next step's a:
    g_t = grad_h_t + a_{t+1} g_{t+1}, g_{L-1} = grad_h_{L-1} + grad_h_n."""
    a, b, h0, _ = make_inputs(11, 2, 3, torch.float64, seed=11)
    _, _, grad_a, grad_b, grad_h0 = run_with_grads(reference64, a, b, h0, None, False, seed=4)
    gen = torch.Generator().manual_seed(4)
    gh = torch.randn(a.shape, generator=gen, dtype=torch.float64)
    ghn = torch.randn(a.shape[1:], generator=gen, dtype=torch.float64)
    a_next = torch.cat([a[1:], torch.ones_like(a[:1])])
    g, g0 = reference.linear_recurrence(a_next, gh, ghn, reverse=True)
    torch.testing.assert_close(grad_b, g)
    torch.testing.assert_close(grad_h0, a[0] * g0)
    h, _ = reference.linear_recurrence(a, b, h0)
    torch.testing.assert_close(grad_a, g * torch.cat([h0.unsqueeze(0), h[:-1]]))


def test_half_storage_keeps_a_float32_state() -> None:
    """bf16 storage: the state is float32 (h_n with a float32 h0 is not rounded to bf16)."""
    a, b, _, _ = make_inputs(50, 2, 3, torch.bfloat16, seed=13)
    h0 = torch.randn(2, 3)
    h, h_n = linear_recurrence(a, b, h0, backend="reference")
    _, want = reference64(a, b, h0, None, False)
    assert h.dtype == torch.bfloat16 and h_n.dtype == torch.float32
    torch.testing.assert_close(h_n.double(), want, atol=1e-5, rtol=1e-5)


# ---- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, words", [
    ({"a": torch.zeros(3, 2)}, ValueError, "a must be 3-D"),
    ({"b": torch.zeros(3, 2, 5)}, ValueError, "b must have a's shape"),
    ({"b": torch.zeros(3, 2, 4, dtype=torch.float64)}, TypeError, "b dtype"),
    ({"a": torch.zeros(3, 2, 4, dtype=torch.int32)}, TypeError, "a must be float32"),
    ({"h0": torch.zeros(2, 5)}, ValueError, "h0 must have shape"),
    ({"h0": torch.zeros(2, 4, dtype=torch.float64)}, TypeError, "h0 dtype"),
    ({"lengths": torch.tensor([3, 4])}, ValueError, "lengths must lie in"),
    ({"lengths": torch.tensor([1.0, 2.0])}, TypeError, "lengths must have an integer dtype"),
    ({"mask": torch.zeros(3, 2)}, TypeError, "mask must be a bool"),
    ({"mask": torch.tensor([[False, True], [True, False], [True, True]])}, ValueError, "suffix"),
    ({"mask": torch.zeros(3, 2, dtype=torch.bool), "lengths": torch.tensor([1, 2])}, ValueError, "not both"),
    ({"reverse": 1}, TypeError, "reverse must be a bool"),
    ({"backend": "fast"}, ValueError, "backend must be one of"),
])
def test_bad_input_names_the_argument(kwargs: dict, error: type, words: str) -> None:
    args = {"a": torch.zeros(3, 2, 4), "b": torch.zeros(3, 2, 4)}
    args.update(kwargs)
    if "a" in kwargs and "b" not in kwargs:
        args["b"] = torch.zeros_like(args["a"])
    with pytest.raises(error, match=words):
        linear_recurrence(**args)


# ---- kernel-level: several chunks, column blocks and threads (the op picks one chunk/thread for small shapes) ----

def kernel_values_and_grads(forward, backward, a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None,
                            reverse: bool, seed: int = 1, **options) -> tuple[Tensor, ...]:
    """A backend module's ``forward``/``backward`` called directly, under the output gradients of
    `run_with_grads`: ``(h, h_n, grad_a, grad_b[, grad_h0])``."""
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    h0_ = None if h0 is None else h0.to(acc)
    h, h_n = forward(a, b, h0_, lengths, reverse, **options)
    gen = torch.Generator().manual_seed(seed)
    gh = torch.randn(h.shape, generator=gen, dtype=torch.float64).to(h.dtype)
    ghn = torch.randn(h_n.shape, generator=gen, dtype=torch.float64).to(acc)
    grad_a, grad_b, grad_h0 = backward(gh, ghn, a, h, h0_, lengths, reverse, **options)
    return (h, h_n, grad_a, grad_b) + (() if grad_h0 is None else (grad_h0,))


def _scan_options(length: int) -> dict:
    """Uneven chunks for the forward and the backward (the backward's count steps from the end)."""
    cuts = sorted({0, 1, length // 3, length // 2 + 1, length - 2, length})
    return {"threads": 2, "bounds": torch.tensor(cuts, dtype=torch.int64)}


@pytest.mark.parametrize("kind", ["sequential_blocks", "scan_chunks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_cpu_kernels_with_blocks_chunks_and_threads(kind: str, dtype: torch.dtype, reverse: bool,
                                                    padded: bool) -> None:
    from parrnn.ops.linear_recurrence import scan_cpu, sequential_cpu

    require("sequential")
    length, batch, cols = 23, 3, 7  # column blocks of 5 cross batch rows
    a, b, h0, lengths = make_inputs(length, batch, cols, dtype, padded=padded, seed=17)
    if kind == "sequential_blocks":
        mod, options = sequential_cpu, {"threads": 2, "block": 5}
    else:
        mod, options = scan_cpu, _scan_options(length)
    got = kernel_values_and_grads(mod.forward, mod.backward, a, b, h0, lengths, reverse, **options)
    want = run_with_grads(reference64, a, b, h0, lengths, reverse)
    assert_close_all(got, want, dtype)


# ---- the CUDA kernels (.cu) on the CPU through kernels/host_shim.h ------------------------------------------------

def _host(kind: str):
    """``(forward, backward)`` of a CUDA backend module with its launcher bound to the host build of its .cu:
    small blocks and a capped grid so the grid-stride loops run; the scan with uneven chunk counts."""
    from parrnn.ops.linear_recurrence import scan_cuda, sequential_cuda

    mod = sequential_cuda if kind == "sequential_cuda" else scan_cuda
    launch = mod.make_host_launcher(block=4, max_grid=3)
    options = {} if kind == "sequential_cuda" else {"chunk_len": 4}
    return (functools.partial(mod.forward_with, launch, **options),
            functools.partial(mod.backward_with, launch, **options))


@pytest.mark.parametrize("kind", ["sequential_cuda", "scan_cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_cuda_kernels_on_cpu_match_reference(kind: str, dtype: torch.dtype, reverse: bool, padded: bool) -> None:
    forward, backward = _host(kind)
    a, b, h0, lengths = make_inputs(19, 3, 5, dtype, padded=padded, with_h0=not padded, seed=21)
    got = kernel_values_and_grads(forward, backward, a, b, h0, lengths, reverse)
    want = run_with_grads(reference64, a, b, h0, lengths, reverse)
    assert_close_all(got, want, dtype)


def test_scan_kernel_single_chunk_and_one_step_chunks() -> None:
    """Chunk lengths at the extremes (L steps in one chunk; one step per chunk) give the same result."""
    from parrnn.ops.linear_recurrence import scan_cuda

    launch = scan_cuda.make_host_launcher()
    a, b, h0, lengths = make_inputs(9, 2, 3, torch.float64, padded=True, seed=23)
    want = run_with_grads(reference64, a, b, h0, lengths, True)
    for chunk_len in (1, 9):
        got = kernel_values_and_grads(functools.partial(scan_cuda.forward_with, launch, chunk_len=chunk_len),
                                      functools.partial(scan_cuda.backward_with, launch, chunk_len=chunk_len),
                                      a, b, h0, lengths, True)
        assert_close_all(got, want, torch.float64)


# ---- CUDA devices -------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sequential", "scan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_cuda_backend_matches_reference(backend: str, dtype: torch.dtype, reverse: bool) -> None:
    ok, why = backend_availability(backend, "cuda", dtype)
    if not ok:  # a gpu test runs only where CUDA is: an unavailable backend there is a failure, not a skip
        pytest.fail(f"backend {backend!r} unavailable on this CUDA device: {why}")
    a, b, h0, lengths = make_inputs(300, 5, 70, dtype, padded=True, seed=25, device="cuda")
    got = run_with_grads(on_backend(backend), a, b, h0, lengths, reverse)
    want = run_with_grads(reference64, *(t.cpu() for t in (a, b, h0, lengths)), reverse)
    assert_close_all(tuple(t.cpu() for t in got), want, dtype)


# ---- torch.compile, torch.export, ONNX ----------------------------------------------------------------------------

def test_compile_fullgraph_matches_eager_values_and_grads() -> None:
    """The custom op (with its autograd and fake kernels) traces without graph breaks, ``auto`` included (chosen
    by the op at run time: nothing reads the thread count while tracing)."""
    a, b, h0, lengths = make_inputs(6, 2, 3, torch.float32, padded=True, seed=27)

    def loss(a, b, h0, lengths, reverse):
        h, h_n = linear_recurrence(a, b, h0, lengths, reverse=reverse)
        return h, h_n

    compiled = torch.compile(loss, fullgraph=True)
    got = run_with_grads(compiled, a, b, h0, lengths, True)
    want = run_with_grads(loss, a, b, h0, lengths, True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_export_keeps_the_custom_op() -> None:
    class Model(torch.nn.Module):
        def forward(self, a: Tensor, b: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
            return linear_recurrence(a, b, h0, backend="sequential")

    a, b, h0, _ = make_inputs(5, 2, 3, torch.float32, seed=29)
    program = torch.export.export(Model(), (a, b, h0))
    assert "parrnn.linear_recurrence" in program.graph_module.code
    for g, w in zip(program.module()(a, b, h0), reference.linear_recurrence(a, b, h0), strict=True):
        torch.testing.assert_close(g, w)


def test_a_deferred_auto_with_no_runnable_kernel_raises_with_the_reason(monkeypatch) -> None:
    """A graph has no reference to fall back to: the custom op names why no kernel runs instead of pretending."""
    from parrnn.ops import registry

    monkeypatch.setattr(registry, "backend_availability",
                        lambda op, name, device, dtype: (False, f"{name}: build failed"))
    a, _, _, _ = make_inputs(5, 2, 3, torch.float32, seed=33)
    choose = functools.partial(registry.run_time_choice, "linear_recurrence", device=a.device, dtype=a.dtype,
                               length=5, columns=6)
    with pytest.raises(RuntimeError, match="no fused kernel runs on cpu .*sequential: build failed.*run the model"):
        choose("auto")
    assert choose("scan") == "scan"  # an explicit backend is taken as given


def test_auto_is_chosen_per_call_in_a_graph_with_a_dynamic_length(monkeypatch) -> None:
    """``auto`` under torch.export is left to the custom op, so one program with a dynamic length runs the
    sequential kernel at short lengths and the scan at long ones (forward and backward), as eager would."""
    from parrnn.ops import registry
    from parrnn.ops.linear_recurrence import op

    class Model(torch.nn.Module):
        def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
            return linear_recurrence(a, b)

    long_length = op.AUTO_RULES[0].min_length
    a, b, _, _ = make_inputs(8, 2, 32, torch.float32, seed=31)
    program = torch.export.export(Model(), (a, b), dynamic_shapes=({0: torch.export.Dim("L", max=2 * long_length)},
                                                                   {0: torch.export.Dim("L", max=2 * long_length)}))
    chosen: list[str] = []
    concrete = registry.run_time_choice
    monkeypatch.setattr(registry, "run_time_choice",
                        lambda *args, **kwargs: chosen.append(concrete(*args, **kwargs)) or chosen[-1])
    saved = torch.get_num_threads()
    torch.set_num_threads(2)  # the scan row needs 2 threads
    try:
        for length in (8, long_length + 1):
            a, b, _, _ = make_inputs(length, 2, 32, torch.float32, seed=length)
            a.requires_grad_()
            h, h_n = program.module()(a, b)
            h.sum().backward()
            a_ref = a.detach().requires_grad_()
            h_ref, h_n_ref = reference.linear_recurrence(a_ref, b)
            h_ref.sum().backward()
            torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(a.grad, a_ref.grad, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(saved)
    assert chosen == ["sequential", "sequential", "scan", "scan"]  # (forward, backward) per length


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_onnx_scan_equals_reference(reverse: bool, padded: bool) -> None:
    """The export path's scan (called eagerly) computes the reference's values."""
    from parrnn.ops.linear_recurrence import onnx as onnx_export
    from parrnn.ops.linear_recurrence.contract import validate

    a, b, h0, lengths = make_inputs(7, 3, 4, torch.float64, padded=padded, seed=31)
    got = onnx_export.run(validate(a, b, h0, lengths), reverse)
    want = reference.linear_recurrence(a, b, h0, lengths, reverse=reverse)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_onnx_export_runs_in_onnxruntime_at_unseen_shapes() -> None:
    ort = pytest.importorskip("onnxruntime")

    class Model(torch.nn.Module):
        def forward(self, a: Tensor, b: Tensor, h0: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
            return linear_recurrence(a, b, h0, lengths, reverse=True)

    length, batch = torch.export.Dim("L"), torch.export.Dim("N")
    example = make_inputs(6, 2, 3, torch.float32, padded=True, seed=33)
    example = tuple(torch.nan_to_num(t) if t.is_floating_point() else t for t in example)
    program = torch.onnx.export(Model(), example, dynamo=True, verbose=False,
                                dynamic_shapes=({0: length, 1: batch}, {0: length, 1: batch}, {0: batch}, {0: batch}))
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    inputs = make_inputs(9, 4, 3, torch.float32, padded=True, seed=35)
    outputs = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)})
    want = reference.linear_recurrence(*inputs, reverse=True)
    for g, w in zip(outputs, want, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-6, rtol=1e-6)


# ---- backend="auto" -----------------------------------------------------------------------------------------------

def test_auto_rule_picks_the_scan_only_for_few_columns_long_sequences_and_threads() -> None:
    from parrnn.ops.linear_recurrence.op import auto_backend

    cpu = torch.device("cpu")
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert auto_backend(cpu, columns=128, length=65536) == "scan"
        assert auto_backend(cpu, columns=8, length=65536) == "sequential"  # one sequential thread is faster
        assert auto_backend(cpu, columns=1 << 16, length=65536) == "sequential"  # bandwidth-bound: read once
        assert auto_backend(cpu, columns=128, length=512) == "sequential"
        torch.set_num_threads(1)
        assert auto_backend(cpu, columns=128, length=65536) == "sequential"
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("used", ["h", "h_n"])
def test_gradient_through_one_output_only(backend: str, used: str) -> None:
    """The op's backward gets ``None`` for the unused output's gradient; a strided lengths tensor is read right."""
    require(backend)
    a, b, h0, lengths = make_inputs(8, 3, 4, torch.float64, padded=True, seed=37)
    lengths = torch.stack([lengths, lengths], 1)[:, 0]  # non-contiguous

    def grads(fn):
        x = [t.clone().requires_grad_() for t in (a, b, h0)]
        h, h_n = fn(*x, lengths, True)
        (h.sum() if used == "h" else h_n.sum()).backward()
        return [t.grad for t in x]

    for g, w in zip(grads(on_backend(backend)), grads(reference64), strict=True):
        torch.testing.assert_close(g, w)

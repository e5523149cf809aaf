"""The CUDA kernels of ``kernels/sru_recurrence.cu`` run on the CPU (compiled as C++ behind ``host_shim.h``): what
is particular to them -- 16-bit rounding, grid-stride loops, prefetch depths, empty sizes, mixed dtypes, the custom
op's autograd over them. Their values and gradients against :mod:`parrnn.ops.sru.reference`, every option, odd
sizes and four storage dtypes, are checked with every backend in test_backends.py ("cuda kernels on host").

The kernels and the Python glue (``parrnn.ops.sru.sequential_cuda.forward_with`` / ``backward_with``: argument
order, dtype
conversions, the partial-gradient reduction) are exactly those the GPU runs; only the launcher differs.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, replace
from functools import partial

import pytest
import torch
from _helpers import assert_close
from _helpers import reference_values_and_grads as _reference

from parrnn.ops.sru import dispatch
from parrnn.ops.sru import sequential_cuda as cuda_backend
from parrnn.ops.sru.contract import RecurrenceArgs

# (rtol, atol) of kernel vs float64 reference, per storage dtype (inputs are the same stored values)
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6), torch.float16: (4e-3, 4e-3),
       torch.bfloat16: (2e-2, 2e-2)}


@dataclass(frozen=True)
class Case:
    length: int = 6
    batch: int = 3
    hidden: int = 5
    bidirectional: bool = False
    k: int = 3
    has_x: bool = True
    v2: bool = True
    use_tanh: bool = False
    mask: bool = False
    drop: bool = False
    scale_x: float = 1.0

    def __str__(self) -> str:
        flags = [n for n in ("bidirectional", "has_x", "v2", "use_tanh", "mask", "drop") if getattr(self, n)]
        return f"L{self.length}N{self.batch}H{self.hidden}K{self.k}s{self.scale_x}-" + "-".join(flags)


#: the tensor arguments of forward_with / backward_with, in order
_ARGS = ("u", "x", "weight_c", "bias", "c0", "mask_pad", "drop_mask")


def make_inputs(case: Case, dtype: torch.dtype, seed: int = 0) -> dict:
    """Random inputs in storage dtype ``dtype`` (the small per-column tensors too)."""
    g = torch.Generator().manual_seed(seed)
    dirs = 2 if case.bidirectional else 1
    cols = dirs * case.hidden
    L, N = case.length, case.batch

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    mask_pad = None
    if case.mask:
        lengths = torch.randint(1, L + 1, (N,), generator=g)
        lengths[0] = L  # one full row
        mask_pad = torch.arange(L).unsqueeze(1) >= lengths.unsqueeze(0)  # (L, N), True = pad
        if L >= 3 and N >= 2:
            mask_pad[1, N - 1] = True  # a pad step in the middle: the kernels must not assume suffix padding
    drop = None
    if case.drop:
        keep = torch.rand(N, cols, generator=g) > 0.3
        drop = (keep.to(torch.float64) / 0.7).to(dtype)
    return dict(
        u=rnd(L, N, case.k, cols),
        x=rnd(L, N, cols) if case.has_x else None,
        weight_c=rnd(2, cols, scale=0.5) if case.v2 else None,
        bias=rnd(2, cols, scale=0.5),
        c0=rnd(N, cols),
        mask_pad=mask_pad,
        drop_mask=drop,
    )


def reference_values_and_grads(case: Case, inp: dict, grad_h: torch.Tensor, grad_c_n: torch.Tensor) -> dict:
    """Reference outputs and gradients (``grad_<name>`` of the inputs present) in float64 from the exact stored
    input values."""
    h, c_n, grads = _reference(*(inp[n] for n in _ARGS), grad_h, grad_c_n, bidirectional=case.bidirectional,
                               use_tanh=case.use_tanh, scale_x=case.scale_x)
    return {"h": h, "c_n": c_n, **{f"grad_{n}": g for n, g in grads.items() if g is not None}}


@pytest.fixture(scope="module")
def launch():
    return cuda_backend.make_host_launcher()


def run_kernels(launch, case: Case, inp: dict, grad_h: torch.Tensor, grad_c_n: torch.Tensor) -> dict:
    args = RecurrenceArgs(*(inp[n] for n in _ARGS), case.bidirectional, case.use_tanh, case.scale_x)
    h, c_n, c_all = cuda_backend.forward_with(launch, args)
    gu, gx, gwc, gb, gc0 = cuda_backend.backward_with(launch, args, grad_h, grad_c_n, c_all)
    return {"h": h, "c_n": c_n, "c_all": c_all, "grad_u": gu, "grad_x": gx, "grad_weight_c": gwc,
            "grad_bias": gb, "grad_c0": gc0}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=lambda d: str(d).split(".")[-1])
def test_half_rounding_matches_torch(launch, monkeypatch, dtype: torch.dtype):
    """The shim's float -> half/bfloat16 conversion rounds to nearest even exactly like torch (and the GPU):
    ties, subnormals, overflow to inf, values next to the largest half."""
    g = torch.Generator().manual_seed(3)
    special = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65519.0, 65520.0, 2**-25, 2**-24,
                            1.5 * 2**-24, 2.5 * 2**-24, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1e38, -7e4,
                            0.0, -0.0])
    wanted = torch.cat([torch.randn(1000, generator=g) * 10, torch.randn(1000, generator=g) * 1e-6,
                        (torch.rand(1000, generator=g) * 2 - 1) * 7e4, special]).to(torch.float32)
    cols = wanted.numel()
    # v1, u = 0, bias = 0: f = 1/2, so c_1 = c0 / 2 exactly (float32 arithmetic); the kernel stores c_n as that
    # float rounded by its Store<T> and c_all keeps it in float32. forward_with returns c_n in c0's dtype (float32,
    # from c_all); to see the kernel's rounding, keep the kernel's c_n.
    u = torch.zeros(1, 1, 3, cols, dtype=dtype)
    c0 = (wanted * 2).view(1, cols)
    args = RecurrenceArgs(u, None, None, torch.zeros(2, cols), c0, None, None)
    _, c_n32, _ = cuda_backend.forward_with(launch, args)
    assert c_n32.dtype == torch.float32 and torch.equal(c_n32[0], wanted)
    monkeypatch.setattr(cuda_backend, "final_state", lambda c_n, *_: c_n)
    _, c_n, c_all = cuda_backend.forward_with(launch, args)
    assert c_n.dtype == dtype and torch.equal(c_all[0, 0], wanted)
    # (compare with torch's rounding of c_all itself: -0.0 / 2 becomes +0.0 in c = u0 + (c_prev - u0) * f)
    assert torch.equal(c_n[0].view(torch.int16), c_all[0, 0].to(dtype).view(torch.int16))


def test_grid_stride_loop(launch):
    """A grid smaller than the columns (as on the device beyond 2^31 - 1 blocks) still covers every column."""
    case = Case(length=5, batch=3, hidden=7, bidirectional=True, mask=True, use_tanh=True)
    inp = make_inputs(case, torch.float64)
    grad_h = torch.randn(5, 3, 14, dtype=torch.float64)
    grad_c_n = torch.randn(3, 14, dtype=torch.float64)
    full = run_kernels(launch, case, inp, grad_h, grad_c_n)
    small = run_kernels(cuda_backend.make_host_launcher(block=4, max_grid=2), case, inp, grad_h, grad_c_n)
    for key, value in full.items():
        assert torch.equal(value, small[key]), key


@pytest.mark.parametrize("prefetch", [1, 3, 4])
def test_prefetch_depths(prefetch: int):
    """The kernels' register ring of in-flight steps (PARRNN_PREFETCH) is exact for every depth, including
    sequences shorter than the ring and lengths that are not a multiple of it."""
    launch = cuda_backend.make_host_launcher(prefetch=prefetch)
    for case in (Case(length=1, batch=2, hidden=3, bidirectional=True),
                 Case(length=7, batch=2, hidden=3, bidirectional=True, mask=True, use_tanh=True, drop=True),
                 Case(length=8, batch=1, hidden=2, k=4, has_x=False)):
        inp = make_inputs(case, torch.float64, seed=prefetch)
        cols = inp["u"].shape[-1]
        grad_h = torch.randn(case.length, case.batch, cols, dtype=torch.float64)
        grad_c_n = torch.randn(case.batch, cols, dtype=torch.float64)
        want = reference_values_and_grads(case, inp, grad_h, grad_c_n)
        got = run_kernels(launch, case, inp, grad_h, grad_c_n)
        for key in ("h", "c_n", "grad_u", "grad_x", "grad_weight_c", "grad_bias", "grad_c0"):
            if key in want:
                assert_close(got[key], want[key], TOL[torch.float64], key)


def test_empty_sizes(launch):
    """L = 0 carries c0 to c_n; N = 0 launches nothing."""
    u = torch.randn(0, 2, 3, 4)
    bias, c0 = torch.randn(2, 4), torch.randn(2, 4)
    h, c_n, c_all = cuda_backend.forward_with(launch, RecurrenceArgs(u, None, None, bias, c0, None, None))
    assert h.shape == (0, 2, 4) and c_all.shape == (0, 2, 4)
    assert torch.equal(c_n, c0)
    gcn = torch.randn(2, 4)
    gu, gx, gwc, gb, gc0 = cuda_backend.backward_with(launch, RecurrenceArgs(u, None, None, bias, c0, None, None),
                                                      torch.empty(0, 2, 4), gcn, c_all)
    assert gu.shape == u.shape and gx is None and gwc is None
    assert torch.equal(gc0, gcn) and torch.equal(gb, torch.zeros(2, 4))
    u = torch.randn(3, 0, 3, 4)
    h, c_n, _ = cuda_backend.forward_with(launch, RecurrenceArgs(u, None, None, bias, torch.empty(0, 4), None, None))
    assert h.shape == (3, 0, 4) and c_n.shape == (0, 4)


def test_mixed_dtypes_cross_in_arithmetic_type(launch):
    """bf16 activations with float32 parameters (autocast-style): each gradient in its input's dtype."""
    case = Case(bidirectional=True, drop=True)
    inp = make_inputs(case, torch.float32)
    inp["u"] = inp["u"].to(torch.bfloat16)
    grad_h = torch.randn(case.length, case.batch, 10).to(torch.bfloat16)
    grad_c_n = torch.randn(case.batch, 10)
    got = run_kernels(launch, case, inp, grad_h, grad_c_n)
    assert got["h"].dtype == torch.bfloat16
    assert got["grad_u"].dtype == torch.bfloat16
    assert got["grad_weight_c"].dtype == torch.float32 and got["grad_c0"].dtype == torch.float32
    want = reference_values_and_grads(case, inp, grad_h, grad_c_n)
    assert_close(got["h"], want["h"], TOL[torch.bfloat16], "h")
    # c_n in the state's dtype (c0's), read from the float32 c_all, not rounded to bfloat16
    assert got["c_n"].dtype == torch.float32
    assert_close(got["c_n"], want["c_n"], TOL[torch.float32], "c_n")
    assert_close(got["grad_bias"], want["grad_bias"], TOL[torch.bfloat16], "grad_bias", atol_scale=18)


@pytest.mark.parametrize("case", [Case(bidirectional=True, mask=True, use_tanh=True, scale_x=1.3),
                                  Case(k=4, has_x=False, drop=True, v2=False)], ids=str)
def test_custom_op_gradcheck_with_host_kernels(launch, monkeypatch, case: Case):
    """The kernels behind the ``parrnn::sru_forward`` custom op (its autograd wiring): float64 gradcheck."""
    backend = types.SimpleNamespace(forward=partial(cuda_backend.forward_with, launch),
                                    backward=partial(cuda_backend.backward_with, launch))
    monkeypatch.setattr(dispatch, "_fused_module", lambda name, device_type: backend)
    case = replace(case, length=4, batch=2, hidden=3)
    inp = make_inputs(case, torch.float64, seed=5)
    names = ("u", "x", "weight_c", "bias", "c0")
    leaves = [inp[n].requires_grad_() for n in names if inp[n] is not None]
    present = [n for n in names if inp[n] is not None]

    def fn(*tensors):
        kw = dict(zip(present, tensors, strict=True))
        h, c_n, _ = dispatch.sru_forward_op(
            kw["u"], kw.get("x"), kw.get("weight_c"), kw["bias"], kw["c0"], inp["mask_pad"], inp["drop_mask"],
            case.bidirectional, case.use_tanh, case.scale_x, "sequential")
        return h, c_n

    assert torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-6)

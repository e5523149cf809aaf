"""What is particular to the fused C++ ``cpu`` backend: column blocks across threads, results independent of the
thread count, gradcheck through the custom op, IEEE corner cases, 16-bit conversions, bad input. Its values and
gradients against the reference, every option and dtype, are checked with every backend in test_backends.py.

Shapes follow :mod:`parrnn.ops.sru.reference`: ``u`` (L, N, K, C), ``x`` (L, N, C), ``weight_c``/``bias`` (2, C),
``c0``/``drop_mask`` (N, C), ``mask_pad`` (L, N).
"""

from __future__ import annotations

import pytest
import torch
from _helpers import BACKENDS, check_backend, make_case
from torch import Tensor

from parrnn.ops import build
from parrnn.ops.sru import dispatch, reference
from parrnn.ops.sru.contract import RecurrenceArgs

try:
    build.find_compiler()
except build.BuildError as exc:  # pragma: no cover - only on machines without a C++ compiler
    pytest.skip(f"no C++ compiler: {exc}", allow_module_level=True)

from parrnn.ops.sru import sequential_cpu as cpu  # noqa: E402

HALF_TYPES = (torch.bfloat16, torch.float16)
CPU = BACKENDS["cpu"]


# ---- threads -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [1001, 64, 17])
def test_wide_columns_split_into_blocks(hidden):
    """Few rows and many columns: the kernel splits columns into blocks (ragged last block) across threads."""
    check_backend(CPU, make_case(4, 1, hidden, skip="u3", bidirectional=True, use_tanh=True, mask="mixed",
                                 drop=True, dtype=torch.float32, seed=hidden))


def test_result_independent_of_thread_count():
    case = make_case(40, 3, 300, skip="x", bidirectional=True, use_tanh=True, mask="mixed", drop=True, seed=5)
    threads = torch.get_num_threads()
    grad_h = torch.randn(40, 3, 600)
    grad_c_n = torch.randn(3, 600)
    outs = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            h, c_n, c_all = cpu.forward(case.args())
            grads = cpu.backward(case.args(), grad_h, grad_c_n, c_all)
            outs.append((h, c_n, c_all, *grads))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(outs[0][:5], outs[1][:5], strict=True):  # elementwise outputs: bitwise equal
        assert torch.equal(a, b)


# ---- through the custom op: autograd and gradcheck ---------------------------------------------------------

GRADCHECK_CASES = [  # the first, with every option on, is checked element by element; the rest in fast mode
    {"skip": "x", "v2": True, "bidirectional": True, "use_tanh": True, "mask": "mixed", "drop": True},
    {"skip": "u3", "v2": False, "bidirectional": False, "use_tanh": False, "mask": "none", "drop": False},
    {"skip": "none", "v2": True, "bidirectional": True, "use_tanh": False, "mask": "mixed", "drop": False},
    {"skip": "x", "v2": False, "bidirectional": False, "use_tanh": True, "mask": "mixed", "drop": True},
    {"skip": "u3", "v2": True, "bidirectional": True, "use_tanh": True, "mask": "mixed", "drop": True},
]


@pytest.mark.parametrize("opts", GRADCHECK_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_gradcheck_float64_through_dispatch(opts):
    case = make_case(4, 6, 2, dtype=torch.float64, seed=11, **opts)
    inputs = [None if t is None else t.clone() for t in case.tensors()]
    diff = [t.requires_grad_() for t in inputs[:5] if t is not None]

    def fn(*args: Tensor) -> tuple[Tensor, Tensor]:
        it = iter(args)
        u, x, wc, b, c0 = (None if t is None else next(it) for t in inputs[:5])
        return dispatch.sru_recurrence(u, x, wc, b, c0, inputs[5], inputs[6], backend="cpu",  # type: ignore
                                       **case.options())

    fast = opts is not GRADCHECK_CASES[0]
    assert torch.autograd.gradcheck(fn, tuple(diff), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


def test_dispatch_matches_reference_float32():
    case = make_case(12, 4, 6, skip="x", bidirectional=True, use_tanh=True, mask="mixed", drop=True, seed=2)
    leaves = [None if t is None else t.clone().requires_grad_(i < 5) for i, t in enumerate(case.tensors())]
    h, c_n = dispatch.sru_recurrence(*leaves, backend="cpu", **case.options())  # type: ignore[arg-type]
    (h.square().sum() + c_n.sin().sum()).backward()
    ref_leaves = [None if t is None else t.clone().requires_grad_(i < 5)
                  for i, t in enumerate(case.tensors())]
    h_r, c_r = reference.sru_recurrence(*ref_leaves, **case.options())  # type: ignore[arg-type]
    (h_r.square().sum() + c_r.sin().sum()).backward()
    torch.testing.assert_close(h, h_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_n, c_r, rtol=1e-5, atol=1e-5)
    for a, b in zip(leaves[:5], ref_leaves[:5], strict=True):
        if a is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


# ---- IEEE behaviour and conversions ------------------------------------------------------------------------

@pytest.mark.parametrize("v2", (False, True), ids=("v1", "v2"))
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32), ids=str)
def test_nan_and_inf_propagate_like_reference(dtype, v2):
    case = make_case(6, 4, 4, skip="x", v2=v2, use_tanh=True, dtype=dtype, seed=9)
    case.c0[3, 0] = float("inf")  # v1: the gates never see c, so c stays inf (no 0 * inf in the kernel)
    case.c0[3, 1] = -float("inf")
    case.u[1, 0, 0, 1] = float("nan")
    case.u[2, 1, 1, 2] = float("inf")
    case.u[3, 2, 2, 0] = -float("inf")
    case.u[0, 2, 1, 3] = 1e30  # exp overflow inside the sigmoid
    case.u[0, 1, 2, 3] = -1e30
    h, c_n, _ = cpu.forward(case.args())
    h_ref, c_ref = reference.sru_recurrence(*case.tensors(), **case.options())  # type: ignore[arg-type]
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(c_n, c_ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.isnan(h).any()
    if not v2:
        assert torch.isinf(c_n[3, :2]).all()


def test_float32_sigmoid_and_tanh_extremes():
    """Large pre-activations saturate exactly like torch (sigmoid -> 0/1, tanh -> +-1), no NaN."""
    length, cols = 8, 8
    u = torch.zeros(length, 1, 3, cols)
    big = torch.tensor([-200.0, -90.0, -88.5, -20.0, 20.0, 88.5, 90.0, 200.0])
    u[:, 0, 0] = big  # candidate -> c, tanh(c)
    u[:, 0, 1] = big.flip(0)  # forget gate pre-activation
    u[:, 0, 2] = big  # reset gate pre-activation
    args = (u, None, None, torch.zeros(2, cols), torch.zeros(1, cols), None, None)
    h, c_n, _ = cpu.forward(RecurrenceArgs(*args, use_tanh=True))
    h_ref, c_ref = reference.sru_recurrence(*args, use_tanh=True)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, h_ref, rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(c_n, c_ref, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_16bit_conversions_match_torch(dtype):
    every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype)
    # every 16-bit value (finite, inf, nan) survives float32 -> 16 bit -> float32 unchanged
    _, back = cpu._convert(every.float(), dtype)
    torch.testing.assert_close(back, every.float(), rtol=0, atol=0, equal_nan=True)
    gen = torch.Generator().manual_seed(0)
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65519.0, 65520.0,
                             1e-8, 3e-8, 5.9604645e-08, 2.98e-8, 1e-40, 3.4e38, -1e-45])
    values = torch.cat([specials, torch.randn(100_000, generator=gen) * 1000,
                        torch.randn(100_000, generator=gen) * 1e-5,
                        torch.randint(-(2**31), 2**31 - 1, (100_000,), generator=gen, dtype=torch.int32)
                        .view(torch.float32)])
    stored, _ = cpu._convert(values, dtype)
    expected = values.to(dtype)
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(stored), nan)
    assert torch.equal(stored[~nan].view(torch.int16), expected[~nan].view(torch.int16))


# ---- contract details and bad input ------------------------------------------------------------------------

def test_availability_reports_build():
    ok, why = cpu.availability()
    assert ok, why
    assert dispatch.backend_availability("cpu")[0]


def test_none_gradients_for_absent_inputs():
    case = make_case(3, 2, 4, skip="u3", v2=False)
    _, _, c_all = cpu.forward(case.args())
    grads = cpu.backward(case.args(), torch.ones(3, 2, 4), torch.ones(2, 4), c_all)
    assert grads[1] is None and grads[2] is None
    assert grads[0].shape == (3, 2, 4, 4)


@pytest.mark.parametrize("dtype", (torch.int32, torch.complex64, torch.float8_e4m3fn), ids=str)
def test_unsupported_dtype_raises_type_error(dtype):
    u = torch.zeros(2, 1, 3, 4).to(dtype)
    with pytest.raises(TypeError, match="dtype"):
        cpu.forward(RecurrenceArgs(u, None, None, torch.zeros(2, 4), torch.zeros(1, 4), None, None))


def test_bad_shapes_raise_value_error():
    u = torch.zeros(2, 1, 3, 4)
    bias, c0 = torch.zeros(2, 4), torch.zeros(1, 4)
    with pytest.raises(ValueError, match="c0"):
        cpu.forward(RecurrenceArgs(u, None, None, bias, torch.zeros(2, 4), None, None))
    with pytest.raises(ValueError, match="x must be None"):
        cpu.forward(RecurrenceArgs(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4), None, bias, c0, None, None))
    with pytest.raises(ValueError, match="even"):
        cpu.forward(RecurrenceArgs(torch.zeros(2, 1, 3, 3), None, None, torch.zeros(2, 3), torch.zeros(1, 3), None,
                                   None, bidirectional=True))
    with pytest.raises(ValueError, match="mask_pad"):
        cpu.forward(RecurrenceArgs(u, None, None, bias, c0, torch.zeros(3, 1, dtype=torch.bool), None))

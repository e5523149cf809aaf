"""What is particular to the time-parallel ``scan`` backend (linear / v1 SRU): chunk boundaries, grid-stride loops,
stability, long-sequence precision, agreement with the sequential ``cpu`` backend, routing.

Three implementations are checked: the CPU scan (``kernels/sru_scan_cpu.cpp``), the CUDA scan kernels
(``kernels/sru_scan.cu``) run on the CPU through the host shim (the very code the GPU runs, exercised with many
chunk lengths), and, with a GPU, the CUDA scan itself (``@pytest.mark.gpu``). Their values and gradients against
the reference, every option and dtype, are checked with every backend in test_backends.py.

Shapes follow :mod:`parrnn.ops.sru.reference`: ``u`` (L, N, K, C), ``x`` (L, N, C), ``bias`` (2, C),
``c0``/``drop_mask`` (N, C), ``mask_pad`` (L, N).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from _helpers import (
    BACKENDS,
    SCAN_TOL,
    Backend,
    Case,
    assert_close,
    check_backend,
    launched,
    random_grads,
    reference_values_and_grads,
)
from torch import Tensor

from parrnn.ops import build
from parrnn.ops.sru import dispatch
from parrnn.ops.sru.contract import RecurrenceArgs

try:
    build.find_compiler()
except build.BuildError as exc:  # pragma: no cover - only on machines without a C++ compiler
    pytest.skip(f"no C++ compiler: {exc}", allow_module_level=True)

from parrnn.ops.sru import (
    scan,
    scan_cpu,
    scan_cuda,  # noqa: E402
)


def make_case(length: int, batch: int, hidden: int, *, skip: str = "x", bidirectional: bool = False,
              use_tanh: bool = False, mask: bool = False, drop: bool = False, dtype: torch.dtype = torch.float64,
              seed: int = 0) -> Case:
    """``skip``: ``"none"`` (K=3, no x), ``"x"`` (K=3 with x) or ``"u3"`` (K=4). ``mask`` pads row 0 at the end,
    row 1 at the start, row 2 at both ends, row 3 entirely, further rows at random."""
    gen = torch.Generator().manual_seed(seed)
    cols = hidden * (2 if bidirectional else 1)
    k = 4 if skip == "u3" else 3

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    mask_pad = None
    if mask:
        mask_pad = torch.zeros(length, batch, dtype=torch.bool)
        q = max(1, length // 4)
        for n in range(batch):
            if n % 5 == 0:
                mask_pad[length - q:, n] = True
            elif n % 5 == 1:
                mask_pad[:q, n] = True
            elif n % 5 == 2:
                mask_pad[:q, n] = mask_pad[length - q:, n] = True
            elif n % 5 == 3 and n > 0:
                mask_pad[:, n] = True
            else:
                mask_pad[:, n] = torch.rand(length, generator=gen) < 0.3
    drop_mask = None
    if drop:
        drop_mask = ((torch.rand(batch, cols, generator=gen) > 0.3).to(torch.float64) / 0.7).to(dtype)
    return Case(u=randn(length, batch, k, cols), x=randn(length, batch, cols) if skip == "x" else None,
                bias=randn(2, cols) * 0.5, c0=randn(batch, cols), mask_pad=mask_pad, drop_mask=drop_mask,
                bidirectional=bidirectional, use_tanh=use_tanh, scale_x=1.7 if skip == "x" else 1.0)


def run_cpu(case: Case, grad_h: Tensor, grad_c_n: Tensor, threads: int):
    """``((h, c_n, c_all), grads)`` of the CPU scan with ``threads`` threads."""
    return BACKENDS["scan cpu"].run(case.args(), grad_h, grad_c_n, threads=threads)


def run_kernels(case: Case, grad_h: Tensor, grad_c_n: Tensor, chunk_len: int):
    """``((h, c_n, c_all), grads)`` of the CUDA scan kernels on the host with chunks of ``chunk_len`` steps."""
    return BACKENDS["scan kernels on host"].run(case.args(), grad_h, grad_c_n, chunk_len=chunk_len)


def scan_cpu_with(*threads: int) -> Backend:
    """The CPU scan as `_helpers.check_backend` runs it, with these thread counts."""
    return replace(BACKENDS["scan cpu"], variants=tuple({"threads": t} for t in threads))


def kernels_with(*chunk_lens: int, launch=None) -> Backend:
    """The CUDA scan kernels on the host as `_helpers.check_backend` runs them, with these chunk lengths."""
    backend = BACKENDS["scan kernels on host"]
    if launch is not None:
        backend = replace(backend, run=launched(scan_cuda, lambda: launch))
    return replace(backend, variants=tuple({"chunk_len": c} for c in chunk_lens))


@pytest.fixture
def split_short(monkeypatch):
    """Let the CPU scan split even very short sequences into chunks."""
    monkeypatch.setattr(scan_cpu, "CPU_MIN_STEPS_PER_THREAD", 1)


# ---- lengths and chunk boundaries ---------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 2, 7, 31, 32, 33, 63, 64, 65])
def test_kernel_chunk_boundaries(length):
    """L = chunk +- 1, odd L, L = 1, a single chunk, one step per chunk."""
    case = make_case(length, 2, 3, skip="x", bidirectional=True, use_tanh=True, mask=True, seed=length)
    check_backend(kernels_with(1, 8, 32), case)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 9, 17, 64, 65, 257])
def test_cpu_chunk_boundaries(split_short, length):
    case = make_case(length, 2, 4, skip="u3", bidirectional=True, use_tanh=True, mask=True, drop=True,
                     seed=length)
    check_backend(scan_cpu_with(2, 3), case)


def test_cpu_chunk_bounds():
    assert scan_cpu.cpu_chunk_bounds(100, 1, 0.5) == [0, 100]
    assert scan_cpu.cpu_chunk_bounds(100, 2, 0.5) == [0, 100]  # too short to split
    b = scan_cpu.cpu_chunk_bounds(10_000, 2, 0.5)
    assert b[0] == 0 and b[-1] == 10_000 and len(b) == 4 and all(x < y for x, y in zip(b, b[1:], strict=False))
    assert b[2] - b[1] == b[3] - b[2]  # the fix-up chunks are equal; chunk 0 ~ r/(P+r) of the steps
    assert abs(b[1] - 10_000 * 0.5 / 2.5) <= 1


def test_gpu_chunk_len():
    assert scan_cuda.gpu_chunk_len(1, 64) == 1
    assert scan_cuda.gpu_chunk_len(65536, 64) * 64 * (65536 // scan_cuda.gpu_chunk_len(65536, 64)) >= 65536 * 64 // 2
    assert scan_cuda.gpu_chunk_len(65536, 1 << 20) == 65536  # enough columns: one chunk (the sequential kernel)
    assert scan_cuda.gpu_chunk_len(100, 1) >= scan_cuda.GPU_MIN_CHUNK


def test_kernel_grid_stride_loops():
    """A grid capped at 2 blocks of 64 threads makes every kernel walk its (chunk, column) grid-stride loop."""
    case = make_case(20, 3, 20, skip="x", bidirectional=True, use_tanh=True, mask=True, drop=True, seed=9)
    check_backend(kernels_with(3, launch=scan_cuda.make_host_launcher(block=64, max_grid=2)), case)


@pytest.mark.parametrize("batch", [0])
def test_empty_batch(batch):
    case = make_case(5, 1, 3)
    empty = Case(case.u[:, :batch], case.x[:, :batch], case.bias, case.c0[:batch], None, None, False, False, 1.0)
    h, c_n, c_all = scan.forward(empty.args())
    assert h.shape == (5, 0, 3) and c_n.shape == (0, 3)


# ---- against the sequential cpu backend and through the custom op ------------------------------------------------

def test_matches_sequential_cpu_backend(split_short):
    ok, why = dispatch.backend_availability("cpu")
    if not ok:
        pytest.skip(f"cpu backend unavailable: {why}")
    from parrnn.ops.sru import sequential_cpu as cpu  # noqa: PLC0415

    case = make_case(300, 3, 8, skip="u3", bidirectional=True, use_tanh=True, mask=True, drop=True,
                     dtype=torch.float32, seed=11)
    h, c_n, c_all = cpu.forward(case.args())
    gh, gcn = torch.randn_like(h), torch.randn_like(c_n)
    g_seq = cpu.backward(case.args(), gh, gcn, c_all)
    for run in ((lambda: run_cpu(case, gh, gcn, 2)), (lambda: run_kernels(case, gh, gcn, 16))):
        (h2, c_n2, c_all2), g2 = run()
        for a, b in ((h2, h), (c_n2, c_n), (c_all2, c_all), *zip(g2, g_seq, strict=True)):
            if b is None:
                assert a is None
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradcheck_through_custom_op(bidirectional):
    case = make_case(9, 2, 3, skip="x", bidirectional=bidirectional, use_tanh=True, mask=True, drop=True, seed=5)
    u, x, bias, c0 = (t.clone().requires_grad_() for t in (case.u, case.x, case.bias, case.c0))

    def fn(u, x, bias, c0):
        return dispatch.sru_recurrence(u, x, None, bias, c0, case.mask_pad, case.drop_mask,
                                       bidirectional=bidirectional, use_tanh=True, scale_x=case.scale_x,
                                       backend="scan")

    assert torch.autograd.gradcheck(fn, (u, x, bias, c0), eps=1e-6, atol=1e-6)


def test_backend_selection():
    with pytest.raises(ValueError, match="linear"):
        dispatch.resolve_backend("scan", torch.device("cpu"), linear=False, batch_columns=8, length=8)
    assert dispatch.resolve_backend("scan", torch.device("cpu"), linear=True, batch_columns=8, length=8) == "scan"
    cpu = torch.device("cpu")
    assert dispatch.auto_backend(cpu, linear=True, batch_columns=4096, length=16) == "sequential"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert dispatch.auto_backend(cpu, linear=True, batch_columns=128, length=65536) == "scan"
        assert dispatch.auto_backend(cpu, linear=True, batch_columns=64, length=65536) == "sequential"
        assert dispatch.resolve_backend("auto", torch.device("cpu"), linear=True, batch_columns=512,
                                        length=16384) == "scan"
        assert dispatch.resolve_backend("auto", torch.device("cpu"), linear=False, batch_columns=512,
                                        length=16384) == "sequential"
        torch.set_num_threads(1)
        assert dispatch.auto_backend(cpu, linear=True, batch_columns=128, length=65536) == "sequential"
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="linear"):
        case = make_case(3, 1, 2)
        scan.forward(RecurrenceArgs(case.u, case.x, torch.zeros(2, 2, dtype=torch.float64), case.bias, case.c0,
                                    None, None))


def test_sru_layer_v1_scan_matches_reference():
    from parrnn import SRU  # noqa: PLC0415

    torch.manual_seed(0)
    ref = SRU(5, 6, 2, version="v1", bidirectional=True, backend="reference").double()
    fast = SRU(5, 6, 2, version="v1", bidirectional=True, backend="scan").double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(11, 3, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([11, 4, 8])
    out_r, c_r = ref(x, None, lengths)
    out_f, c_f = fast(x, None, lengths)
    torch.testing.assert_close(out_f, out_r)
    torch.testing.assert_close(c_f, c_r)
    (gr,) = torch.autograd.grad(out_r.square().sum() + c_r.sum(), x)
    (gf,) = torch.autograd.grad(out_f.square().sum() + c_f.sum(), x)
    torch.testing.assert_close(gf, gr)


# ---- stability and long-sequence precision ------------------------------------------------------------------------

def test_underflowing_products_stay_finite(split_short):
    """Forget gates ~1e-13 make every running product underflow to 0 (the cumprod/cumsum trick divides by them)."""
    case = make_case(3000, 1, 4, skip="none", dtype=torch.float32, seed=2)
    case.u[:, :, 1] = -30.0
    gh = torch.randn(3000, 1, 4)
    gcn = torch.randn(1, 4)
    for (h, _, c_all), grads in (run_cpu(case, gh, gcn, 2), run_kernels(case, gh, gcn, 64)):
        assert torch.isfinite(h).all() and torch.isfinite(c_all).all()
        assert all(torch.isfinite(g).all() for g in grads if g is not None)
        torch.testing.assert_close(c_all[:, 0], case.u[:, 0, 0], rtol=1e-5, atol=1e-5)  # c_t ~ u0_t


def test_float32_state_with_half_storage(split_short):
    """Autocast-style call: bfloat16 u/x, float32 bias and c0: h in bfloat16, c_n and the bias/c0 gradients in
    float32, c_n at float32 accuracy (not rounded to bfloat16), for the CPU scan and the kernels."""
    case = make_case(40, 3, 4, skip="x", bidirectional=True, mask=True, drop=True, dtype=torch.float32, seed=13)
    case.u, case.x = case.u.to(torch.bfloat16), case.x.to(torch.bfloat16)
    gh, gcn = random_grads(40, 3, 8, torch.bfloat16, seed=2)
    gcn = gcn.float()
    h_ref, c_ref, g_ref = reference_values_and_grads(*case.tensors(), gh, gcn, **case.options())
    for (h, c_n, _), (g_u, g_x, _, g_b, g_c0) in (run_cpu(case, gh, gcn, 2), run_kernels(case, gh, gcn, 7)):
        assert h.dtype == torch.bfloat16 and g_u.dtype == torch.bfloat16 and g_x.dtype == torch.bfloat16
        assert c_n.dtype == g_b.dtype == g_c0.dtype == torch.float32
        assert_close(h, h_ref, SCAN_TOL[torch.bfloat16], "h")
        assert_close(c_n, c_ref, SCAN_TOL[torch.float32], "c_n")
        assert_close(g_b, g_ref["bias"], SCAN_TOL[torch.bfloat16], "grad_bias", atol_scale=40)
        assert_close(g_c0, g_ref["c0"], SCAN_TOL[torch.bfloat16], "grad_c0")


def _extreme_case(length: int) -> Case:
    """float32 v1 inputs with extreme states: c0 = +-inf and +-1e35 in some columns, u0 = +-1e30 and
    saturating gates (u1, u2 = +-60: f, r ~1 or ~1e-26, never exactly 0) at some steps, and forget gates ~0.1
    elsewhere, so every chunk's product of forget gates underflows to 0."""
    case = make_case(length, 2, 4, skip="x", bidirectional=True, use_tanh=False, mask=True, dtype=torch.float32,
                     seed=12)
    case.u[:, :, 1] -= 2.0
    case.c0[0, 0], case.c0[0, 5], case.c0[1, 2], case.c0[1, 7] = float("inf"), -float("inf"), 1e35, -1e35
    case.c0[1, 1] = float("inf")
    case.u[length // 3, :, 0, 3] = 1e30
    case.u[length // 2, :, 0, 6] = -1e30
    case.u[length // 4, :, 1, 1] = -60.0
    case.u[length // 5, :, 1, 4] = 60.0
    case.u[length // 6, :, 2, :] = -60.0
    return case


def _assert_same_nonfinite(got: Tensor, want: Tensor, what: str) -> None:
    """NaN and +-inf at the same positions, finite values close (relative)."""
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5, equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("use_tanh", [False, True])
def test_extreme_states_match_sequential(split_short, use_tanh):
    """c0 = +-inf, huge u: the scan (CPU, and the CUDA kernels on the host) has NaN and inf exactly where the
    sequential cpu backend has them, and its forward matches the reference. The v1 step has no peephole terms,
    so an infinite state must not meet a zero peephole weight (0 * inf = NaN), nor a forget-gate product that
    underflowed to 0 at a chunk boundary."""
    ok, why = dispatch.backend_availability("cpu")
    if not ok:
        pytest.skip(f"cpu backend unavailable: {why}")
    from parrnn.ops.sru import sequential_cpu as cpu  # noqa: PLC0415

    length = 600
    case = _extreme_case(length)
    case.use_tanh = use_tanh
    h, c_n, c_all = cpu.forward(case.args())
    assert not torch.isfinite(c_all).all()  # the case does exercise infinite states
    h_ref, c_ref = dispatch.sru_recurrence(*case.tensors(), **case.options(), backend="reference")
    _assert_same_nonfinite(h, h_ref, "sequential h vs reference")
    _assert_same_nonfinite(c_n, c_ref, "sequential c_n vs reference")
    gh, gcn = random_grads(length, 2, 8, torch.float32, seed=3)
    g_seq = cpu.backward(case.args(), gh, gcn, c_all)
    for name, run in (("cpu scan", lambda: run_cpu(case, gh, gcn, 2)),
                      ("kernels", lambda: run_kernels(case, gh, gcn, 150))):
        (h2, c_n2, c_all2), g2 = run()
        for what, a, b in (("h", h2, h), ("c_n", c_n2, c_n), ("c_all", c_all2, c_all),
                           *((f"grad {i}", a, b) for i, (a, b) in enumerate(zip(g2, g_seq, strict=True)))):
            if b is None:
                assert a is None
            else:
                _assert_same_nonfinite(a, b, f"{name} {what}")


def _numpy_reference(u: np.ndarray, x: np.ndarray, bias: np.ndarray, c0: np.ndarray, scale_x: float):
    """float64 forward of the v1 SRU with highway, one direction, no masks (an independent, vectorised loop)."""
    c = c0.copy()
    h = np.empty_like(x)
    f_all = 1.0 / (1.0 + np.exp(-(u[:, :, 1] + bias[0])))
    r_all = 1.0 / (1.0 + np.exp(-(u[:, :, 2] + bias[1])))
    for t in range(u.shape[0]):
        c = f_all[t] * c + (1.0 - f_all[t]) * u[t, :, 0]
        h[t] = r_all[t] * c + (1.0 - r_all[t]) * scale_x * x[t]
    return h, c


def test_long_sequence_float32_precision(split_short):
    """L = 65536: the float32 scan (CPU: 3 chunks; kernels: 1024 chunks) within 1e-4 relative of float64."""
    length, batch, hidden = 65536, 1, 4
    case64 = make_case(length, batch, hidden, skip="x", seed=3)
    case64.u[:, :, 1] += 3.0  # forget gates ~0.95: long memory, the regime where error could accumulate
    h64, c64 = _numpy_reference(case64.u.numpy(), case64.x.numpy(), case64.bias.numpy(), case64.c0.numpy(),
                                case64.scale_x)
    h64, c64 = torch.from_numpy(h64), torch.from_numpy(c64)
    case32 = Case(*(None if t is None else t.float() for t in case64.inputs()), *case64.flags())
    gh = torch.randn(length, batch, hidden, dtype=torch.float64)
    gcn = torch.randn(batch, hidden, dtype=torch.float64)
    (_, _, c_all64), g64 = run_cpu(case64, gh, gcn, 1)  # float64, sequential (one chunk)
    for (h, c_n, _), g in (run_cpu(case32, gh.float(), gcn.float(), 3),
                           run_kernels(case32, gh.float(), gcn.float(), 64)):
        for got, want in ((h, h64), (c_n, c64), *((a, b) for a, b in zip(g, g64, strict=True) if b is not None)):
            err = (got.double() - want).abs().max().item()
            assert err <= 1e-4 * want.abs().max().item(), err


# ---- the CUDA scan on a GPU ----------------------------------------------------------------------------------------

def _cuda_ok() -> bool:
    return torch.cuda.is_available() and scan.availability("cuda")[0]


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ok(), reason="needs a CUDA GPU and CuPy")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("chunk_len", [None, 1, 7])
def test_gpu_scan_matches_cpu(dtype, chunk_len):
    case = make_case(200, 3, 40, skip="x", bidirectional=True, use_tanh=True, mask=True, drop=True, dtype=dtype,
                     seed=4)
    gh = torch.randn(200, 3, 80, dtype=torch.float64).to(dtype)
    gcn = torch.randn(3, 80, dtype=torch.float64).to(dtype)
    (h, c_n, c_all), g = run_cpu(case, gh, gcn, 1)
    cuda = Case(*(None if t is None else t.cuda() for t in case.inputs()), *case.flags())
    fwd = scan_cuda.forward_with(scan_cuda.cupy_launcher, cuda.args(), chunk_len=chunk_len)
    bwd = scan_cuda.backward_with(scan_cuda.cupy_launcher, cuda.args(), gh.cuda(), gcn.cuda(), fwd[2],
                                  chunk_len=chunk_len)
    rtol, atol = SCAN_TOL[dtype]
    for a, b in ((fwd[0], h), (fwd[1], c_n), (fwd[2], c_all), *zip(bwd, g, strict=True)):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a.cpu().double(), b.double(), rtol=rtol, atol=atol)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ok(), reason="needs a CUDA GPU and CuPy")
def test_gpu_scan_through_dispatch_long():
    case = make_case(20000, 1, 64, skip="x", dtype=torch.float32, seed=8)
    cuda = [None if t is None else t.cuda().requires_grad_(t.is_floating_point()) for t in case.inputs()]
    h, c_n = dispatch.sru_recurrence(cuda[0], cuda[1], None, cuda[2], cuda[3], None, None, scale_x=case.scale_x,
                                     backend="scan")
    h_seq, c_seq = dispatch.sru_recurrence(cuda[0], cuda[1], None, cuda[2], cuda[3], None, None,
                                           scale_x=case.scale_x, backend="cuda")
    torch.testing.assert_close(h, h_seq, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c_n, c_seq, rtol=1e-4, atol=1e-4)
    g = torch.autograd.grad(h.sum() + c_n.sum(), [cuda[0], cuda[1], cuda[2], cuda[3]])
    g_seq = torch.autograd.grad(h_seq.sum() + c_seq.sum(), [cuda[0], cuda[1], cuda[2], cuda[3]])
    for a, b in zip(g, g_seq, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)

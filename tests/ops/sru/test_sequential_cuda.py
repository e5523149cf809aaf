"""The CUDA backend on a GPU: the custom op and the SRU layer against the reference, streams, two devices, the
64-bit index path, compilation per dtype and its failure. Skipped without CUDA (``gpu`` marker).

Its values and gradients against the reference, every option and dtype, odd sizes, are checked with every backend
in test_backends.py (``cuda``, marked ``gpu``); the same kernels run on the CPU there and in
test_kernels_on_cpu.py. These tests add what only a device shows: NVRTC/CuPy compilation and launch, streams,
devices, and > 2^31-element tensors.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import rel_err
from test_kernels_on_cpu import Case, make_inputs

from parrnn.ops import cuda_runtime
from parrnn.ops.sru import dispatch
from parrnn.ops.sru import sequential_cuda as cuda_backend
from parrnn.ops.sru.contract import RecurrenceArgs

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _cuda_inputs(case: Case, dtype: torch.dtype, device: str = "cuda", seed: int = 0) -> dict:
    return {k: None if v is None else v.to(device) for k, v in make_inputs(case, dtype, seed).items()}


def _run(inp: dict, case: Case, grad_h: torch.Tensor, grad_c_n: torch.Tensor) -> dict:
    args = RecurrenceArgs(inp["u"], inp["x"], inp["weight_c"], inp["bias"], inp["c0"], inp["mask_pad"],
                          inp["drop_mask"], case.bidirectional, case.use_tanh, case.scale_x)
    h, c_n, c_all = cuda_backend.forward(args)
    gu, gx, gwc, gb, gc0 = cuda_backend.backward(args, grad_h, grad_c_n, c_all)
    return {"h": h, "c_n": c_n, "c_all": c_all, "grad_u": gu, "grad_x": gx, "grad_weight_c": gwc,
            "grad_bias": gb, "grad_c0": gc0}


def test_available():
    ok, why = cuda_backend.availability()
    assert ok, why
    assert dispatch.available_backends("cuda")["sequential"][0]


def test_custom_op_autograd_and_dispatch():
    """``backend="cuda"`` through the custom op and autograd, vs the reference's autograd."""
    case = Case(length=16, batch=3, hidden=33, bidirectional=True, mask=True, use_tanh=True, drop=True)
    inp = _cuda_inputs(case, torch.float32)
    names = ("u", "x", "weight_c", "bias", "c0")
    results = {}
    for backend in ("cuda", "reference"):
        leaves = {n: inp[n].detach().clone().requires_grad_() for n in names if inp[n] is not None}
        h, c_n = dispatch.sru_recurrence(
            leaves["u"], leaves.get("x"), leaves.get("weight_c"), leaves["bias"], leaves["c0"],
            inp["mask_pad"], inp["drop_mask"], bidirectional=case.bidirectional, use_tanh=case.use_tanh,
            backend=backend)
        (h.square().sum() + c_n.sum()).backward()
        results[backend] = (h.detach(), c_n.detach(), {n: t.grad for n, t in leaves.items()})
    (h1, c1, g1), (h2, c2, g2) = results["cuda"], results["reference"]
    assert rel_err(h1, h2) < 1e-5 and rel_err(c1, c2) < 1e-5
    for n in g1:
        assert rel_err(g1[n], g2[n]) < 1e-5, n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d).split(".")[-1])
def test_sru_layer_multilayer(dtype: torch.dtype):
    """A 2-layer bidirectional SRU with lengths on the cuda backend matches the reference backend."""
    import parrnn

    torch.manual_seed(0)
    L, N, D, H = 23, 4, 24, 16
    model = parrnn.SRU(D, H, num_layers=2, bidirectional=True, backend="cuda").cuda().to(dtype)
    ref = parrnn.SRU(D, H, num_layers=2, bidirectional=True, backend="reference").cuda().to(dtype)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(L, N, D, device="cuda", dtype=dtype)
    lengths = torch.tensor([23, 7, 15, 1])
    outs = []
    for m in (model, ref):
        xi = x.clone().requires_grad_()
        out, c_n = m(xi, lengths=lengths)
        (out.float().square().sum() + c_n.float().sum()).backward()
        outs.append((out.detach(), c_n.detach(), xi.grad, [p.grad for p in m.parameters()]))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    (o1, c1, gx1, gp1), (o2, c2, gx2, gp2) = outs
    assert rel_err(o1, o2) < tol and rel_err(c1, c2) < tol and rel_err(gx1, gx2) < tol
    for a, b in zip(gp1, gp2, strict=True):
        assert rel_err(a, b) < tol


def test_runs_on_torch_current_stream():
    """Work queued on a side stream before the kernel is seen by it (the kernel runs on that stream)."""
    case = Case(length=64, batch=16, hidden=256)
    inp = _cuda_inputs(case, torch.float32)
    expected = cuda_backend.forward(RecurrenceArgs(inp["u"], inp["x"], inp["weight_c"], inp["bias"], inp["c0"],
                                                   None, None))[0]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(10_000_000)  # delay the stream so an unordered kernel would read stale u
        u = inp["u"] * 1.0  # produced on the side stream
        h = cuda_backend.forward(RecurrenceArgs(u, inp["x"], inp["weight_c"], inp["bias"], inp["c0"], None,
                                                None))[0]
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert torch.equal(h, expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    """Tensors on cuda:1 run on cuda:1 (with cuda:0 current) and give the same result as on cuda:0."""
    case = Case(length=20, batch=3, hidden=17, bidirectional=True, mask=True, use_tanh=True)
    cols = 34
    g = torch.Generator().manual_seed(2)
    grad_h = torch.randn(case.length, case.batch, cols, generator=g)
    grad_c_n = torch.randn(case.batch, cols, generator=g)
    results = []
    for dev in ("cuda:0", "cuda:1"):
        torch.cuda.set_device(0)
        inp = _cuda_inputs(case, torch.float32, device=dev)
        out = _run(inp, case, grad_h.to(dev), grad_c_n.to(dev))
        assert out["h"].device == torch.device(dev)
        results.append({k: None if v is None else v.cpu() for k, v in out.items()})
    for key in results[0]:
        if results[0][key] is not None:
            assert torch.equal(results[0][key], results[1][key]), key


def test_64bit_indexing():
    """u with more than 2^31 elements: the last batch row (addresses beyond 2^31) matches a small run of that
    row alone, bit for bit (columns are independent and the kernel is deterministic)."""
    L, N, C = 8192, 24, 4096  # u: L*N*3*C = 2.4e9 elements (fp16: 4.8 GB); h 1.6 GB; c_all fp32 3.2 GB
    need = (L * N * C) * (3 * 2 + 2 + 4) * 2.2  # forward + backward, with headroom
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs ~{need / 2**30:.0f} GiB free GPU memory, {free / 2**30:.0f} GiB available")
    assert L * N * 3 * C > 2**31
    dtype = torch.float16
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(L, N, 3, C, device="cuda", dtype=dtype, generator=g)
    wc = torch.randn(2, C, device="cuda") * 0.1
    bias = torch.randn(2, C, device="cuda")
    c0 = torch.randn(N, C, device="cuda")
    args = RecurrenceArgs(u, None, wc, bias, c0, None, None)
    h, c_n, c_all = cuda_backend.forward(args)
    grad_h = torch.randn_like(h)
    grad_c_n = torch.randn(N, C, device="cuda", dtype=dtype)
    gu, _, gwc, gb, gc0 = cuda_backend.backward(args, grad_h, grad_c_n, c_all)
    last = slice(N - 1, N)
    args1 = RecurrenceArgs(u[:, last].contiguous(), None, wc, bias, c0[last], None, None)
    h1, c_n1, c_all1 = cuda_backend.forward(args1)
    gu1, _, _, _, gc01 = cuda_backend.backward(args1, grad_h[:, last].contiguous(), grad_c_n[last], c_all1)
    assert torch.equal(h[:, last], h1)
    assert torch.equal(c_n[last], c_n1)
    assert torch.equal(c_all[:, last], c_all1)
    assert torch.equal(gu[:, last], gu1)
    assert torch.equal(gc0[last], gc01)
    assert torch.isfinite(gwc).all() and torch.isfinite(gb).all()


# ---- issue 15: availability = compiled; fallback; stream wrappers; precompile ---------------------------------

def test_availability_compiles_every_dtype():
    """``cuda`` is available for a dtype exactly when its kernels compiled and loaded on the device."""
    import parrnn

    dev = torch.device("cuda", torch.cuda.current_device())
    report = parrnn.precompile(dev, dtypes=DTYPES)
    assert all(ok for ok, _ in report.values()), report
    for dtype in DTYPES:
        suffix = str(dtype).split(".")[-1]
        assert report[f"cuda {suffix}"][0] and report[f"scan {suffix}"][0]
        key = (dev.index, cuda_backend.SUFFIX[dtype], (cuda_backend.KERNEL_FILE, cuda_backend.prefetch_depth()))
        assert key in cuda_runtime._modules


def test_nvrtc_failure_falls_back_or_raises(monkeypatch):
    """A kernel NVRTC rejects: ``auto`` warns once and runs the reference; ``backend="cuda"`` raises with the
    NVRTC log, which names the real file and line through the inliner's #line markers."""
    broken = '#line 7 "sru_step.cuh"\nthis_is_not_cuda;\n'
    monkeypatch.setattr(cuda_runtime, "kernel_code", lambda kernel_file: broken)
    for name in ("_modules", "_functions"):
        monkeypatch.setattr(cuda_runtime, name, {})
    monkeypatch.setattr(dispatch, "_availability", {})
    monkeypatch.setattr(dispatch, "_warned", set())
    case = Case(length=4, batch=2, hidden=3)
    inp = _cuda_inputs(case, torch.float32)
    args = (inp["u"], inp["x"], inp["weight_c"], inp["bias"], inp["c0"], None, None)
    with pytest.warns(RuntimeWarning, match="'cuda' backend is unavailable"):
        h, _ = dispatch.sru_recurrence(*args)
    h_ref, _ = dispatch.sru_recurrence(*args, backend="reference")
    assert torch.equal(h, h_ref)
    with pytest.raises(RuntimeError, match=r"sru_step\.cuh\(7\)"):
        dispatch.sru_recurrence(*args, backend="cuda")


def test_one_stream_wrapper_per_stream():
    case = Case(length=8, batch=2, hidden=16)
    inp = _cuda_inputs(case, torch.float32)
    args = RecurrenceArgs(inp["u"], inp["x"], inp["weight_c"], inp["bias"], inp["c0"], None, None)
    cuda_backend.forward(args)
    before = len(cuda_runtime._streams)
    for _ in range(3):
        cuda_backend.forward(args)
    assert len(cuda_runtime._streams) == before
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        cuda_backend.forward(args)
    torch.cuda.synchronize()
    assert len(cuda_runtime._streams) == before + 1
    assert (inp["u"].device.index, side.cuda_stream) in cuda_runtime._streams


def test_bad_shapes_never_reach_the_gpu():
    """A wrong shape is a ValueError before any launch (an out-of-bounds read would poison the context)."""
    case = Case(length=4, batch=2, hidden=3)
    inp = _cuda_inputs(case, torch.float32)
    with pytest.raises(ValueError, match="c0 must have shape"):
        cuda_backend.forward(RecurrenceArgs(inp["u"], inp["x"], inp["weight_c"], inp["bias"], inp["c0"][:1], None,
                                            None))
    torch.cuda.synchronize()  # the context is healthy

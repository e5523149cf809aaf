"""The CuPy glue of parrnn.ops.sru.sequential_cuda / scan_cuda on the CPU, through a recording fake of the CuPy API
(tests/ops/fake_cupy.py): compile options, grid/block, argument list, stream handle, device; availability means
"compiled for this device and dtype"; ``auto`` falls back with one warning, an explicit backend raises with the
NVRTC log; the scan's availability is per device. The kernels themselves run in test_cuda_kernels_on_cpu.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from fake_cupy import FakeCupy

import parrnn
from parrnn import _paths
from parrnn.ops import cuda_runtime, cuda_toolchain, registry
from parrnn.ops.launch import Arg
from parrnn.ops.sru import dispatch, scan, scan_cuda
from parrnn.ops.sru import sequential_cuda as cuda
from parrnn.ops.sru.contract import RecurrenceArgs

STREAM_BASE = 7000  # torch's "current stream" handle on cuda:i is STREAM_BASE + i in these tests
SMS = 4


@pytest.fixture
def fake(monkeypatch) -> FakeCupy:
    """CuPy replaced by the recording fake, torch pretending to have CUDA, every cache empty."""
    fc = FakeCupy()
    module = fc.module()
    monkeypatch.setattr(cuda_runtime, "_import_cupy", lambda: module)
    monkeypatch.setattr(cuda_runtime, "_torch_stream", lambda index: STREAM_BASE + index)
    monkeypatch.setattr(cuda_runtime, "_multiprocessor_count", lambda index: SMS)
    for name in ("_modules", "_functions", "_streams", "_sm_count"):
        monkeypatch.setattr(cuda_runtime, name, {})
    monkeypatch.setattr(registry, "_availability", {})
    monkeypatch.setattr(registry, "_warned", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return fc


def test_launch_options_grid_args_stream(fake: FakeCupy) -> None:
    args = [Arg("ptr", 123), Arg("ptr", 0), Arg("i64", 5), Arg("i32", -1), Arg("f32", 1.5), Arg("f64", 2.5)]
    cuda_runtime.cupy_launch(cuda.KERNEL_FILE, "sru_forward_bf16", 1000, args, torch.device("cuda", 1))
    (compiled,) = fake.compiles
    assert compiled["name"] == "sru_forward_bf16" and compiled["device"] == 1
    opts = compiled["options"]
    assert "-std=c++17" in opts and "-DPARRNN_ONLY_BF16" in opts
    assert not any(o.startswith("-I") and "kernels" in o for o in opts), opts  # no -I of the kernel folder
    assert not any("cu12" in o or "cuda_runtime" in o for o in opts), opts  # NVRTC 13: cu13 headers only
    (launch,) = fake.launches
    # 1000 columns on 4 SMs: 256-thread blocks give 4 < 2 * 4 blocks, 128-thread blocks give 8
    assert (launch.kernel, launch.grid, launch.block) == ("sru_forward_bf16", (8,), (128,))
    assert [type(a) for a in launch.args] == [np.uint64, np.uint64, np.int64, np.int32, np.float32, np.float64]
    assert [a.item() for a in launch.args] == [123, 0, 5, -1, 1.5, 2.5]
    assert (launch.stream.handle, launch.stream.device_id) == (STREAM_BASE + 1, 1)
    # a second launch compiles nothing and creates no stream wrapper; a module per (device, dtype)
    cuda_runtime.cupy_launch(cuda.KERNEL_FILE, "sru_forward_bf16", 100_000, args, torch.device("cuda", 1))
    assert len(fake.compiles) == 1 and fake.streams == [(STREAM_BASE + 1, 1)]
    assert (fake.launches[1].grid, fake.launches[1].block) == ((-(-100_000 // 256),), (256,))
    cuda_runtime.cupy_launch(cuda.KERNEL_FILE, "sru_forward_bf16", 10, args, torch.device("cuda", 0))
    assert fake.compiles[-1]["device"] == 0 and fake.streams[-1] == (STREAM_BASE, 0)
    assert fake.launches[-1].stream.device_id == 0


def test_launch_config() -> None:
    assert cuda_runtime.launch_config(1000, 4) == (8, 128)
    assert cuda_runtime.launch_config(10, 132) == (1, 64)
    assert cuda_runtime.launch_config(10**6, 132) == (-(-10**6 // 256), 256)


def test_forward_and_backward_argument_lists(fake: FakeCupy) -> None:
    """The exact argument list of each kernel, as CuPy receives it: data pointers of the (converted) tensors,
    shapes and options, in kernels/sru_recurrence.cu's parameter order."""
    g = torch.Generator().manual_seed(0)
    length, batch, cols = 6, 2, 4
    u, x = torch.randn(length, batch, 3, cols, generator=g), torch.randn(length, batch, cols, generator=g)
    wc, bias, c0 = torch.randn(2, cols, generator=g), torch.randn(2, cols, generator=g), torch.randn(batch, cols)
    mask = torch.zeros(length, batch, dtype=torch.bool)
    seen: list[tuple] = []

    def launcher(name, total, args, device):
        seen.append((name, total, [a.kind for a in args], args))
        cuda_runtime.cupy_launch(cuda.KERNEL_FILE, name, total, args, torch.device("cuda", 0))

    inputs = RecurrenceArgs(u, x, wc, bias, c0, mask, None, bidirectional=True, use_tanh=True, scale_x=1.25)
    h, c_n, c_all = cuda.forward_with(launcher, inputs)
    name, total, kinds, args = seen[0]
    assert (name, total) == ("sru_forward_f32", batch * cols)
    assert kinds == ["ptr"] * 10 + ["i64"] * 3 + ["i32"] * 3 + ["f32"]
    pointers = [a.value for a in args[:10]]
    expected = [t.data_ptr() for t in (u, x, wc, bias, c0, mask)] + [0] + [t.data_ptr() for t in (h, c_n, c_all)]
    assert pointers == expected
    assert [a.value for a in args[10:]] == [length, batch, cols, 3, 1, 1, 1.25]
    assert [a.item() for a in fake.launches[0].args] == pointers + [length, batch, cols, 3, 1, 1, 1.25]
    cuda.backward_with(launcher, inputs, torch.randn(length, batch, cols), torch.randn(batch, cols), c_all)
    name, total, kinds, args = seen[1]
    assert (name, total) == ("sru_backward_f32", batch * cols)
    assert kinds == ["ptr"] * 15 + ["i64"] * 3 + ["i32"] * 3 + ["f32"]
    assert args[2].value == u.data_ptr() and args[9].value == c_all.data_ptr()
    assert len(fake.launches) == 2 and fake.launches[1].kernel == "sru_backward_f32"


def test_scan_launches(fake: FakeCupy) -> None:
    """The scan's three forward launches go through the same CuPy glue with kernels/sru_scan.cu."""
    g = torch.Generator().manual_seed(0)
    length, batch, cols = 64, 1, 2
    u, bias, c0 = torch.randn(length, batch, 3, cols, generator=g), torch.randn(2, cols), torch.randn(batch, cols)

    def launcher(name, total, args, device):
        scan_cuda.cupy_launcher(name, total, args, torch.device("cuda", 0))

    scan_cuda.forward_with(launcher, RecurrenceArgs(u, None, None, bias, c0, None, None), chunk_len=16)
    assert [launch.kernel for launch in fake.launches] == [f"sru_scan_fwd_{p}_f32" for p in ("reduce", "carry",
                                                                                            "apply")]
    assert "#line 1 \"sru_scan.cu\"" in fake.compiles[0]["code"]


def test_compile_failure_auto_warns_once_explicit_raises(fake: FakeCupy) -> None:
    fake.fail_compile = True
    ok, why = cuda.availability("cuda:0", torch.float32)
    assert not ok and 'identifier "bogus"' in why and "sru_recurrence.cu" in why
    dev = torch.device("cuda", 0)
    kw = {"linear": False, "batch_columns": 64, "length": 16, "dtype": torch.float32}
    with pytest.warns(RuntimeWarning, match="'sequential' backend is unavailable.*bogus"):
        assert dispatch.resolve_backend("auto", dev, **kw) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.resolve_backend("auto", dev, **kw) == "reference"  # one warning, not one per call
    with pytest.raises(RuntimeError, match=r"(?s)backend 'sequential' is unavailable.*error: identifier \"bogus\""):
        dispatch.resolve_backend("sequential", dev, **kw)


def test_availability_compiles_per_device_and_dtype(fake: FakeCupy) -> None:
    assert dispatch.backend_availability("cuda", "cuda:1", torch.bfloat16)[0]
    assert {(c["device"], c["name"]) for c in fake.compiles} == {(1, "sru_forward_bf16"), (1, "sru_backward_bf16")}
    dispatch.backend_availability("cuda", "cuda:1", torch.bfloat16)
    assert len(fake.compiles) == 2  # cached
    dispatch.backend_availability("cuda", "cuda:1", torch.float16)
    assert len(fake.compiles) == 4


def test_precompile_cuda(fake: FakeCupy) -> None:
    report = parrnn.precompile("cuda:1", dtypes=[torch.float32, torch.bfloat16])
    sru = {key: value for key, value in report.items() if key.startswith("sru ")}
    assert set(sru) == {"sru sequential float32", "sru scan float32", "sru sequential bfloat16", "sru scan bfloat16"}
    assert all(ok for ok, _ in sru.values()), report
    compiled = {(c["device"], c["name"]) for c in fake.compiles}
    for sfx in ("f32", "bf16"):
        assert {(1, f"{k}_{sfx}") for k in cuda.KERNELS + scan_cuda.KERNELS} <= compiled


def test_auto_never_picks_the_unmeasured_cuda_scan(fake: FakeCupy) -> None:
    dev = torch.device("cuda", 0)
    assert dispatch.backend_availability("scan", dev)[0]
    assert dispatch.auto_backend(dev, linear=True, batch_columns=64, length=1 << 16) == "sequential"
    for rule in dispatch.AUTO_RULES:
        assert rule.measurement.strip(), rule
        assert not (rule.device == "cuda" and rule.backend == "scan"), "CUDA scan in auto without a GPU measurement"


def test_scan_on_cuda_without_cupy_is_unavailable(monkeypatch) -> None:
    def no_cupy():
        raise ModuleNotFoundError("No module named 'cupy'")

    monkeypatch.setattr(cuda_runtime, "_import_cupy", no_cupy)
    monkeypatch.setattr(registry, "_availability", {})
    ok, why = scan.availability("cuda:0")
    assert not ok and "CuPy is not importable" in why
    assert dispatch.backend_availability("scan", "cpu")[0] == scan.availability("cpu")[0]
    with pytest.raises(RuntimeError, match="backend 'scan' is unavailable on cuda:0.*CuPy"):
        dispatch.resolve_backend("scan", torch.device("cuda", 0), linear=True, batch_columns=4, length=4)


def test_include_dirs_follow_nvrtc_version(fake: FakeCupy, monkeypatch, tmp_path) -> None:
    for sub in ("cu13", "cuda_runtime"):
        folder = tmp_path / "nvidia" / sub / "include"
        folder.mkdir(parents=True)
        (folder / "cuda_fp16.h").write_text("")
    monkeypatch.setattr(cuda_toolchain.site, "getsitepackages", lambda: [str(tmp_path)])
    monkeypatch.setattr(cuda_toolchain.site, "getusersitepackages", lambda: str(tmp_path / "none"))
    monkeypatch.setattr(cuda_toolchain.sys, "path", [])
    cu13, cu12 = str(tmp_path / "nvidia/cu13/include"), str(tmp_path / "nvidia/cuda_runtime/include")
    assert cuda_toolchain.cuda_include_dirs(13) == [cu13]
    assert cuda_toolchain.cuda_include_dirs(12) == [cu12]
    assert cuda_toolchain.cuda_include_dirs() == [cu13, cu12]
    fake.nvrtc_version = (12, 8)
    cuda_runtime.load_kernels(0, "f32", cuda.KERNEL_FILE, None, cuda.KERNELS)
    assert f"-I{cu12}" in fake.compiles[0]["options"] and f"-I{cu13}" not in fake.compiles[0]["options"]


def test_kernel_code_inlines_headers_with_line_markers() -> None:
    code = cuda.kernel_code()
    assert '#include "sru_' not in code
    source = _paths.kernel_source("sru_recurrence.cu").read_text().splitlines()
    include = next(i for i, ln in enumerate(source, start=1) if ln.strip() == '#include "sru_step.cuh"')
    assert '#line 1 "sru_step.cuh"' in code
    assert f'#line {include + 1} "sru_recurrence.cu"' in code

"""``python scripts/nvrtc_check.py check``: every CUDA kernel variant compiles with NVRTC from pip (no GPU)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from parrnn import _paths
from parrnn.ops import cuda_toolchain
from parrnn.ops.sru import sequential_cuda as cuda


def _load_script(name: str):
    """``scripts/<name>.py`` (a developer tool, not a package module), imported by file path."""
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


nvrtc_check = _load_script("nvrtc_check")

SAMPLE_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'sru_backward_f32' for 'sm_90'
ptxas info    : Function properties for sru_backward_f32
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 96 registers, used 0 barriers
ptxas info    : Compiling entry function 'sru_forward_f32' for 'sm_90'
ptxas info    : Function properties for sru_forward_f32
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 74 registers, used 0 barriers
"""


def test_parse_ptxas_log():
    reports = nvrtc_check.parse_ptxas_log(SAMPLE_LOG)
    bwd, fwd = reports["sru_backward_f32"], reports["sru_forward_f32"]
    assert (bwd.registers, bwd.stack, bwd.spill_stores, bwd.spill_loads) == (96, 8, 4, 12)
    assert (fwd.registers, fwd.spill_stores, fwd.spill_loads) == (74, 0, 0)


def test_check_skips_cleanly_without_nvrtc(monkeypatch, capsys):
    monkeypatch.setattr(nvrtc_check, "load_nvrtc", lambda: (None, "not installed (test)"))
    assert nvrtc_check.main(["check"]) == 0
    assert "SKIPPED" in capsys.readouterr().out
    assert nvrtc_check.main(["check", "--require"]) == 1


def test_every_variant_compiles(capsys):
    nvrtc, why = nvrtc_check.load_nvrtc()
    if nvrtc is None:
        pytest.skip(f"NVRTC not installed: {why}")
    # one architecture keeps the suite fast; `make test` runs the full check (sm_80 and sm_90)
    assert nvrtc_check.main(["check", "--arch", "sm_90"]) == 0
    out = capsys.readouterr().out
    for suffix in nvrtc_check.DTYPE_SUFFIXES:
        for kernel_file in nvrtc_check.KERNEL_FILES:
            for kernel in kernel_file.kernels:
                assert f"{kernel}_{suffix}" in out
    assert f"OK: {len(nvrtc_check.KERNEL_FILES) * len(nvrtc_check.DTYPE_SUFFIXES)} variants" in out


def test_compile_failure_is_reported(monkeypatch, capsys):
    nvrtc, why = nvrtc_check.load_nvrtc()
    if nvrtc is None:
        pytest.skip(f"NVRTC not installed: {why}")

    monkeypatch.setattr(cuda_toolchain, "kernel_code", lambda name: "this is not CUDA;")
    assert nvrtc_check.main(["check", "--arch", "sm_80"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_default_archs_cover_old_paths_and_the_newest() -> None:
    class FakeNvrtc:
        @staticmethod
        def nvrtcGetSupportedArchs():
            return 0, [75, 80, 86, 90, 100, 120]

    supported = nvrtc_check.supported_archs(FakeNvrtc())
    assert supported == ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    assert nvrtc_check.default_archs(supported) == ["sm_70", "sm_75", "sm_80", "sm_90", "sm_120"]
    assert nvrtc_check.default_archs([]) == list(nvrtc_check.BASE_ARCHS)


def test_unsupported_arch_is_skipped_not_failed(capsys) -> None:
    nvrtc, why = nvrtc_check.load_nvrtc()
    if nvrtc is None:
        pytest.skip(f"NVRTC not installed: {why}")
    supported = nvrtc_check.supported_archs(nvrtc)
    if not supported or "sm_70" in supported:
        pytest.skip("this NVRTC still targets sm_70")
    assert nvrtc_check.main(["check", "--arch", "sm_70"]) == 0
    assert "SKIPPED sm_70" in capsys.readouterr().out


def test_every_kernel_file_is_in_the_table() -> None:
    from parrnn._paths import kernel_dir

    assert {f.name for f in nvrtc_check.KERNEL_FILES} == {p.name for p in kernel_dir().glob("*.cu")}


def test_nvrtc_error_names_the_real_file_and_line(monkeypatch, tmp_path) -> None:
    """A compile error in an inlined header is reported at that header's own line."""
    nvrtc, why = nvrtc_check.load_nvrtc()
    if nvrtc is None:
        pytest.skip(f"NVRTC not installed: {why}")
    for f in _paths.kernel_dir().iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    lines = (tmp_path / "sru_step.cuh").read_text().splitlines()
    bad_line = len(lines) - 1
    lines.insert(bad_line - 1, "this_is_not_cpp;")
    (tmp_path / "sru_step.cuh").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(cuda_toolchain, "kernel_dir", lambda: tmp_path)
    monkeypatch.setattr(cuda_toolchain, "kernel_source", lambda name: tmp_path / name)
    res = nvrtc_check.compile_variant(nvrtc, cuda.kernel_code(), nvrtc_check.KERNEL_FILES[0], "f32", "sm_80")
    assert not res.ok
    assert re.search(rf'sru_step\.cuh\({bad_line}\): error', res.log), res.log[:2000]

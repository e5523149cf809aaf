"""parrnn.ops.build: one cache rule for every native build -- a ``-march=native`` library is keyed by the CPU."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from parrnn._paths import kernel_source
from parrnn.ops import build
from parrnn.ops.sru import scan_cpu


def test_native_builds_are_keyed_by_cpu(monkeypatch) -> None:
    sources = [kernel_source(scan_cpu.CPU_FILE)]
    monkeypatch.setattr(build, "cpu_tag", lambda: "cpuA")
    key_a = build.cache_key("sru_scan_cpu", sources, scan_cpu.CPU_FLAGS, "g++")
    generic = build.cache_key("sru_scan_cpu", sources, ("-pthread",), "g++")
    monkeypatch.setattr(build, "cpu_tag", lambda: "cpuB")
    key_b = build.cache_key("sru_scan_cpu", sources, scan_cpu.CPU_FLAGS, "g++")
    assert "-march=native" in scan_cpu.CPU_FLAGS
    assert key_a.startswith("sru_scan_cpu-cpuA-") and key_b.startswith("sru_scan_cpu-cpuB-")
    assert key_a != key_b
    assert generic == build.cache_key("sru_scan_cpu", sources, ("-pthread",), "g++")  # no CPU in a generic key
    assert "cpuB" not in generic


def test_scan_library_lands_under_the_cpu_key(monkeypatch, tmp_path) -> None:
    """Two 'machines' (CPU tags) sharing one cache directory build two scan libraries, never one."""
    try:
        build.find_compiler()
    except build.BuildError as exc:  # pragma: no cover
        pytest.skip(str(exc))
    real = scan_cpu.library()._name  # the library built for this machine (from the disk cache)
    commands: list[list[str]] = []

    def compile_by_copying(cmd, **kwargs):  # stands in for the compiler: a second build costs minutes here
        commands.append(cmd)
        shutil.copy(real, cmd[cmd.index("-o") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(build.subprocess, "run", compile_by_copying)
    monkeypatch.setenv("PARRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "_loaded", {})
    for tag in ("cpuA", "cpuB"):
        monkeypatch.setattr(build, "cpu_tag", lambda tag=tag: tag)
        monkeypatch.setattr(scan_cpu, "_lib", None)
        scan_cpu.library()
    names = sorted(p.name for p in tmp_path.glob("*.so"))
    assert len(names) == 2 and names[0].startswith("libsru_scan_cpu-cpuA-") and "cpuB" in names[1]
    assert len(commands) == 2 and all("-march=native" in cmd for cmd in commands)


def test_cpu_tag_is_stable() -> None:
    assert build.cpu_tag() == build.cpu_tag() and len(build.cpu_tag()) == 8


@pytest.mark.parametrize("header", ["host_shim.h", "sru_step.cuh"])
def test_digest_changes_with_every_header(tmp_path, monkeypatch, header):
    """A library that includes a changed header must be rebuilt, not loaded stale from the cache."""
    monkeypatch.setattr(build, "kernel_dir", lambda: tmp_path)
    source = tmp_path / "lib.cpp"
    source.write_text('#include "sru_step.cuh"\n')
    for name in ("host_shim.h", "sru_step.cuh"):
        (tmp_path / name).write_text("// v1\n")
    before = build._digest([source], ["-O3"], "g++")
    assert build._digest([source], ["-O3"], "g++") == before  # deterministic
    (tmp_path / header).write_text("// v2\n")
    assert build._digest([source], ["-O3"], "g++") != before

"""parrnn.ops.build: the one C++ build/load path -- prebuilt libraries used only when they match, a cache keyed by
the CPU for ``-march=native``, one message per build, C++ status codes as named Python errors."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess

import pytest
import torch

from parrnn._paths import kernel_source
from parrnn.ops import build
from parrnn.ops.linear_recurrence import cpu_library
from parrnn.ops.linear_recurrence import scan_cpu as linrec_scan
from parrnn.ops.linear_recurrence.reference import linear_recurrence as linrec_reference
from parrnn.ops.sru import scan_cpu, sequential_cpu


def _need_compiler() -> None:
    try:
        build.find_compiler()
    except build.BuildError as exc:  # pragma: no cover
        pytest.skip(str(exc))


@pytest.fixture
def no_compiler_runs(monkeypatch):
    """Any compiler run fails the test: a library must come from the prebuilt folder or the cache."""

    def refuse(cmd, **kwargs):
        raise AssertionError(f"compiled although a library was available: {cmd[:3]}")

    monkeypatch.setattr(build.subprocess, "run", refuse)


@pytest.fixture
def copy_compiler(monkeypatch):
    """Stands in for the compiler (a real build costs a minute here): copies the library already built for this
    machine to the output path. Returns the list of commands run."""
    real = {name: _cached_path(name) for name in build.CPU_LIBRARIES}
    commands: list[list[str]] = []

    def compile_by_copying(cmd, **kwargs):
        commands.append(cmd)
        name = next(n for n in real if any(str(c).endswith(build.CPU_LIBRARIES[n].sources[0]) for c in cmd))
        shutil.copy(real[name], cmd[cmd.index("-o") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(build.subprocess, "run", compile_by_copying)
    return commands


def _cached_path(name: str):
    _need_compiler()
    spec = build.CPU_LIBRARIES[name]
    for flags in spec.flag_sets:
        try:
            return build.compile_library(name, spec.source_paths(), flags)
        except build.BuildError:
            continue
    pytest.skip(f"{name} does not compile here")


@pytest.fixture
def prebuilt(tmp_path_factory):
    """A prebuilt folder as ``setup.py`` writes it (from the cache: no compile when the cache is warm)."""
    _need_compiler()
    folder = tmp_path_factory.mktemp("prebuilt") / "_lib"
    build.build_all_cpu_libraries(folder, quiet=True)
    return folder


def _fresh(name: str, configure, monkeypatch, prebuilt_dir, cache) -> build.LazyLibrary:
    monkeypatch.setattr(build, "PREBUILT_DIR", prebuilt_dir)
    monkeypatch.setenv("PARRNN_CACHE_DIR", str(cache))
    monkeypatch.setattr(build, "_announced", set())
    return build.LazyLibrary(name, configure)


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


def test_scan_library_lands_under_the_cpu_key(monkeypatch, tmp_path, copy_compiler) -> None:
    """Two 'machines' (CPU tags) sharing one cache directory build two scan libraries, never one."""
    for tag in ("cpuA", "cpuB"):
        monkeypatch.setattr(build, "cpu_tag", lambda tag=tag: tag)
        _fresh("sru_scan_cpu", scan_cpu._configure, monkeypatch, tmp_path / "none", tmp_path).load()
    names = sorted(p.name for p in tmp_path.glob("*.so"))
    assert len(names) == 2 and names[0].startswith("libsru_scan_cpu-cpuA-") and "cpuB" in names[1]
    assert len(copy_compiler) == 2 and all("-march=native" in cmd for cmd in copy_compiler)


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
    assert build.source_digest([source]) == build.source_digest([source])
    source_before = build.source_digest([source])
    (tmp_path / header).write_text("// v2\n")
    assert build._digest([source], ["-O3"], "g++") != before
    assert build.source_digest([source]) != source_before


def test_every_op_library_is_listed() -> None:
    """`build_all_cpu_libraries` (precompile, the wheel) builds every op's library: each op module's LazyLibrary
    is one of `CPU_LIBRARIES`, and every C++ CPU kernel source is in one."""
    from parrnn.ops.gru_rows import fused_cpu

    used = {lib._LIBRARY.spec.name for lib in (sequential_cpu, scan_cpu, cpu_library, fused_cpu)}
    assert used == set(build.CPU_LIBRARIES)
    sources = {s for spec in build.CPU_LIBRARIES.values() for s in spec.sources}
    assert sources == {p.name for p in build.kernel_dir().glob("*.cpp")}


def test_prebuilt_library_is_used_without_compiling(prebuilt, tmp_path, monkeypatch, no_compiler_runs,
                                                    capsys) -> None:
    manifest = json.loads((prebuilt / build.MANIFEST).read_text())
    assert set(manifest["libraries"]) == set(build.CPU_LIBRARIES)
    assert manifest["cpu_tag"] == build.cpu_tag()
    for name, configure in (("sru_cpu", sequential_cpu._configure), ("sru_scan_cpu", scan_cpu._configure),
                            ("linear_recurrence_cpu", cpu_library._configure)):
        lib = _fresh(name, configure, monkeypatch, prebuilt, tmp_path / "empty-cache")
        lib.load()
        assert lib.origin == "prebuilt" and lib.flags_used == tuple(manifest["libraries"][name]["flags"])
    assert not (tmp_path / "empty-cache").exists()
    assert "parrnn:" not in capsys.readouterr().err  # nothing compiled, nothing said


def _mutations():
    return {
        "cpu": (lambda m: m.update(cpu_tag="00000000"), "another CPU"),
        "torch": (lambda m: m.update(torch={"version": "1.0.0", "cxx11_abi": True}), "torch 1.0.0"),
        "sources": (lambda m: m["libraries"]["sru_scan_cpu"].update(sources="0" * 16), "kernel sources differ"),
        "machine": (lambda m: m.update(machine="sparc"), "sparc"),
        "missing": (lambda m: m["libraries"].pop("sru_scan_cpu"), "no prebuilt sru_scan_cpu"),
    }


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_mismatching_prebuilt_library_is_rebuilt_with_one_message(mutation, prebuilt, tmp_path, monkeypatch,
                                                                  copy_compiler, capsys) -> None:
    """A prebuilt library for another CPU, torch, source or machine is never loaded: it is rebuilt into the
    cache, and the build says so on stderr once (what, why, how long)."""
    folder = tmp_path / "_lib"
    shutil.copytree(prebuilt, folder)
    manifest = json.loads((folder / build.MANIFEST).read_text())
    mutate, reason = _mutations()[mutation]
    mutate(manifest)
    (folder / build.MANIFEST).write_text(json.dumps(manifest))
    spec = build.CPU_LIBRARIES["sru_scan_cpu"]
    path, why = build.prebuilt_library(spec, folder)
    assert path is None and reason in why
    lib = _fresh("sru_scan_cpu", scan_cpu._configure, monkeypatch, folder, tmp_path / "cache")
    lib.load()
    assert lib.origin.startswith(str(tmp_path / "cache")) and len(copy_compiler) == 1
    _fresh("sru_scan_cpu", scan_cpu._configure, monkeypatch, folder, tmp_path / "cache2")
    monkeypatch.setattr(build, "_announced", {"sru_scan_cpu"})  # as within one process: said once already
    build.LazyLibrary("sru_scan_cpu", scan_cpu._configure).load()
    err = capsys.readouterr().err
    assert err.count("parrnn: compiling the C++ CPU library 'sru_scan_cpu'") == 1, err
    assert reason in err and "s on 2 cores" in err


def test_libraries_link_no_torch(prebuilt) -> None:
    """The prebuilt libraries are plain C++: no torch/c10 symbol, so no torch ABI can crash them."""
    if shutil.which("nm") is None:
        pytest.skip("needs nm")
    for path in prebuilt.glob("*.so"):
        symbols = subprocess.run(["nm", "-D", "--undefined-only", str(path)], capture_output=True, text=True,
                                 check=True).stdout
        assert not [s for s in symbols.split() if "c10" in s or "torch" in s or s.startswith("_ZN2at")], path


@pytest.mark.parametrize(("code", "error"), [(1, build.KernelMemoryError), (2, build.KernelThreadError),
                                             (3, build.KernelError), (11, build.KernelArgumentError),
                                             (12, build.KernelArgumentError), (13, build.KernelArgumentError),
                                             (99, build.KernelError)])
def test_status_codes_map_to_named_errors(code, error) -> None:
    build.check_status(0, "k")
    with pytest.raises(error, match=rf"parrnn sru forward: .*\(status {code}\)") as info:
        build.check_status(code, "sru forward")
    assert type(info.value) is error
    assert isinstance(info.value, MemoryError) == (code == 1)  # only an allocation failure is a MemoryError


def test_cpp_argument_errors_come_back_as_named_errors() -> None:
    """The C++ status codes are the ones `STATUS_CODES` names: K=5 is a bad shape (11), a skip mode 7 unknown."""
    _need_compiler()
    fn = sequential_cpu.load_library().parrnn_sru_cpu_forward_f32
    args = [None] * 10
    assert fn(*args, 1, 1, 2, 5, 0, 0, 0, 1.0, 1) == 11
    assert fn(*args, 1, 1, 2, 3, 0, 0, 7, 1.0, 1) == 13
    assert fn(*args, 1, 1, 2, 3, 0, 0, 1, 1.0, 1) == 12  # skip x without x
    with pytest.raises(build.KernelArgumentError, match="out of range"):
        build.check_status(fn(*args, 1, 1, 2, 5, 0, 0, 0, 1.0, 1), "sru sequential (cpu) forward")


@pytest.mark.parametrize("limit", [0, 1])
def test_failed_thread_start_neither_crashes_nor_loses_work(limit) -> None:
    """When starting a worker thread throws, the chunked scan joins the started ones and still computes every
    chunk (the caller's thread runs the rest): right values, no std::terminate."""
    _need_compiler()
    lib = cpu_library.load()
    torch.manual_seed(0)
    a, b = torch.rand(600, 2, 3) * 0.9, torch.randn(600, 2, 3)
    want, want_n = linrec_reference(a, b)
    bounds = torch.tensor([0, 100, 250, 400, 600])
    lib.linrec_cpu_set_thread_start_limit(limit)
    try:
        h, h_n = linrec_scan.forward(a, b, None, None, False, threads=4, bounds=bounds)
    finally:
        lib.linrec_cpu_set_thread_start_limit(-1)
    torch.testing.assert_close(h, want)
    torch.testing.assert_close(h_n, want_n)


def test_build_all_cpu_libraries_needs_nothing_when_prebuilt(prebuilt, monkeypatch, tmp_path,
                                                            no_compiler_runs) -> None:
    """``precompile()``'s path: with matching prebuilt libraries nothing is compiled and their paths come back."""
    monkeypatch.setattr(build, "PREBUILT_DIR", prebuilt)
    monkeypatch.setenv("PARRNN_CACHE_DIR", str(tmp_path))
    paths = build.build_all_cpu_libraries(quiet=True)
    assert set(paths) == set(build.CPU_LIBRARIES) and all(p.parent == prebuilt for p in paths.values())
    ctypes.CDLL(str(paths["gru_rows_cpu"]))


def test_cache_key_ignores_the_include_folder() -> None:
    """The headers are hashed by content: the same sources elsewhere (an installed copy, a wheel build) are one
    cached library, not a rebuild per folder."""
    sources = [kernel_source(scan_cpu.CPU_FILE)]
    assert (build.cache_key("x", sources, ["-O3", "-I/a/kernels"], "g++")
            == build.cache_key("x", sources, ["-O3", "-I/b/_kernels"], "g++"))
    assert build.cache_key("x", sources, ["-O3"], "g++") != build.cache_key("x", sources, ["-O2"], "g++")

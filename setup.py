"""Build hook: ship the kernel sources, and the CPU libraries compiled for this machine, inside the package.

* ``parrnn/_kernels/``: a copy of ``kernels/*.{cu,cuh,cpp,h}`` (the CUDA kernels are compiled at run time by NVRTC
  through CuPy; see ``parrnn/_paths.py``).
* ``parrnn/_lib/``: every op's C++ CPU library (``parrnn.ops.build.CPU_LIBRARIES``) compiled where a C++ compiler
  exists, with a ``manifest.json`` saying what each was built from and for (sources, flags, CPU, torch), so the
  first call after ``pip install .`` compiles nothing. Where no compiler exists the build is skipped with a
  message and the libraries are compiled into the cache at first use instead. ``PARRNN_PREBUILD=0`` skips it too.
  The libraries are built with ``-march=native`` where the compiler takes it: a wheel built here runs its
  prebuilt libraries on this CPU model only; elsewhere they are rejected and rebuilt at first use.

A wheel with libraries is tagged ``py3-none-<platform>`` (the libraries use no Python API). All other metadata lives
in ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import types
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
KERNEL_SUFFIXES = (".cu", ".cuh", ".cpp", ".h")


def _build_module() -> types.ModuleType:
    """``parrnn/ops/build.py`` imported without running ``parrnn/__init__`` (which imports torch: an isolated
    build environment has no torch)."""
    names = ("parrnn", "parrnn.ops", "parrnn._cpu", "parrnn._paths", "parrnn.ops.build")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    for name, folder in (("parrnn", ROOT / "parrnn"), ("parrnn.ops", ROOT / "parrnn" / "ops")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]
        sys.modules[name] = stub
    try:
        return importlib.import_module("parrnn.ops.build")
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def _prebuild_wanted() -> bool:
    return os.environ.get("PARRNN_PREBUILD", "1") not in ("0", "false", "no")


def _has_compiler() -> bool:
    return any(name and shutil.which(name) for name in (os.environ.get("CXX"), "g++", "c++", "clang++"))


class BuildPyWithKernels(build_py):
    """``build_py`` that also copies ``kernels/*.{cu,cuh,cpp,h}`` to ``parrnn/_kernels/`` and compiles every op's
    CPU library into ``parrnn/_lib/`` (not for an editable install: that reads ``kernels/`` and uses the cache)."""

    def run(self) -> None:
        super().run()
        source = ROOT / "kernels"
        target = Path(self.build_lib) / "parrnn" / "_kernels"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.suffix in KERNEL_SUFFIXES:
                shutil.copy2(path, target / path.name)
        if getattr(self, "editable_mode", False) or not _prebuild_wanted():
            return
        if not _has_compiler():
            print("parrnn: no C++ compiler found (set CXX, or install g++); the CPU libraries are not prebuilt and "
                  "will be compiled into the cache at first use", file=sys.stderr)
            return
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401  (recorded in the manifest when present: --no-build-isolation)
        build = _build_module()
        try:
            build.build_all_cpu_libraries(Path(self.build_lib) / "parrnn" / "_lib")
        except build.BuildError as exc:
            print(f"parrnn: prebuilding the CPU libraries failed; they will be compiled at first use:\n{exc}",
                  file=sys.stderr)
            shutil.rmtree(Path(self.build_lib) / "parrnn" / "_lib", ignore_errors=True)


class PlatformWheel(bdist_wheel):
    """A wheel with prebuilt libraries is platform-specific but Python-version independent (ctypes, no C API)."""

    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        return ("py3", "none", plat) if not self.root_is_pure else (python, abi, plat)


class MaybeBinaryDistribution(Distribution):
    """Not pure Python when the CPU libraries will be prebuilt (a compiler exists and ``PARRNN_PREBUILD`` allows)."""

    def has_ext_modules(self) -> bool:
        return _prebuild_wanted() and _has_compiler()


setup(distclass=MaybeBinaryDistribution, cmdclass={"build_py": BuildPyWithKernels, "bdist_wheel": PlatformWheel})

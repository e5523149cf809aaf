"""Build hook: ship the kernel sources inside the package.

The CUDA and C++ kernels are compiled at run time (NVRTC through CuPy, or the host C++ compiler) from the
sources in ``kernels/``. A source checkout and an editable install read them there; a wheel carries a copy as
``parrnn/_kernels/`` (see ``parrnn/_paths.py``). All other metadata lives in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_SUFFIXES = (".cu", ".cuh", ".cpp", ".h")


class BuildPyWithKernels(build_py):
    """``build_py`` that also copies ``kernels/*.{cu,cuh,cpp,h}`` to ``parrnn/_kernels/`` in the build."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "kernels"
        target = Path(self.build_lib) / "parrnn" / "_kernels"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.suffix in KERNEL_SUFFIXES:
                shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithKernels})

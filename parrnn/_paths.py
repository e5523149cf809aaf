"""Where the kernel sources live: ``kernels/`` in a source checkout, ``parrnn/_kernels`` in an installed wheel."""

from __future__ import annotations

from pathlib import Path


def kernel_dir() -> Path:
    """The folder holding ``sru_step.cuh`` and the ``.cu``/``.cpp`` kernel sources."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_kernels", here.parent / "kernels"):
        if (candidate / "sru_step.cuh").is_file():
            return candidate
    raise FileNotFoundError(f"parrnn kernel sources not found next to {here} (looked in _kernels/ and ../kernels/)")


def kernel_source(name: str) -> Path:
    """Path of one kernel source file, e.g. ``kernel_source("sru_recurrence.cu")``."""
    path = kernel_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {name!r} not found in {kernel_dir()}")
    return path

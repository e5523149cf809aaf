"""Where the kernel sources live: ``kernels/`` in a source checkout, ``parrnn/_kernels`` in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def kernel_dir(package: Path = _PACKAGE) -> Path:
    """The folder holding ``sru_step.cuh`` and the ``.cu``/``.cpp`` kernel sources.

    A source checkout's ``kernels/`` (next to the package folder ``package``) comes first, so a stale
    ``parrnn/_kernels`` copy left by a wheel build is never compiled or tested instead of the real sources; an
    installed wheel has only ``parrnn/_kernels``.
    """
    for candidate in (package.parent / "kernels", package / "_kernels"):
        if (candidate / "sru_step.cuh").is_file():
            return candidate
    raise FileNotFoundError(f"parrnn kernel sources not found next to {package} (looked in ../kernels/ and "
                            "_kernels/)")


def kernel_source(name: str) -> Path:
    """Path of one kernel source file, e.g. ``kernel_source("sru_recurrence.cu")``."""
    path = kernel_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {name!r} not found in {kernel_dir()}")
    return path

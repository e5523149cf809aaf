"""parrnn._paths: a source checkout compiles its own kernels/, never a stale parrnn/_kernels copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from parrnn import _paths


def _kernels(folder: Path, marker: str) -> None:
    folder.mkdir(parents=True)
    (folder / "sru_step.cuh").write_text(f"// {marker}\n")


def test_checkout_kernels_win_over_a_stale_copy(tmp_path) -> None:
    package = tmp_path / "parrnn"
    _kernels(tmp_path / "kernels", "checkout")
    _kernels(package / "_kernels", "stale copy")
    assert _paths.kernel_dir(package) == tmp_path / "kernels"


def test_installed_wheel_uses_its_copy(tmp_path) -> None:
    package = tmp_path / "parrnn"
    _kernels(package / "_kernels", "wheel")
    assert _paths.kernel_dir(package) == package / "_kernels"


def test_missing_sources_are_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="kernel sources not found"):
        _paths.kernel_dir(tmp_path / "parrnn")


def test_this_checkout() -> None:
    assert _paths.kernel_dir() == Path(_paths.__file__).resolve().parent.parent / "kernels"

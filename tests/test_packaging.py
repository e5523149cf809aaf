"""A built wheel carries the kernel sources (``parrnn/_kernels``), and an installed copy finds and loads its kernels
(the wheel is `tests/test_install.py`'s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from parrnn.ops.build import BuildError, find_compiler

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh", ".cpp", ".h"))

_PROBE = """
import json, torch, parrnn, parrnn._paths as paths
from parrnn.ops.gru_rows import fused_cpu as gru_rows
from parrnn.ops.sru import sequential_cpu as cpu
print(json.dumps({"package": parrnn.__file__, "kernels": str(paths.kernel_dir()),
                  "cpu": cpu.availability()[0], "gru_steps": gru_rows.step_kernels(torch.float32) is not None}))
"""


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The wheel `test_install` builds (once per test process, from a copy of the checkout)."""
    from test_install import build_dists

    return build_dists()[0]


def test_wheel_contains_every_kernel_source(wheel) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped = sorted(n.split("/")[-1] for n in names if n.startswith("parrnn/_kernels/"))
        assert shipped == KERNELS
        for name in KERNELS:
            assert zf.read(f"parrnn/_kernels/{name}") == (ROOT / "kernels" / name).read_bytes()


def test_installed_wheel_finds_and_builds_its_kernels(wheel, tmp_path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["package"].startswith(str(target)), info
    assert info["kernels"] == str(target / "parrnn" / "_kernels")
    try:
        find_compiler()
    except BuildError:
        return  # no C++ compiler here: nothing to build
    assert info["cpu"] and info["gru_steps"], info

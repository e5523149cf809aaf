"""Determinism across processes: the same seeded forward and backward in two fresh processes gives bitwise equal
outputs and gradients for every layer (one pair of subprocesses for all layers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .registry import names

WORKER = Path(__file__).resolve().parent / "determinism_worker.py"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("determinism")
    files = [out / "a.pt", out / "b.pt"]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(f)], stderr=subprocess.PIPE, text=True)
             for f in files]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    a, b = (torch.load(f, weights_only=False) for f in files)
    return a, b


@pytest.mark.parametrize("name", names())
def test_two_processes_give_bitwise_equal_outputs_and_gradients(name: str, two_runs: tuple[dict, dict]) -> None:
    a, b = two_runs[0][name], two_runs[1][name]
    assert not isinstance(a, str), a
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x, y), f"tensor {k} differs between processes"

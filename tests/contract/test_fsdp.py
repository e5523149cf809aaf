"""FSDP2 (``fully_shard`` on each inner layer) with 2 CPU processes (gloo) trains equal to one process on the
same global batch (losses of 2 SGD steps within 1e-6). One torchrun job for all layers (< 90 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .registry import BY_NAME

WORKER = Path(__file__).resolve().parent / "fsdp_worker.py"
sys.path.insert(0, str(WORKER.parent))
from fsdp_worker import LAYERS  # noqa: E402

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("torch.distributed.fsdp")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is unavailable")
    out = tmp_path_factory.mktemp("fsdp") / "results.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", [n for n in LAYERS if BY_NAME[n].available])
def test_fully_shard_per_layer_on_2_processes_equals_one_process(name: str, fsdp_results: dict) -> None:
    result = fsdp_results[name]
    assert "error" not in result, result.get("error")
    assert result["sharded"] == pytest.approx(result["single"], rel=1e-6, abs=1e-6)

"""DDP and FSDP2 (``fully_shard`` per block and the root, also with bf16 mixed precision) under 2 CPU processes
(gloo) give the loss of one process on the same global batch (tests/hf/_distributed.py; one job)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import parrnn.hf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CELLS = list(parrnn.hf.available_cells())


@pytest.fixture(scope="module")
def losses() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "hf" / "_distributed.py"), *CELLS],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_give_the_loss_of_one(losses: dict, cell: str, mode: str) -> None:
    single = torch.tensor(losses[cell]["single"])
    assert single[-1] < single[0]  # it trains
    torch.testing.assert_close(torch.tensor(losses[cell][mode]), single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_fsdp_with_bf16_mixed_precision_stays_close(losses: dict, cell: str) -> None:
    torch.testing.assert_close(torch.tensor(losses[cell]["fsdp_bf16"]), torch.tensor(losses[cell]["single"]),
                               rtol=2e-2, atol=0)

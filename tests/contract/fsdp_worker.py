"""FSDP2 over every stacked layer, 2 CPU processes (gloo): run with

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/contract/fsdp_worker.py OUT.json

For each layer: ``torch.distributed.fsdp.fully_shard`` on each inner layer and on the whole model, each rank
trains on its half of one global batch for 2 SGD steps; rank 0 also trains an unsharded copy on the whole batch
in one process. OUT.json gets, per layer, both loss curves (or the error).
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry  # noqa: E402  (by path: this file runs as a script)

#: the stacked layers (each inner layer gets its own FSDP unit)
LAYERS = ["SRU-v2", "SRU-v1", "SRUpp", "QRNN-w1", "QRNN-w2", "MinGRU", "MinLSTM", "HGRN", "RGLRU"]
STEPS, BATCH, LR = 2, 4, 0.1


def _losses(layer, model, x: torch.Tensor, world: int) -> list[float]:
    """Mean squared output over this process's rows, averaged over processes, per step (FSDP averages the
    gradients over processes, so the result equals one process on the global batch)."""
    opt = torch.optim.SGD(model.parameters(), LR)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        out = registry.call(layer, model, x)[0]
        loss = out.square().mean()
        loss.backward()
        opt.step()
        value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(value)
            value /= world
        losses.append(value.item())
    return losses


def main(out_path: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    results: dict[str, dict] = {}
    for name in LAYERS:
        layer = registry.BY_NAME[name]
        if not layer.available:
            continue
        model = layer.make(seed=0)
        single = copy.deepcopy(model)
        torch.manual_seed(1)
        x = torch.randn(registry.L, BATCH, registry.I)
        rows = x.chunk(world, dim=1)[rank]
        try:
            for sub in registry.leaf_layers(model):
                fully_shard(sub)
            fully_shard(model)
            sharded = _losses(layer, model, rows, world)
            results[name] = {"sharded": sharded}
        except Exception as exc:  # noqa: BLE001 - recorded per layer; the test reports it
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        if rank == 0 and "sharded" in results[name]:
            results[name]["single"] = _losses(layer, single, x, 1)
        dist.barrier()
    if rank == 0:
        Path(out_path).write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

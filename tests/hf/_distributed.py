"""Run by tests/hf/test_distributed.py: 2 CPU processes (gloo, torch.multiprocessing.spawn) train a
ParrnnForCausalLM for 3 SGD steps under DDP, FSDP2 (``fully_shard`` per block and the root) and FSDP2 with bf16
mixed precision, each rank on its half of one global batch; rank 0 also trains the same model alone on the whole
batch. Prints one JSON line: per cell and mode, the global losses per step.

    python tests/hf/_distributed.py sru mingru
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

STEPS = 3
MODES = ("single", "ddp", "fsdp", "fsdp_bf16")


def build(cell: str):
    import parrnn.hf

    torch.manual_seed(0)
    config = parrnn.hf.ParrnnConfig(cell=cell, vocab_size=23, hidden_size=16, num_layers=2, intermediate_size=32,
                                    cell_options={"proj_size": 8} if cell == "srupp" else {})
    return parrnn.hf.ParrnnForCausalLM(config).train()


def train(cell: str, mode: str, rank: int, world: int) -> list[float]:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.nn.parallel import DistributedDataParallel

    model = build(cell)
    ids = torch.randint(0, 23, (8, 16), generator=torch.Generator().manual_seed(1))
    if mode == "single":
        wrapped, batch = model, ids
    else:
        batch = ids.chunk(world)[rank]
        if mode == "ddp":
            wrapped = DistributedDataParallel(model)
        else:
            policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                      if mode == "fsdp_bf16" else MixedPrecisionPolicy())
            for block in model.model.layers:
                fully_shard(block, mp_policy=policy)
            wrapped = fully_shard(model, mp_policy=policy)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = wrapped(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        value = loss.detach().float().clone()
        if mode != "single":
            dist.all_reduce(value)
            value /= world
        losses.append(float(value))
    return losses


def worker(rank: int, world: int, port: int, cells: list[str], path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for cell in cells:
            results[cell] = {}
            for mode in MODES:
                if mode != "single" or rank == 0:
                    results[cell][mode] = train(cell, mode, rank, world)
                dist.barrier()  # every rank, every mode: the collectives of the next mode line up
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(path, "w") as f:
            json.dump(results, f)


def main(cells: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.json")
        mp.spawn(worker, args=(2, port, cells, path), nprocs=2, join=True)
        with open(path) as f:
            print(json.dumps(json.load(f)))


if __name__ == "__main__":
    main(sys.argv[1:] or ["sru", "srupp", "mingru"])

"""Training-step time of the accuracy-suite models on one task, measured side by side.

One step is what :func:`parrnn.experiments.training.train` times as training: forward, loss, backward, gradient
clipping and
the optimizer step, on real batches of the task. For every thread count, each repeat runs one step of every
model on the same batch back to back, so the ratios compare timings taken under the same machine load; the
table reports medians (the first ``--warmup`` steps are dropped).

    .venv/bin/python benchmarks/train_step.py --task imdb --max-len 400 --models gru,sliced-gru,sru \\
        --hidden 64 --embed-dim 64 --layers 1 --batch-size 64 --threads 1,2 --steps 30 \\
        --out benchmarks/results/2026-11-25-cpu-imdb-train-step

Model and task options are those of ``parrnn-train`` (see :class:`parrnn.experiments.training.TrainConfig`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parrnn.experiments.allocator import retain_freed_memory  # noqa: E402
from parrnn.experiments.bench.report import cpu_model  # noqa: E402
from parrnn.experiments.tasks.models import build_model  # noqa: E402
from parrnn.experiments.training import BatchOrder, TrainConfig, make_optimizer  # noqa: E402


def measure(config: TrainConfig, models: list[str], threads: list[int], steps: int, warmup: int) -> dict:
    """Median step time (ms) per thread count and model: ``{"threads": {t: {model: ms}}, "samples": ...}``."""
    task = config.make_task()
    order = BatchOrder(len(task.train), config.batch_size, config.seed)
    batches = [task.train.batch(order.local_batch(step, 0, 1)) for step in range(steps)]
    medians: dict[int, dict[str, float]] = {}
    samples: dict[int, dict[str, list[float]]] = {}
    for count in threads:
        torch.set_num_threads(count)
        runs = []
        for name in models:
            torch.manual_seed(config.seed)
            model = build_model(task, replace(config, model=name).model_spec()).train()
            runs.append((name, model, make_optimizer(model, config)[0]))
        times: dict[str, list[float]] = {name: [] for name in models}
        for batch in batches:
            for name, model, optimizer in runs:
                start = time.perf_counter()
                loss = task.loss(model(batch.inputs, batch.lengths), batch.targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                optimizer.step()
                times[name].append((time.perf_counter() - start) * 1e3)
        samples[count] = {name: t[warmup:] for name, t in times.items()}
        medians[count] = {name: statistics.median(t) for name, t in samples[count].items()}
        print(f"threads={count}: " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in medians[count].items()), flush=True)
    return {"threads": medians, "samples": samples}


def markdown(result: dict, models: list[str], baseline: str, header: str) -> str:
    """Table: median ms per model and thread count, and ``baseline / model`` at the same thread count."""
    lines = [header, "", "| threads | " + " | ".join(f"{m} (ms)" for m in models) + " | "
             + " | ".join(f"{baseline} / {m}" for m in models if m != baseline) + " |",
             "|---:|" + "---:|" * (2 * len(models) - 1)]
    for count, row in result["threads"].items():
        ratios = [f"{row[baseline] / row[m]:.2f}x" for m in models if m != baseline]
        lines.append(f"| {count} | " + " | ".join(f"{row[m]:.1f}" for m in models) + " | " + " | ".join(ratios) + " |")
    best = {m: min(result["threads"], key=lambda c, m=m: result["threads"][c][m]) for m in models}
    fastest = {m: result["threads"][best[m]][m] for m in models}
    lines += ["", "Each model at its fastest thread count: " + ", ".join(
        f"{m} {fastest[m]:.1f} ms ({best[m]} thr)" for m in models) + "; " + ", ".join(
        f"{baseline} / {m} = {fastest[baseline] / fastest[m]:.2f}x" for m in models if m != baseline) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="imdb")
    parser.add_argument("--max-len", type=int, default=400)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--models", default="gru,sliced-gru,sru", help="comma-separated; the first is the baseline")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model and thread count")
    parser.add_argument("--warmup", type=int, default=3, help="first steps not counted")
    parser.add_argument("--no-retain-memory", action="store_true", help="do not tune glibc malloc")
    parser.add_argument("--out", default=None, help="folder for results.md / results.json")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    models = args.models.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    config = TrainConfig(task=args.task, max_len=args.max_len, seq_len=args.seq_len, hidden=args.hidden,
                         embed_dim=args.embed_dim, layers=args.layers, batch_size=args.batch_size, lr=2e-3)
    retained = False if args.no_retain_memory else retain_freed_memory()
    result = measure(config, models, threads, args.steps, args.warmup)
    command = "python benchmarks/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "retain_memory": retained, "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    header = (f"# Training step ({args.task}, batch {args.batch_size}, hidden {args.hidden}, {args.layers} layer(s)): "
              f"median of {args.steps - args.warmup} steps\n\n{meta['cpu']}, torch {meta['torch']}, {meta['date']}. "
              f"Command:\n\n```\n{command}\n```")
    table = markdown(result, models, models[0], header)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table)
        (out / "results.json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

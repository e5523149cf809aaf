"""Forward speed of :class:`parrnn.SlicedRNN` against :class:`torch.nn.GRU` (inference, ``torch.no_grad``).

Every repeat times the baseline and each sliced model back to back, so a ratio compares timings taken in the
same run under the same machine load; the table reports medians over the repeats. Shared machines are noisy:
read the ratios, not the absolute milliseconds.

    .venv/bin/python benchmarks/sliced_speed.py --threads 2 --seq-lens 512,2048,8192,32768 --batch 1,8

The functions (:func:`build_models`, :func:`measure`, :func:`markdown_table`) are importable by the benchmark
suite and by tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parrnn import SlicedRNN  # noqa: E402
from parrnn.experiments.bench.report import cpu_model  # noqa: E402


@dataclass
class Result:
    """Median forward time of the baseline and of each sliced model for one (T, N)."""

    seq_len: int
    batch: int
    baseline_ms: float
    sliced_ms: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def speedup(self, name: str) -> float:
        return self.baseline_ms / self.sliced_ms[name]


def build_models(
    size: int, cells: Sequence[str], slices: int, levels: int, seed: int = 0
) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The baseline ``nn.GRU(size, size)`` and one ``SlicedRNN(size, size, cell=c)`` per cell, in eval mode."""
    torch.manual_seed(seed)
    baseline = nn.GRU(size, size).eval()
    sliced = {f"sliced-{c}": SlicedRNN(size, size, slices=slices, levels=levels, cell=c).eval() for c in cells}
    return baseline, sliced


def _time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(
    baseline: nn.Module,
    sliced: dict[str, nn.Module],
    seq_len: int,
    batch: int,
    *,
    repeats: int = 5,
    size: int = 128,
    seed: int = 0,
) -> Result:
    """Time ``model(x)`` under ``torch.no_grad`` for ``x`` ``(seq_len, batch, size)``: one warm-up call each,
    then ``repeats`` rounds, each timing the baseline and every sliced model once (interleaved)."""
    x = torch.randn(seq_len, batch, size, generator=torch.Generator().manual_seed(seed))
    models: dict[str, nn.Module] = {"nn.GRU": baseline, **sliced}
    samples: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(x)
        for _ in range(repeats):
            for name, model in models.items():
                samples[name].append(_time_once(lambda model=model: model(x)))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return Result(seq_len, batch, medians.pop("nn.GRU"), medians, samples)


def markdown_table(results: Sequence[Result]) -> str:
    """One row per (T, N): the baseline's median ms, each sliced model's median ms and speedup."""
    names = list(results[0].sliced_ms) if results else []
    header = ["T", "N", "nn.GRU ms"] + [f"{n} ms" for n in names] + [f"{n} speedup" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in results:
        cells = [str(r.seq_len), str(r.batch), f"{r.baseline_ms:.1f}"]
        cells += [f"{r.sliced_ms[n]:.1f}" for n in names]
        cells += [f"{r.speedup(n):.1f}x" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seq-lens", type=_int_list, default=[512, 2048, 8192, 32768], help="T values")
    parser.add_argument("--batch", type=_int_list, default=[1, 8], help="N values")
    parser.add_argument("--cells", default="gru,sru", help="SlicedRNN cells, comma-separated (gru,lstm,sru)")
    parser.add_argument("--size", type=int, default=128, help="input and hidden size D = H (default 128)")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per (T, N); medians reported")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    baseline, sliced = build_models(args.size, cells, args.slices, args.levels)
    results = []
    for seq_len in args.seq_lens:
        for batch in args.batch:
            result = measure(baseline, sliced, seq_len, batch, repeats=args.repeats, size=args.size)
            results.append(result)
            print(f"# T={seq_len} N={batch}: " + ", ".join(
                f"{name} {ms:.1f} ms" for name, ms in [("nn.GRU", result.baseline_ms), *result.sliced_ms.items()]),
                file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Forward (no_grad), float32, D=H={args.size}, slices={args.slices}, levels={args.levels}, "
          f"{args.threads} threads, {cpu_model()}, torch {torch.__version__}; median of {args.repeats} "
          f"interleaved repeats; 1-min load average {load_before:.2f} before, {load_after:.2f} after "
          f"({os.cpu_count()} CPUs: a load above the thread count means the timings are shared).\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

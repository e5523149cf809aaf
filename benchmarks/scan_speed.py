"""Time the CPU scan (``parrnn.ops.sru.scan``) against the sequential ``cpu`` backend (docs/scan.md).

Usage::

    python benchmarks/scan_speed.py --reps 7 [--columns 64 128 ...] [--lengths 4096 ...] [--json out.json]

Forward and backward separately, float32, for each ``torch.set_num_threads(P)``; runs of the four variants are
interleaved and each time is the median (and min) of ``--reps`` runs; prints a Markdown table. The
``backend="auto"`` row for the CPU scan (``parrnn.ops.sru.dispatch.AUTO_RULES``) names this measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from parrnn.ops.sru import scan, scan_cpu
from parrnn.ops.sru import sequential_cpu as seq
from parrnn.ops.sru.contract import RecurrenceArgs


def _bench_calls(seq: Any, u: Tensor, x: Tensor, bias: Tensor, c0: Tensor, c_all: Tensor, gh: Tensor,
                 gcn: Tensor) -> dict[str, Any]:
    args = RecurrenceArgs(u, x, None, bias, c0, None, None)
    return {
        "seq fwd": lambda: seq.forward(args),
        "scan fwd": lambda: scan.forward(args),
        "seq bwd": lambda: seq.backward(args, gh, gcn, c_all),
        "scan bwd": lambda: scan.backward(args, gh, gcn, c_all),
    }


def bench_cpu(columns: Sequence[int] = (64, 128, 256, 512), lengths: Sequence[int] = (4096, 16384, 65536),
              batch: int = 1, reps: int = 7, threads: Sequence[int] = (1, 2)) -> list[dict[str, Any]]:
    """Time the CPU scan against the sequential ``cpu`` backend, forward and backward separately, float32,
    ``N = batch``, for each ``torch.set_num_threads(P)`` in ``threads``. Runs of the four variants are
    interleaved and each time is the median (and min) of ``reps`` runs; prints a Markdown table."""
    saved = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    print("| N*C | L | P | seq fwd ms | scan fwd ms | fwd speed-up | seq bwd ms | scan bwd ms | bwd speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for cols in columns:
            for length in lengths:
                gen = torch.Generator().manual_seed(0)
                u = torch.randn(length, batch, 3, cols, generator=gen)
                x = torch.randn(length, batch, cols, generator=gen)
                bias = torch.randn(2, cols, generator=gen)
                c0 = torch.randn(batch, cols, generator=gen)
                h, c_n, c_all = scan_cpu.forward(RecurrenceArgs(u, x, None, bias, c0, None, None), threads=1)
                gh, gcn = torch.randn_like(h), torch.randn_like(c_n)
                calls = _bench_calls(seq, u, x, bias, c0, c_all, gh, gcn)
                times: dict[tuple[int, str], list[float]] = {}
                for fn in calls.values():  # warm-up (compile, page in)
                    fn()
                for _ in range(reps):
                    for p in threads:
                        torch.set_num_threads(p)
                        for name, fn in calls.items():
                            t0 = time.perf_counter()
                            fn()
                            times.setdefault((p, name), []).append(time.perf_counter() - t0)
                for p in threads:
                    med = {name: statistics.median(times[(p, name)]) * 1e3 for name in calls}
                    mins = {name: min(times[(p, name)]) * 1e3 for name in calls}
                    row = {"columns": batch * cols, "length": length, "threads": p, "median_ms": med, "min_ms": mins}
                    rows.append(row)
                    print(f"| {batch * cols} | {length} | {p} | {med['seq fwd']:.2f} | {med['scan fwd']:.2f} | "
                          f"{med['seq fwd'] / med['scan fwd']:.2f}x | {med['seq bwd']:.2f} | {med['scan bwd']:.2f} | "
                          f"{med['seq bwd'] / med['scan bwd']:.2f}x |", flush=True)
    finally:
        torch.set_num_threads(saved)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/scan_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=str, default=None, help="also write the rows to this file")
    ns = parser.parse_args(argv)
    result = bench_cpu(ns.columns, ns.lengths, ns.batch, ns.reps, ns.threads)
    if ns.json:
        Path(ns.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

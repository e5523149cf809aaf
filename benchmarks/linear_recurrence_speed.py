"""Speed of `parrnn.ops.linear_recurrence.linear_recurrence` on the CPU against the machine's copy bandwidth
(docs/linear-recurrence.md).

Usage::

    python benchmarks/linear_recurrence_speed.py [--threads 2] [--reps 7] [--sweep] [--out DIR]

1. Bandwidth: forward and forward+backward of the sequential backend at ``L=1024, N=64, C=1024`` (``N*C = 2**16``),
   float32, as GB/s of the bytes the op must move (forward reads ``a``, ``b`` and writes ``h``: 12 bytes per
   element; the backward reads ``grad_h``, ``a``, ``h`` and writes ``grad_a``, ``grad_b``: 20 more), against
   ``torch.clone`` of one such tensor (8 bytes per element) measured in the same run, and a ``copy_`` into
   preallocated memory (no page faults: the stricter bound). Target: forward >= 60 % of clone's.
2. Long sequence, small batch: ``L=65536, N=1, C=128``, scan against sequential, forward and forward+backward.
3. ``--sweep``: scan against sequential over ``N*C`` and ``L`` (the measurement behind ``backend="auto"``'s
   ``AUTO_RULES`` row for the CPU scan).

Every time is the median (and min) of ``--reps`` interleaved runs after a warm-up, with ``torch.set_num_threads``
fixed; the CPU model (``lscpu``), torch version and ``os.getloadavg()`` before and after are recorded: on a shared
machine the numbers are noisy. Writes ``results.json`` and ``results.md`` into ``--out`` (default
``benchmarks/results/<date>-<cpu>-linear-recurrence``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from parrnn.experiments.bench.report import cpu_model, git_commit
from parrnn.ops.linear_recurrence import linear_recurrence

#: ``(L, N*C)`` of the ``--sweep`` (N = 1).
SWEEP = [(4096, 1), (4096, 16), (4096, 32), (4096, 256), (16384, 256), (16384, 1024), (16384, 2048), (16384, 4096),
         (65536, 1), (65536, 16), (65536, 32), (65536, 64), (65536, 256)]


def timed(calls: dict[str, Callable[[], Any]], reps: int) -> dict[str, dict[str, float]]:
    """Median and min seconds of each call over ``reps`` interleaved runs (after one warm-up run each)."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts)} for name, ts in times.items()}


def op_calls(a: Tensor, b: Tensor, backend: str) -> dict[str, Callable[[], Any]]:
    """The op's forward (no autograd) and forward+backward (autograd, random output gradients)."""
    grad_h = torch.randn_like(a)
    a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()

    def forward() -> None:
        with torch.no_grad():
            linear_recurrence(a, b, backend=backend)

    def forward_backward() -> None:
        h, _ = linear_recurrence(a_, b_, backend=backend)
        torch.autograd.backward([h], [grad_h])
        a_.grad = b_.grad = None

    return {f"{backend} fwd": forward, f"{backend} fwd+bwd": forward_backward}


def inputs(length: int, batch: int, cols: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    a = 0.5 + 0.5 * torch.rand(length, batch, cols, generator=gen)
    return a, torch.randn(length, batch, cols, generator=gen)


def bandwidth(length: int, batch: int, cols: int, reps: int) -> dict[str, Any]:
    a, b = inputs(length, batch, cols)
    target = torch.empty_like(a)
    calls = {"clone": lambda: a.clone(), "copy_ (preallocated)": lambda: target.copy_(a),
             **op_calls(a, b, "sequential")}
    t = timed(calls, reps)
    elems = a.numel()
    moved = {"clone": 8 * elems, "copy_ (preallocated)": 8 * elems, "sequential fwd": 12 * elems,
             "sequential fwd+bwd": 32 * elems}
    copy_gbs = moved["clone"] / t["clone"]["median_s"] / 1e9
    preallocated_gbs = moved["clone"] / t["copy_ (preallocated)"]["median_s"] / 1e9
    rows = {}
    for name, seconds in t.items():
        gbs = moved[name] / seconds["median_s"] / 1e9
        rows[name] = {**seconds, "bytes": moved[name], "GB/s": gbs, "fraction_of_copy": gbs / copy_gbs,
                      "fraction_of_preallocated_copy": gbs / preallocated_gbs}
    return {"shape": [length, batch, cols], "dtype": "float32", "rows": rows}


def scan_vs_sequential(length: int, batch: int, cols: int, reps: int) -> dict[str, Any]:
    a, b = inputs(length, batch, cols)
    t = timed({**op_calls(a, b, "sequential"), **op_calls(a, b, "scan")}, reps)
    speedup = {kind: t[f"sequential {kind}"]["median_s"] / t[f"scan {kind}"]["median_s"] for kind in ("fwd", "fwd+bwd")}
    return {"shape": [length, batch, cols], "dtype": "float32", "rows": t, "scan_speedup": speedup}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# linear_recurrence speed, {result['cpu']}", "",
             f"- command: `{result['command']}` (commit {result.get('commit', 'unknown')})",
             f"- date: {result['date']}, torch {result['torch']}, "
             f"{result['threads']} threads, median of {result['reps']} (min in brackets)",
             f"- load average before {result['load_before']}, after {result['load_after']}"
             + (" -- a shared, loaded machine: these numbers are noisy" if result["noisy"] else ""), ""]
    bw = result["bandwidth"]
    lines += [f"## Bandwidth, L, N, C = {tuple(bw['shape'])}, float32", "",
              "| call | ms | GB/s | of clone's | of preallocated copy's |", "|---|---:|---:|---:|---:|"]
    for name, r in bw["rows"].items():
        prealloc = r.get("fraction_of_preallocated_copy")
        lines.append(f"| {name} | {1e3 * r['median_s']:.1f} ({1e3 * r['min_s']:.1f}) | {r['GB/s']:.2f} | "
                     f"{100 * r['fraction_of_copy']:.0f} % | "
                     + ("" if prealloc is None else f"{100 * prealloc:.0f} %") + " |")
    lines += ["", "`clone` allocates its output like the op does (fresh pages are faulted in on first touch); "
              "`copy_ (preallocated)` writes into memory already mapped, the machine's copy bandwidth without "
              "allocation. The target (forward >= 60 %) is stated against `clone`."]
    lines += ["", "## Scan vs sequential", "", "| L, N, C | seq fwd ms | scan fwd ms | fwd speed-up | "
              "seq fwd+bwd ms | scan fwd+bwd ms | fwd+bwd speed-up |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in [result["long_sequence"], *result.get("sweep", [])]:
        t = row["rows"]
        lines.append(f"| {tuple(row['shape'])} | {1e3 * t['sequential fwd']['median_s']:.1f} | "
                     f"{1e3 * t['scan fwd']['median_s']:.1f} | {row['scan_speedup']['fwd']:.2f} | "
                     f"{1e3 * t['sequential fwd+bwd']['median_s']:.1f} | {1e3 * t['scan fwd+bwd']['median_s']:.1f} | "
                     f"{row['scan_speedup']['fwd+bwd']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="scan vs sequential over N*C and L (the auto rule)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = cpu_model()
    load_before = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {"cpu": cpu, "torch": torch.__version__, "threads": args.threads, "reps": args.reps,
                              "date": datetime.date.today().isoformat(),
                              "command": " ".join(["python", *sys.argv]), "load_before": load_before,
                              "commit": git_commit()}
    result["bandwidth"] = bandwidth(1024, 64, 1024, args.reps)
    result["long_sequence"] = scan_vs_sequential(65536, 1, 128, args.reps)
    if args.sweep:
        result["sweep"] = [scan_vs_sequential(length, 1, cols, args.reps) for length, cols in SWEEP]
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["noisy"] = max(load_before[0], result["load_after"][0]) > 0.5 * (os.cpu_count() or 1)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    out = args.out or Path(__file__).parent / "results" / f"{result['date']}-{slug}-linear-recurrence"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out}/results.json and results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time the fused SRU forward and backward kernels alone and report them as a fraction of copy bandwidth.

The recurrence is memory-bound. Bytes each kernel must move per (t, b, column), storage size ``s`` (4 for
float32), ``K = 3`` with a highway input ``x`` and the peephole (v2)::

    forward:  read u (3s) + x (s), write h (s) + c_all (4)                         = 24 B for float32
    backward: read u (3s) + x (s) + grad_h (s) + c_all (4), write grad_u (3s) + grad_x (s) = 40 B for float32

A device-to-device copy of a large buffer is measured in the same run (read + write bytes / time); each
kernel is reported as GB/s and as a fraction of that. CUDA events, warm-up, median of ``--iters`` runs.

    python benchmarks/kernel_bandwidth.py --sizes 128,32,512 512,64,1024 4096,256,1024 --dtype float32 \
        --prefetch 1 2 4 --out results/kernel_bandwidth.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable

import torch

from parrnn.ops.sru import sequential_cuda as cuda_backend
from parrnn.ops.sru.contract import RecurrenceArgs

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


def time_ms(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` on the current stream (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(nbytes: int, iters: int) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write bytes counted)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), iters)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def bytes_moved(length: int, batch: int, cols: int, dtype: torch.dtype) -> tuple[int, int]:
    """(forward, backward) bytes for K = 3 with x, per the module docstring."""
    s = torch.empty(0, dtype=dtype).element_size()
    acc = 8 if dtype == torch.float64 else 4
    n = length * batch * cols
    return n * (3 * s + s + s + acc), n * (3 * s + s + s + acc + 3 * s + s)


def measure(length: int, batch: int, hidden: int, dtype: torch.dtype, iters: int) -> dict:
    """Forward and backward kernel times and bandwidth at (L, N, H), unidirectional v2 with x."""
    dev = torch.device("cuda")
    cols = hidden
    u = torch.randn(length, batch, 3, cols, device=dev).to(dtype)
    x = torch.randn(length, batch, cols, device=dev).to(dtype)
    wc, bias = torch.randn(2, cols, device=dev) * 0.1, torch.randn(2, cols, device=dev)
    c0 = torch.zeros(batch, cols, device=dev)
    args = RecurrenceArgs(u, x, wc, bias, c0, None, None)
    h, c_n, c_all = cuda_backend.forward(args)
    grad_h, grad_c_n = torch.randn_like(h), torch.randn_like(c_n)
    fwd_ms = time_ms(lambda: cuda_backend.forward(args), iters)
    bwd_ms = time_ms(lambda: cuda_backend.backward(args, grad_h, grad_c_n, c_all), iters)
    fwd_b, bwd_b = bytes_moved(length, batch, cols, dtype)
    return {"L": length, "N": batch, "H": hidden, "dtype": str(dtype).split(".")[-1],
            "fwd_ms": fwd_ms, "bwd_ms": bwd_ms, "fwd_bytes": fwd_b, "bwd_bytes": bwd_b,
            "fwd_GBps": fwd_b / (fwd_ms * 1e-3) / 1e9, "bwd_GBps": bwd_b / (bwd_ms * 1e-3) / 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["128,32,512", "512,64,1024", "2048,256,1024",
                                                       "16384,1,512"],
                        help="L,N,H triples")
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--prefetch", nargs="+", type=int, default=[0],
                        help="kernel prefetch depths to compare (0 = the kernel's default)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--copy-mib", type=int, default=1024, help="size of the reference copy")
    parser.add_argument("--out", default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device")
        return 0
    ok, why = cuda_backend.availability()
    if not ok:
        print(f"FAILED: cuda backend unavailable: {why}")
        return 1
    copy_gbps = copy_bandwidth(args.copy_mib << 20, args.iters)
    name = torch.cuda.get_device_name()
    print(f"{name}: device-to-device copy {copy_gbps:.0f} GB/s ({args.copy_mib} MiB, read + write)")
    print(f"{'L':>6} {'N':>4} {'H':>5} {'dtype':>9} {'pf':>3} {'fwd ms':>8} {'fwd GB/s':>9} {'of copy':>8} "
          f"{'bwd ms':>8} {'bwd GB/s':>9} {'of copy':>8}")
    rows = []
    for prefetch in args.prefetch:
        if prefetch:
            os.environ[cuda_backend.PREFETCH_ENV] = str(prefetch)
        else:
            os.environ.pop(cuda_backend.PREFETCH_ENV, None)
        for dtype_name in args.dtype:
            for size in args.sizes:
                length, batch, hidden = (int(v) for v in size.split(","))
                r = measure(length, batch, hidden, DTYPES[dtype_name], args.iters)
                r.update(prefetch=prefetch or "default", copy_GBps=copy_gbps,
                         fwd_of_copy=r["fwd_GBps"] / copy_gbps, bwd_of_copy=r["bwd_GBps"] / copy_gbps)
                rows.append(r)
                print(f"{length:>6} {batch:>4} {hidden:>5} {dtype_name:>9} {prefetch or '-':>3} "
                      f"{r['fwd_ms']:>8.3f} {r['fwd_GBps']:>9.0f} {r['fwd_of_copy']:>8.0%} "
                      f"{r['bwd_ms']:>8.3f} {r['bwd_GBps']:>9.0f} {r['bwd_of_copy']:>8.0%}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "copy_GBps": copy_gbps, "rows": rows,
                       "command": " ".join(sys.argv)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

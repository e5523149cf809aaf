"""A small forward + backward of every CUDA kernel variant, for ``compute-sanitizer`` (memcheck, racecheck).

Run as::

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize_sru.py

(the variable makes every torch allocation its own cudaMalloc, so out-of-bounds accesses cannot hide inside
the caching allocator's blocks). Sizes are odd on purpose (partial blocks, C not a multiple of the warp size).
Exits non-zero if a result is not finite.
"""

from __future__ import annotations

import sys

import torch

from parrnn.ops.sru import sequential_cuda as cuda_backend
from parrnn.ops.sru.contract import RecurrenceArgs


def run_case(dtype: torch.dtype, *, k: int, has_x: bool, v2: bool, bidirectional: bool, mask: bool,
             drop: bool, use_tanh: bool) -> bool:
    """One forward + backward on CUDA with shapes L=7, N=3, H=37; returns whether all outputs are finite."""
    dev = torch.device("cuda")
    L, N, H = 7, 3, 37
    C = (2 if bidirectional else 1) * H
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=dev, generator=g).to(dtype)

    u = rnd(L, N, k, C)
    x = rnd(L, N, C) if has_x and k == 3 else None
    wc = rnd(2, C) if v2 else None
    bias, c0 = rnd(2, C), rnd(N, C)
    mask_pad = None
    if mask:
        lengths = torch.tensor([L, 3, 1], device=dev)
        mask_pad = torch.arange(L, device=dev).unsqueeze(1) >= lengths.unsqueeze(0)
    drop_mask = (torch.rand(N, C, device=dev, generator=g) > 0.2).to(dtype) / 0.8 if drop else None
    args = RecurrenceArgs(u, x, wc, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, 1.3)
    h, c_n, c_all = cuda_backend.forward(args)
    grads = cuda_backend.backward(args, torch.ones_like(h), torch.ones_like(c_n), c_all)
    torch.cuda.synchronize()
    return all(bool(torch.isfinite(t).all()) for t in (h, c_n, c_all, *grads) if t is not None)


def main() -> int:
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device")
        return 0
    ok = True
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for k, has_x, v2, bidirectional, mask, drop, use_tanh in (
            (3, True, True, False, False, False, False),
            (3, False, False, True, True, True, True),
            (4, False, True, True, True, False, False),
        ):
            finite = run_case(dtype, k=k, has_x=has_x, v2=v2, bidirectional=bidirectional, mask=mask,
                              drop=drop, use_tanh=use_tanh)
            print(f"{str(dtype):16} k={k} x={has_x} v2={v2} bidir={bidirectional} mask={mask} drop={drop} "
                  f"tanh={use_tanh}: {'ok' if finite else 'NON-FINITE'}")
            ok &= finite
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""How the chunked time-parallel scans cut time into chunks, shared by every op's scan (the SRU's and the linear
recurrence's, CPU and CUDA): `cpu_chunk_bounds` for the CPU scans (std::threads over chunks), `gpu_chunk_len`
for the CUDA scans (one thread per (chunk, column))."""

from __future__ import annotations

#: Below this many steps per thread a CPU scan is not split (thread start-up dominates).
CPU_MIN_STEPS_PER_THREAD = 256
#: Aim for about this many (chunk, column) CUDA threads (an H100 holds ~270k resident threads).
GPU_TARGET_THREADS = 1 << 17
#: Never make CUDA chunks shorter than this (the carry pass is sequential over chunks).
GPU_MIN_CHUNK = 16


def cpu_chunk_bounds(length: int, threads: int, reduce_cost: float,
                     min_steps_per_thread: int = CPU_MIN_STEPS_PER_THREAD) -> list[int]:
    """Chunk boundaries ``[0, ..., length]`` of a CPU scan (in processing order).

    One chunk (the plain sequential recurrence) for one thread or fewer than ``min_steps_per_thread`` steps per
    thread; else ``threads + 1`` chunks: chunk 0 of ``r/(P+r)`` of the steps (it runs the fused pass while the other
    threads reduce chunks 1..P-1), then ``P`` equal chunks, one per thread in the fix-up phase (``P`` threads,
    ``r = reduce_cost`` the cost of a reduce step relative to a fused one).
    """
    if threads <= 1 or length < threads * min_steps_per_thread:
        return [0, length]
    first = int(round(length * reduce_cost / (threads + reduce_cost)))
    first = min(max(first, 1), length - threads)
    bounds = [0, first]
    rest = length - first
    for i in range(1, threads + 1):
        bounds.append(first + (rest * i) // threads)
    return bounds


def gpu_chunk_len(length: int, columns: int) -> int:
    """Chunk length of a CUDA scan for ``length`` steps and ``columns = N*C``: enough chunks that
    ``chunks * columns`` is about `GPU_TARGET_THREADS`, but chunks of at least `GPU_MIN_CHUNK` steps."""
    if length <= 0:
        return 1
    want = max(1, -(-GPU_TARGET_THREADS // max(columns, 1)))
    n_chunks = max(1, min(want, length // GPU_MIN_CHUNK))
    return -(-length // n_chunks)

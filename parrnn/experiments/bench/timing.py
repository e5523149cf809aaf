"""How parrnn-bench measures time, memory and bandwidth.

Time
    CPU: a fixed thread count (``torch.set_num_threads``), warm-up calls, then the median of ``repeats``
    samples of ``time.perf_counter``. CUDA: warm-up, then each sample is bracketed by CUDA events and the
    device is synchronized before the events are read; at least 10 samples (unless ``max_case_s`` caps a
    long case). On both, a call shorter than
    ``min_sample_s`` is repeated inside one sample (and the sample divided by the count) so tiny cases are not
    timer noise. The models of one case are sampled in interleaved rounds (`interleaved`), so their ratios are
    paired and a noisy case is re-sampled; see `parrnn.experiments.bench.noise` for what counts as noisy.

What is hand-written here, and why not `torch.utils.benchmark.Timer`
    ``Timer.blocked_autorange``/``adaptive_autorange`` time one statement in isolation: a burst of load during
    it hits that model only, and two models' medians are taken minutes apart -- exactly the unpaired ratio that
    interleaving avoids. ``Timer.timeit(n)`` runs ``max(n // 100, 2)`` warm-up calls before every measurement,
    tripling the cost of an interleaved round of slow calls (a 2 s forward+backward). So the rounds are timed
    here with ``perf_counter`` (CPU) or CUDA events, and `adaptive_autorange`'s idea -- keep sampling until
    IQR/median is under a threshold -- drives the re-sampling. The statistics (median, IQR, the 10% threshold)
    are `torch.utils.benchmark.Measurement`'s (`parrnn.experiments.bench.noise`).

Peak memory
    CUDA: ``torch.cuda.max_memory_allocated`` over one extra call, minus what was allocated before it
    (method ``cuda_max_allocated``). CPU (Linux): the process's peak resident set (``VmHWM``) over one extra
    call, after ``malloc_trim`` and resetting the peak through ``/proc/self/clear_refs``, minus the resident
    set before it (method ``rss_hwm_delta``): an approximation that counts every page the call touched for the
    first time. Elsewhere the memory column is empty (method ``none``). ``tracemalloc`` is not used: it sees
    Python objects, not tensor storage.

Bandwidth
    A device-to-device (CPU: memory-to-memory) copy of a large tensor; bytes counted as read + written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from parrnn.experiments.bench.noise import spread

CUDA_MIN_REPEATS = 10


@dataclass
class Timing:
    """Milliseconds per call: the median and all samples."""

    median_ms: float
    samples_ms: list[float]
    inner: int  # calls per sample

    @property
    def spread_ms(self) -> float:
        """Interquartile range of the samples as `torch.utils.benchmark` computes it (min-max below 4)."""
        return spread(self.samples_ms)


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (when given) and return the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample_cpu(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) * 1e3 / inner


def _sample_cuda(fn: Callable[[], object], inner: int, device: torch.device) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    synchronize(device)
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    synchronize(device)
    return start.elapsed_time(end) / inner


def _sampler(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """``sample(fn, inner)``: ms per call over ``inner`` calls (CUDA events on CUDA, perf_counter on CPU)."""
    if device.type == "cuda":
        return lambda fn, inner: _sample_cuda(fn, inner, device)
    return _sample_cpu


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, *, warmup: int = 1, repeats: int = 5,
                min_sample_s: float = 0.02, max_case_s: float | None = None, max_rounds: int | None = None,
                still_noisy: Callable[[dict[str, list[float]]], bool] | None = None) -> dict[str, Timing]:
    """Time several callables in interleaved rounds: round ``r`` takes one sample of each (in an order rotated
    by ``r``), so that a burst of load hits all of them and per-round ratios are paired.

    After ``repeats`` rounds (CUDA: at least 10), rounds go on while ``still_noisy(samples)`` says so, up to
    ``max_rounds`` (default ``3 * repeats``), the way `torch.utils.benchmark.Timer.adaptive_autorange` keeps
    sampling until the IQR is small. ``max_case_s`` caps the timed seconds per callable (never fewer than 3
    rounds) and the re-sampling gets as much again.
    """
    device = torch.device(device)
    sample = _sampler(device)
    repeats = max(repeats, CUDA_MIN_REPEATS) if device.type == "cuda" else max(repeats, 1)
    max_rounds = max(max_rounds or 3 * repeats, repeats)
    inner: dict[str, int] = {}
    round_ms = 0.0
    for name, fn in fns.items():
        for _ in range(warmup):  # first calls pay for one-time setup (allocator, oneDNN/cuDNN plans, JIT builds)
            fn()
        estimate_ms = sample(fn, 1)
        inner[name] = max(1, math.ceil(min_sample_s * 1e3 / max(estimate_ms, 1e-6)))
        round_ms = max(round_ms, estimate_ms * inner[name])
    if max_case_s is not None:
        affordable = int(max_case_s * 1e3 / max(round_ms, 1e-6))
        repeats = max(min(repeats, affordable), min(3, repeats))
        max_rounds = max(min(max_rounds, 2 * affordable), repeats)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(max_rounds):
        if r >= repeats and (still_noisy is None or not still_noisy(samples)):
            break
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(sample(fns[name], inner[name]))
    return {name: Timing(statistics.median(samples[name]), samples[name], inner[name]) for name in fns}


def time_callable(fn: Callable[[], object], device: torch.device, *, warmup: int = 1, repeats: int = 5,
                  min_sample_s: float = 0.02, max_case_s: float | None = None) -> Timing:
    """Time ``fn()`` on ``device`` alone (`interleaved` with one callable and no re-sampling)."""
    return interleaved({"fn": fn}, device, warmup=warmup, repeats=repeats, min_sample_s=min_sample_s,
                       max_case_s=max_case_s, max_rounds=repeats)["fn"]


def _read_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_method(device: torch.device) -> str:
    """How `peak_memory` measures: ``cuda_max_allocated``, ``rss_hwm_delta`` or ``none``."""
    if torch.device(device).type == "cuda":
        return "cuda_max_allocated"
    return "rss_hwm_delta" if _read_status_kib("VmHWM") is not None and _reset_rss_peak() else "none"


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak extra memory in bytes of one ``fn()`` call, or ``None`` where it cannot be measured."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if memory_method(device) == "none":
        return None
    _malloc_trim()
    before = _read_status_kib("VmRSS")
    if before is None or not _reset_rss_peak():
        return None
    fn()
    peak = _read_status_kib("VmHWM")
    return None if peak is None else max(peak - before, 0) * 1024


def copy_bandwidth(device: torch.device, *, nbytes: int | None = None, repeats: int = 10) -> float:
    """Measured copy bandwidth in bytes/s (read + written) on ``device``.

    Copies 1 GiB on CUDA, 256 MiB on CPU unless ``nbytes`` is given.
    """
    device = torch.device(device)
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 1 << 28)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    result = time_callable(lambda: dst.copy_(src), device, warmup=2, repeats=repeats, min_sample_s=0.0)
    return 2 * nbytes / (result.median_ms / 1e3)

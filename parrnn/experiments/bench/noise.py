"""How parrnn-bench decides whether a measurement can be trusted.

* **Spread.** Every row carries the interquartile range of its samples (the min-max range when it has fewer
  than 4); a row whose spread exceeds ``NOISE_THRESHOLD`` (10%) of its median is noisy. The IQR is
  `torch.utils.benchmark.Measurement`'s, and 10% is that module's own warning threshold.
* **Paired ratios.** The models of one case are timed in interleaved rounds (A, B, C, A, B, C, ...: a burst of
  load hits every model of the round), so a speed-up is the median of the per-round ratios, with their IQR,
  not a ratio of two medians taken minutes apart. A ratio whose IQR exceeds the threshold is noisy too.
* **Monotonicity.** A torch baseline (nn.LSTM, nn.GRU and their configurations) must not run faster at a longer
  sequence than at a shorter one of the same sweep; where it does, both cases are re-sampled and, if it persists,
  marked noisy.
* **Load.** The 1-minute load average is read before and after every case; a case during which it exceeded the
  benchmark's own threads by ``LOAD_MARGIN`` (someone else was using a core) is noisy even when its samples are
  steady (a loaded machine can slow every sample alike), and a run with such a reading says at the top that it
  ran on a loaded machine.

Noisy rows are shown (marked) in tables, plots and JSON, and never count for a PASS or FAIL.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from torch.utils.benchmark import Measurement
from torch.utils.benchmark.utils.common import TaskSpec

#: IQR / median above which a measurement or a ratio is noisy (`torch.utils.benchmark`'s ``_IQR_WARN_THRESHOLD``).
NOISE_THRESHOLD = 0.1
#: How far the 1-minute load average may exceed the benchmark's own threads before the machine counts as loaded.
LOAD_MARGIN = 1.0
#: The torch baselines whose time must grow with the sequence length (model families, see
#: `parrnn.experiments.bench.models`).
MONOTONE_FAMILIES = ("lstm", "gru")

Row = dict[str, Any]


def measurement(values: Sequence[float], label: str = "") -> Measurement:
    """``values`` (one per sample) as a `torch.utils.benchmark.Measurement`, for its median, IQR and confidence
    (a Measurement holds seconds; the statistics come back in the unit they went in)."""
    return Measurement(number_per_run=1, raw_times=list(values), task_spec=TaskSpec(stmt=label or "call", setup=""))


def spread(samples: Sequence[float]) -> float:
    """The spread of ``samples``: their IQR from 4 samples on (`torch.utils.benchmark.Measurement.iqr`), their
    min-max range below that (0 for one sample)."""
    if len(samples) >= 4:
        return measurement(samples).iqr
    return max(samples) - min(samples) if samples else 0.0


def relative_iqr(samples: Sequence[float]) -> float:
    """`spread` / median of ``samples`` (0 for none)."""
    if not samples:
        return 0.0
    median = statistics.median(samples)
    return spread(samples) / median if median > 0 else 0.0


def paired_ratios(base_ms: Sequence[float], model_ms: Sequence[float]) -> list[float]:
    """Per-round ratios ``base / model`` of two interleaved sample lists (round ``r`` of each)."""
    if len(base_ms) != len(model_ms):
        raise ValueError(f"paired samples need the same rounds, got {len(base_ms)} and {len(model_ms)}")
    return [b / m for b, m in zip(base_ms, model_ms, strict=True) if m > 0]


def ratio_summary(ratios: Sequence[float]) -> tuple[float, float]:
    """Median and `spread` (IQR; min-max below 4 rounds) of per-round ratios."""
    if not ratios:
        raise ValueError("no ratios")
    return statistics.median(ratios), spread(ratios)


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_loaded(loads: Sequence[float | None], threads: int) -> bool:
    """Whether the load average ever exceeded ``threads + LOAD_MARGIN`` during the run."""
    return any(load is not None and load > threads + LOAD_MARGIN for load in loads)


def load_reason(row: Row, threads: int) -> str:
    """Why a row measured on a loaded machine is not trustworthy (empty when the load average before and after it
    stayed within ``threads + LOAD_MARGIN``): a steady slowdown has a small spread and would pass the other
    checks."""
    loads = [x for x in (row.get("load_before"), row.get("load_after")) if x is not None]
    if machine_loaded(loads, threads):
        return f"machine loaded (1-min load average {max(loads):.2f} with {threads} benchmark thread(s))"
    return ""


def spread_reasons(row: Row, threshold: float = NOISE_THRESHOLD) -> list[str]:
    """Why a measured row is noisy by its spread: its samples' or its paired ratio's IQR vs its median."""
    reasons = []
    if row.get("ms") and row.get("ms_iqr") is not None and row["ms_iqr"] > threshold * row["ms"]:
        reasons.append(f"IQR {100 * row['ms_iqr'] / row['ms']:.0f}% of median")
    ratio, ratio_iqr = row.get("speedup_vs_lstm"), row.get("speedup_iqr")
    if ratio and ratio_iqr is not None and ratio_iqr > threshold * ratio:
        reasons.append(f"ratio IQR {100 * ratio_iqr / ratio:.0f}%")
    return reasons


def monotonicity_breaks(rows: Sequence[Row], family_of: Any, size_keys: Sequence[str]) -> dict[tuple, str]:
    """Cases where a torch baseline is faster at a longer sequence than at a shorter one.

    Returns ``{case key: reason}`` with case key = the row's `size_keys` values (both cases of each broken pair).
    ``family_of(model name)`` gives a model's family.
    """
    other_keys = [k for k in size_keys if k != "seq_len"]
    series: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if family_of(row["model"]) in MONOTONE_FAMILIES:
            series[(row["model"], row.get("sweep"), *(row[k] for k in other_keys))].append(row)
    broken: dict[tuple, str] = {}
    for group in series.values():
        group = sorted(group, key=lambda r: r["seq_len"])
        for short, long in zip(group, group[1:], strict=False):
            if long["ms"] < short["ms"]:
                reason = (f"{short['model']} faster at L={long['seq_len']} ({long['ms']:.3g} ms) than at "
                          f"L={short['seq_len']} ({short['ms']:.3g} ms)")
                for row in (short, long):
                    broken[tuple(row[k] for k in size_keys)] = reason
    return broken

"""The speed targets of issues 3 and 14 (CPU) and issue 10 (GPU), checked against a run's rows.

A ratio target compares a model with a baseline at the same sizes, mode and dtype in the same run
(``baseline ms / model ms``); a bandwidth target reads a ``rec-*`` row's fraction of the measured copy
bandwidth.
Only targets whose rows are present are reported, so any run can be checked (``parrnn-bench --preset issue3``
covers issues 3 and 14, ``--preset streaming`` issue 14's latency target, ``--preset gpu`` issue 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parrnn.experiments.bench.runner import SIZE_KEYS

Row = dict[str, Any]

_SRU_CPU = ("sru-cpu-v2", "sru", "sru-auto-v2")
_SRU_CUDA = ("sru-cuda-v2", "sru", "sru-auto-v2")


def _sizes(*sizes: tuple[int, int, int]) -> Callable[[Row], bool]:
    """Rows at (seq_len, batch, hidden) in ``sizes`` with D = H."""
    return lambda r: (r["seq_len"], r["batch"], r["hidden"]) in sizes and r["input_size"] == r["hidden"]


@dataclass(frozen=True)
class Target:
    """``kind="ratio"``: the first (model, baseline) pair of ``pairs`` present; ``kind="bandwidth"``: rows
    whose model starts with ``pairs[0][0]``. ``where`` selects the rows (device, sizes...)."""

    issue: int
    text: str
    pairs: tuple[tuple[str, str], ...]
    threshold: float
    where: Callable[[Row], bool]
    kind: str = "ratio"


def _ratio_pairs(models: tuple[str, ...], baseline: str) -> tuple[tuple[str, str], ...]:
    return tuple((m, baseline) for m in models)


_ISSUE3 = _sizes((256, 32, 512))
_ISSUE10 = _sizes((128, 32, 512), (512, 64, 1024))


def _cpu_issue3(mode: str) -> Callable[[Row], bool]:
    """CPU float32 rows of ``mode`` at issue 3's sizes (2 layers, L=256, N=32, D=H=512)."""
    return lambda r: (r["device"] == "cpu" and r["mode"] == mode and r["dtype"] == "float32" and r["layers"] == 2
                      and _ISSUE3(r))


TARGETS: tuple[Target, ...] = (
    Target(3, "SRU fwd+bwd >= 2x nn.LSTM (2 layers, L=256, N=32, D=H=512, fp32, CPU)",
           _ratio_pairs(_SRU_CPU, "lstm"), 2.0,
           _cpu_issue3("fwdbwd")),
    Target(3, "SRU fwd+bwd >= 3x sru 2.6 (same sizes, CPU)", _ratio_pairs(_SRU_CPU, "sru26"), 3.0,
           _cpu_issue3("fwdbwd")),
    Target(3, "SRU forward (no_grad) >= 1.5x nn.LSTM (same sizes, CPU)", _ratio_pairs(_SRU_CPU, "lstm"), 1.5,
           _cpu_issue3("fwd")),
    Target(14, "SRU forward (no_grad) >= 2x nn.LSTM (same sizes, CPU)", _ratio_pairs(_SRU_CPU, "lstm"), 2.0,
           _cpu_issue3("fwd")),
    Target(14, "SRU fwd+bwd >= 2.2x nn.LSTM (stretch 2.5x; same sizes, CPU)", _ratio_pairs(_SRU_CPU, "lstm"), 2.2,
           _cpu_issue3("fwdbwd")),
    Target(14, "streaming: SRU latency per call <= 0.5x nn.LSTM's (N=1, H=512, 2 layers, CPU)",
           _ratio_pairs(_SRU_CPU, "lstm"), 2.0,
           lambda r: r["device"] == "cpu" and r["mode"] == "stream" and r["batch"] == 1 and r["hidden"] == 512),
    Target(10, "SRU >= 10x cuDNN nn.LSTM at (128,32,512) and (512,64,1024), fp32/bf16, fwd and fwd+bwd",
           _ratio_pairs(_SRU_CUDA, "lstm"), 10.0,
           lambda r: r["device"] == "cuda" and r["dtype"] in ("float32", "bfloat16") and _ISSUE10(r)),
    Target(10, "SRU >= 1.3x sru 2.6 at the same sizes", _ratio_pairs(_SRU_CUDA, "sru26"), 1.3,
           lambda r: r["device"] == "cuda" and r["dtype"] in ("float32", "bfloat16") and _ISSUE10(r)),
    Target(10, "recurrence kernel >= 80% of device-to-device copy bandwidth", (("rec-cuda", ""),), 0.8,
           lambda r: r["device"] == "cuda", kind="bandwidth"),
    Target(10, "SlicedRNN(gru) >= 100x nn.GRU at T=32768", (("sliced-gru", "gru"),), 100.0,
           lambda r: r["device"] == "cuda" and r["seq_len"] == 32768),
    Target(10, "v1 time-parallel scan >= 10x the sequential kernel at N=1, L >= 16384",
           (("rec-scan-v1", "rec-cuda-v1"), ("sru-scan-v1", "sru-cuda-v1")), 10.0,
           lambda r: r["device"] == "cuda" and r["batch"] == 1 and r["seq_len"] >= 16384),
)


@dataclass
class TargetResult:
    """One checked (target, size) pair."""

    issue: int
    target: str
    model: str
    baseline: str
    case: str
    value: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}


def _case(row: Row) -> str:
    return (f"{row['mode']} {row['dtype']} L={row['seq_len']} N={row['batch']} H={row['hidden']} "
            f"D={row['input_size']} layers={row['layers']}")


def _check_ratio(target: Target, rows: list[Row]) -> list[TargetResult]:
    by_key = {(r["model"], *(r[k] for k in SIZE_KEYS)): r for r in rows}
    for model, baseline in target.pairs:
        results = []
        for row in rows:
            if row["model"] != model or not target.where(row):
                continue
            base = by_key.get((baseline, *(row[k] for k in SIZE_KEYS)))
            if base is not None:
                results.append(TargetResult(target.issue, target.text, model, baseline, _case(row),
                                            base["ms"] / row["ms"], target.threshold))
        if results:
            return results
    return []


def _check_bandwidth(target: Target, rows: list[Row]) -> list[TargetResult]:
    prefix = target.pairs[0][0]
    return [TargetResult(target.issue, target.text, row["model"], "copy", _case(row), row["bw_fraction"],
                         target.threshold)
            for row in rows if row["model"].startswith(prefix) and row.get("bw_fraction") is not None
            and target.where(row)]


def check_targets(rows: list[Row]) -> list[TargetResult]:
    """Every target with rows in ``rows``, one result per matching size."""
    out: list[TargetResult] = []
    for target in TARGETS:
        out += _check_bandwidth(target, rows) if target.kind == "bandwidth" else _check_ratio(target, rows)
    return out

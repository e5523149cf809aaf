"""The speed targets, named by what they measure, checked against a run's rows.

* ``lstm-comparison`` -- parrnn's SRU against the fastest nn.LSTM configuration and sru 2.6 on CPU at
  2 layers, L=256, N=32, D=H=512, fp32 (``parrnn-bench --preset lstm-comparison``);
* ``streaming``       -- one streaming call's latency against the fastest nn.LSTM configuration (N=1,
  H=512, 2 layers; ``--preset streaming``);
* ``gpu``             -- SRU vs cuDNN nn.LSTM and sru 2.6, the recurrence's share of copy bandwidth, the
  sliced RNN and the v1 scan on a CUDA device (``--preset gpu``).

A ratio target compares a model with a baseline at the same sizes, mode and dtype in the same run: the median of
the per-round ratios of their interleaved samples (``baseline ms / model ms``); against ``lstm`` the baseline
is the fastest LSTM configuration measured there (the row's ``baseline``). A bandwidth target reads a ``rec-*``
row's fraction of the measured copy bandwidth.

Only trustworthy rows are judged: a result whose model row or baseline row is noisy, or whose per-round ratios
spread by more than the noise threshold, is reported as ``NOISY`` (not judged) instead of PASS or FAIL (see
`parrnn.experiments.bench.noise`). Only targets whose rows are present are reported, so any run can be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parrnn.experiments.bench import noise
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
    whose model starts with ``pairs[0][0]``. ``where`` selects the rows (device, sizes...). ``group``: the
    preset that measures it."""

    group: str
    text: str
    pairs: tuple[tuple[str, str], ...]
    threshold: float
    where: Callable[[Row], bool]
    kind: str = "ratio"


def _ratio_pairs(models: tuple[str, ...], baseline: str) -> tuple[tuple[str, str], ...]:
    return tuple((m, baseline) for m in models)


_LSTM_COMPARISON = _sizes((256, 32, 512))
_GPU_SIZES = _sizes((128, 32, 512), (512, 64, 1024))


def _cpu_comparison(mode: str) -> Callable[[Row], bool]:
    """CPU float32 rows of ``mode`` at the LSTM comparison's sizes (2 layers, L=256, N=32, D=H=512)."""
    return lambda r: (r["device"] == "cpu" and r["mode"] == mode and r["dtype"] == "float32" and r["layers"] == 2
                      and _LSTM_COMPARISON(r))


_LC, _STREAM, _GPU = "lstm-comparison", "streaming", "gpu"
TARGETS: tuple[Target, ...] = (
    Target(_LC, "SRU fwd+bwd >= 2x the fastest nn.LSTM configuration (2 layers, L=256, N=32, D=H=512, fp32, CPU)",
           _ratio_pairs(_SRU_CPU, "lstm"), 2.0, _cpu_comparison("fwdbwd")),
    Target(_LC, "SRU fwd+bwd >= 2.2x nn.LSTM (stretch 2.5x; same sizes, CPU)", _ratio_pairs(_SRU_CPU, "lstm"), 2.2,
           _cpu_comparison("fwdbwd")),
    Target(_LC, "SRU fwd+bwd >= 3x sru 2.6 (same sizes, CPU)", _ratio_pairs(_SRU_CPU, "sru26"), 3.0,
           _cpu_comparison("fwdbwd")),
    Target(_LC, "SRU forward (no_grad) >= 2x the fastest nn.LSTM configuration (same sizes, CPU)",
           _ratio_pairs(_SRU_CPU, "lstm"), 2.0, _cpu_comparison("fwd")),
    Target(_STREAM, "streaming: SRU latency per call <= 0.5x the fastest nn.LSTM configuration's (N=1, H=512, "
           "2 layers, CPU)", _ratio_pairs(_SRU_CPU, "lstm"), 2.0,
           lambda r: r["device"] == "cpu" and r["mode"] == "stream" and r["batch"] == 1 and r["hidden"] == 512),
    Target(_GPU, "SRU >= 10x cuDNN nn.LSTM at (128,32,512) and (512,64,1024), fp32/bf16, fwd and fwd+bwd",
           _ratio_pairs(_SRU_CUDA, "lstm"), 10.0,
           lambda r: r["device"] == "cuda" and r["dtype"] in ("float32", "bfloat16") and _GPU_SIZES(r)),
    Target(_GPU, "SRU >= 1.3x sru 2.6 at the same sizes", _ratio_pairs(_SRU_CUDA, "sru26"), 1.3,
           lambda r: r["device"] == "cuda" and r["dtype"] in ("float32", "bfloat16") and _GPU_SIZES(r)),
    Target(_GPU, "recurrence kernel >= 80% of device-to-device copy bandwidth", (("rec-cuda", ""),), 0.8,
           lambda r: r["device"] == "cuda", kind="bandwidth"),
    Target(_GPU, "SlicedRNN(gru) >= 100x nn.GRU at T=32768", (("sliced-gru", "gru"),), 100.0,
           lambda r: r["device"] == "cuda" and r["seq_len"] == 32768),
    Target(_GPU, "v1 time-parallel scan >= 10x the sequential kernel at N=1, L >= 16384",
           (("rec-scan-v1", "rec-cuda-v1"), ("sru-scan-v1", "sru-cuda-v1")), 10.0,
           lambda r: r["device"] == "cuda" and r["batch"] == 1 and r["seq_len"] >= 16384),
)


@dataclass
class TargetResult:
    """One checked (target, size) pair; ``noise`` says why it is not judged (empty: trustworthy)."""

    group: str
    target: str
    model: str
    baseline: str
    case: str
    value: float
    threshold: float
    noise: str = ""

    @property
    def trusted(self) -> bool:
        """Whether the rows behind it are trustworthy (then it is a PASS or a FAIL)."""
        return not self.noise

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``NOISY`` (not judged)."""
        return "NOISY" if not self.trusted else "PASS" if self.passed else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed if self.trusted else None, "verdict": self.verdict}


def _case(row: Row) -> str:
    return (f"{row['mode']} {row['dtype']} L={row['seq_len']} N={row['batch']} H={row['hidden']} "
            f"D={row['input_size']} layers={row['layers']}")


def _paired(base: Row, row: Row) -> tuple[float, str]:
    """``base ms / row ms`` as the median of per-round ratios where both rows carry interleaved samples, and why
    it cannot be trusted (empty when it can)."""
    reasons = [f"{r['model']} noisy ({r.get('noise')})" for r in (row, base) if r.get("noisy")]
    a, b = base.get("samples_ms"), row.get("samples_ms")
    if not (a and b and len(a) == len(b)):
        return base["ms"] / row["ms"], "; ".join(reasons)
    ratios = noise.paired_ratios(a, b)
    if noise.relative_iqr(ratios) > noise.NOISE_THRESHOLD:
        reasons.append(f"per-round ratios spread {100 * noise.relative_iqr(ratios):.0f}%")
    return noise.ratio_summary(ratios)[0], "; ".join(dict.fromkeys(reasons))


def _check_ratio(target: Target, rows: list[Row]) -> list[TargetResult]:
    by_key = {(r["model"], *(r[k] for k in SIZE_KEYS)): r for r in rows}
    for model, baseline in target.pairs:
        results = []
        for row in rows:
            if row["model"] != model or not target.where(row):
                continue
            base_name = row.get("baseline") or baseline if baseline == "lstm" else baseline
            base = by_key.get((base_name, *(row[k] for k in SIZE_KEYS)))
            if base is not None:
                value, why = _paired(base, row)
                results.append(TargetResult(target.group, target.text, model, base_name, _case(row), value,
                                            target.threshold, why))
        if results:
            return results
    return []


def _check_bandwidth(target: Target, rows: list[Row]) -> list[TargetResult]:
    prefix = target.pairs[0][0]
    return [TargetResult(target.group, target.text, row["model"], "copy", _case(row), row["bw_fraction"],
                         target.threshold, row.get("noise") or "")
            for row in rows if row["model"].startswith(prefix) and row.get("bw_fraction") is not None
            and target.where(row)]


def check_targets(rows: list[Row]) -> list[TargetResult]:
    """Every target with rows in ``rows``, one result per matching size."""
    out: list[TargetResult] = []
    for target in TARGETS:
        out += _check_bandwidth(target, rows) if target.kind == "bandwidth" else _check_ratio(target, rows)
    return out

"""Noise detection of parrnn-bench on an injected timer: spread, paired ratios, monotonicity, load, targets."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from parrnn.experiments.bench import noise, report, runner, timing
from parrnn.experiments.bench.runner import BenchConfig, Sweep, attach_speedups, run_benchmark
from parrnn.experiments.bench.targets import check_targets

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Step:
    """A stand-in for a model's timed step: does nothing, knows its model's name and size."""

    def __init__(self, name: str, seq_len: int) -> None:
        self.name, self.seq_len = name, seq_len

    def __call__(self) -> None:
        pass


def _inject(monkeypatch: pytest.MonkeyPatch, clock: Callable[[str, int], Iterator[float]],
            load: float = 0.5) -> list[str]:
    """Replace the timed steps by `Step`s and the clock by ``clock(model, L)`` (an iterator of ms per call);
    return the log of which model each sample timed, in order."""
    series: dict[tuple[str, int], Iterator[float]] = {}
    order: list[str] = []

    def first_call(bm, case, mode):  # noqa: ANN001, ANN202 - the runner's signature
        return Step(bm.spec.name, case.seq_len), []

    def sample(fn: Step, inner: int) -> float:
        order.append(fn.name)
        return next(series.setdefault((fn.name, fn.seq_len), clock(fn.name, fn.seq_len)))

    monkeypatch.setattr(runner, "_first_call", first_call)
    monkeypatch.setattr(timing, "_sampler", lambda device: sample)
    monkeypatch.setattr(noise, "load_average", lambda: load)
    return order


def _config(seq_lens: list[int]) -> BenchConfig:
    sweep = Sweep(["sru-cpu-v2"], seq_lens, [32], [512], modes=["fwdbwd"], label="lstm-comparison")
    return BenchConfig(sweeps=[sweep], threads=2, warmup=1, repeats=6, min_sample_s=0.0, memory=False)


def _steady(ms: float) -> Iterator[float]:
    return itertools.cycle([ms, ms * 1.01, ms * 0.99])


def test_a_clean_baseline_is_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    order = _inject(monkeypatch, lambda name, length: _steady(100.0 if name == "lstm" else 40.0))
    result = run_benchmark(_config([256]), progress=False)
    assert not any(r["noisy"] for r in result.rows) and not result.loaded
    sru = next(r for r in result.rows if r["model"] == "sru-cpu-v2")
    assert sru["speedup_vs_lstm"] == pytest.approx(2.5, rel=0.03) and sru["repeats"] == 6
    timed = order[-12:]  # the 6 rounds after the estimates: each round times both models once
    assert all({timed[i], timed[i + 1]} == {"lstm", "sru-cpu-v2"} for i in range(0, 12, 2))
    verdicts = {(t.baseline, t.threshold): t.verdict for t in check_targets(result.rows)}
    assert verdicts[("lstm", 2.0)] == "PASS" and verdicts[("lstm", 2.2)] == "PASS"


def test_a_noisy_baseline_is_resampled_marked_and_not_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    order = _inject(monkeypatch, lambda name, length: (
        itertools.cycle([100.0, 300.0, 120.0, 500.0]) if name == "lstm" else _steady(40.0)), load=4.2)
    result = run_benchmark(_config([256]), progress=False)
    lstm, sru = (next(r for r in result.rows if r["model"] == m) for m in ("lstm", "sru-cpu-v2"))
    assert lstm["repeats"] == 18  # re-sampled up to 3x the rounds, still noisy
    assert order.count("lstm") == order.count("sru-cpu-v2")  # interleaved: every round times both
    assert lstm["noisy"] and "IQR" in lstm["noise"] and sru["noisy"] and "baseline lstm noisy" in sru["noise"]
    targets = [t for t in check_targets(result.rows) if t.baseline == "lstm"]
    assert targets and all(t.verdict == "NOISY" and t.as_dict()["passed"] is None for t in targets)
    assert "not judged (noisy)" in report.format_targets(targets)
    assert result.loaded and "LOADED MACHINE" in report.format_conditions(result)
    assert lstm["load_before"] == lstm["load_after"] == 4.2


def test_a_steady_row_on_a_loaded_machine_is_marked_and_not_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, lambda name, length: _steady(1000.0 if name == "lstm" else 50.0), load=4.1)
    result = run_benchmark(_config([256]), progress=False)  # steady samples, a 20x ratio: only the load betrays it
    assert all(r["noisy"] and "machine loaded" in r["noise"] for r in result.rows)
    assert all(t.verdict == "NOISY" for t in check_targets(result.rows))


def test_a_baseline_faster_at_longer_l_is_resampled_then_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, lambda name, length: _steady(
        (200.0 if length == 128 else 100.0) if name == "lstm" else 0.2 * length))
    result = run_benchmark(_config([128, 256]), progress=False)
    assert len(result.resampled) == 2 and "faster at L=256" in result.resampled[0]
    assert all(r["noisy"] and "faster at L=256" in r["noise"] for r in result.rows)
    assert all(t.verdict == "NOISY" for t in check_targets(result.rows))


def test_paired_ratios_cancel_a_burst_that_hits_both() -> None:
    base, model = [10.0, 30.0, 10.0, 10.0, 50.0], [5.0, 15.0, 5.0, 5.0, 25.0]
    assert noise.paired_ratios(base, model) == [2.0] * 5
    assert noise.ratio_summary(noise.paired_ratios(base, model)) == (2.0, 0.0)
    assert noise.relative_iqr(base) > noise.NOISE_THRESHOLD  # each series alone is noisy
    size = {"device": "cpu", "mode": "fwd", "dtype": "float32", "seq_len": 8, "batch": 2, "hidden": 4,
            "input_size": 4, "layers": 1}
    rows = [{**size, "model": "lstm", "ms": 10.0, "samples_ms": base},
            {**size, "model": "lstm-nomkldnn", "ms": 8.0, "samples_ms": [8.0, 24.0, 8.0, 8.0, 40.0]},
            {**size, "model": "sru", "ms": 5.0, "samples_ms": model}]
    attach_speedups(rows)
    assert [r["baseline"] for r in rows] == ["lstm-nomkldnn"] * 3  # the fastest LSTM configuration
    assert rows[2]["speedup_vs_lstm"] == pytest.approx(1.6) and rows[2]["speedup_iqr"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same rounds"):
        noise.paired_ratios([1.0], [1.0, 2.0])


def test_spread_is_iqr_from_four_samples_and_range_below() -> None:
    assert noise.spread([1.0, 2.0, 3.0]) == 2.0 and noise.spread([5.0]) == 0.0
    assert noise.spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0)  # torch's linear quantiles: 4 - 2
    assert noise.machine_loaded([0.5, 2.9], threads=2) is False and noise.machine_loaded([3.1], threads=2)

"""Tests of the parrnn-bench harness on tiny sizes (the numbers themselves are not checked)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from parrnn.experiments.bench import bench_command as cli
from parrnn.experiments.bench import presets
from parrnn.experiments.bench.models import BenchModel, ModelUnavailable, build_model, parse_model_name
from parrnn.experiments.bench.runner import (
    ROW_KEYS,
    BenchConfig,
    Sweep,
    attach_speedups,
    count_runs,
    make_step,
    recurrence_bytes,
    run_benchmark,
)
from parrnn.experiments.bench.targets import check_targets
from parrnn.experiments.bench.timing import peak_memory, time_callable

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

REQUIRED = ("model", "backend", "device", "mode", "dtype", "seq_len", "batch", "hidden", "layers", "ms",
            "tokens_per_s", "speedup_vs_lstm")
# One thread: tiny sizes gain nothing from two, and a busy machine cannot stall a thread barrier.
TINY = ["--seq-lens", "8,16", "--batch", "2", "--hidden", "8", "--layers", "1", "--repeats", "2",
        "--warmup", "1", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One CLI run on tiny sizes into a temporary directory (shared by the tests below)."""
    out = tmp_path_factory.mktemp("bench")
    models = "lstm,gru,sru-reference-v2,rec-reference-v1,sru-cuda-v2"
    if importlib.util.find_spec("sru") is not None:
        models += ",sru26"
    argv = ["--preset", "quick", "--models", models, *TINY, "--out", str(out)]
    assert cli.main(argv) == 0
    return out, models


def test_json_schema(smoke_run: tuple[Path, str]) -> None:
    out, _ = smoke_run
    payload = json.loads((out / "results.json").read_text())
    assert set(payload) == {"metadata", "rows", "skipped", "targets"}
    rows = payload["rows"]
    assert rows
    for row in rows:
        assert set(REQUIRED) <= set(row)
        assert list(row) == [*ROW_KEYS, "samples_ms"]
        assert row["ms"] > 0 and row["tokens_per_s"] > 0 and len(row["samples_ms"]) == row["repeats"]
        assert isinstance(row["noisy"], bool) and row["ms_iqr"] >= 0
    lstm = [r for r in rows if r["model"] == "lstm"]
    assert len(lstm) == 2 * 2  # two lengths x two modes
    assert all(r["speedup_vs_lstm"] == pytest.approx(1.0) for r in lstm)
    assert {r["model"] for r in rows} >= {"lstm", "gru", "sru-reference-v2", "rec-reference-v1"}
    assert all(r["bw_fraction"] is not None for r in rows if r["model"].startswith("rec-"))
    meta = payload["metadata"]
    for key in ("device_name", "cpu_model", "threads", "torch", "parrnn", "sru", "cupy", "git_commit",
                "command"):
        assert key in meta
    assert meta["command"].startswith("parrnn-bench ")
    machine = meta["machine"]  # every result names its CPU, libraries and matrix-product engine choices
    for key in ("cpu", "blas", "onednn", "threads", "gemm_engines", "gemm_choices", "gemm_pinned"):
        assert key in machine
    assert machine["cpu"]["model_name"] and meta["cpu_summary"].startswith(machine["cpu"]["model_name"])
    assert any(machine["gemm_choices"]) == any(ok for ok, _ in machine["gemm_engines"].values())  # SRU ran
    assert meta["copy_bytes_per_s"] > 0
    assert meta["threads"] == 1
    assert set(meta["load"]) == {"loaded", "max_1min_load", "threads", "samples"}
    assert meta["noisy_rows"] == sum(r["noisy"] for r in rows)


def test_unavailable_model_is_skipped_with_reason(smoke_run: tuple[Path, str]) -> None:
    out, _ = smoke_run
    skipped = json.loads((out / "results.json").read_text())["skipped"]
    if torch.cuda.is_available():
        pytest.skip("sru-cuda-v2 can run here")
    reasons = [s["reason"] for s in skipped if s["model"] == "sru-cuda-v2"]
    assert len(reasons) == 4 and all("cuda" in r for r in reasons)


def test_csv_markdown_and_plots_written(smoke_run: tuple[Path, str]) -> None:
    out, _ = smoke_run
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == list(ROW_KEYS)
    assert len(rows) == len(json.loads((out / "results.json").read_text())["rows"])
    assert "| model |" in (out / "results.md").read_text()
    assert "**CPU:**" in (out / "results.md").read_text()
    for name in ("throughput_vs_length.png", "speedup_vs_lstm.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize(("argv", "message"), [
    (["--models", "lstm,nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["--seq-lens", "abc"], "expected comma-separated positive integers"),
    (["--seq-lens", "0"], "positive"),
    (["--modes", "train"], "unknown mode 'train'"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
    (["--preset", "nope"], "invalid choice"),
    (["--threads", "0"], "positive integer"),
    (["--models", "sru-scan-v2"], "linear SRU only"),
])
def test_bad_arguments_give_clear_errors(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cuda_device_without_cuda_is_an_error(capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(SystemExit):
        cli.main(["--device", "cuda"])
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_dry_run_lists_the_plan(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--preset", "lstm-comparison", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "L=[256]" in out and "10 runs on cpu" in out


def test_old_preset_name_still_works_and_warns(capsys: pytest.CaptureFixture) -> None:
    with pytest.warns(FutureWarning, match="'issue3' is deprecated; use 'lstm-comparison'"):
        assert cli.main(["--preset", "issue3", "--dry-run"]) == 0
    assert "lstm-comparison: models=" in capsys.readouterr().out


def test_presets_are_valid_and_default_is_small() -> None:
    for name in presets.PRESET_NAMES:
        for sweep in presets.preset(name)["sweeps"]:
            sweep.validate()
    comparison = presets.preset("lstm-comparison")
    (sweep,) = comparison["sweeps"]
    assert (sweep.seq_lens, sweep.batches, sweep.hiddens, sweep.layers, sweep.dtypes, comparison["threads"]) == (
        [256], [32], [512], [2], ["float32"], 2)
    assert {"lstm", "lstm-nomkldnn", "sru26"} <= set(sweep.models)
    default = presets.preset("default")
    assert count_runs(BenchConfig(sweeps=default["sweeps"])) <= 24


def test_model_names() -> None:
    assert parse_model_name("sru") == parse_model_name("sru").__class__("sru", "sru", "auto", "v2")
    assert parse_model_name("sru-cpu-v1").backend == "cpu"
    assert parse_model_name("sliced-lstm").cell == "lstm"
    assert parse_model_name("rec-cuda-v2").family == "rec"
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("sru-gpu-v2")


def test_build_model_runs_each_family() -> None:
    for name in ("lstm", "lstm-nomkldnn", "lstm-cell", "gru", "gru-nomkldnn", "sru-reference-v2",
                 "rec-reference-v2", "qrnn", "mingru", "minlstm", "hgrn"):
        bm = build_model(name, input_size=6, hidden=4, layers=1, device="cpu", dtype=torch.float32)
        out = bm.run(*bm.make_inputs(5, 3, False))
        assert out.shape[:2] == (5, 3)
    with pytest.raises(ModelUnavailable, match="cuda"):  # no CUDA here, or a CUDA backend asked on the CPU
        build_model("sru-cuda-v2", input_size=4, hidden=4, layers=1, device="cpu", dtype=torch.float32)


def test_int_list_ranges() -> None:
    assert cli._int_list("64..512") == [64, 128, 256, 512]
    assert cli._int_list("3,5") == [3, 5]


def test_speedups_and_bytes() -> None:
    base = {"device": "cpu", "mode": "fwd", "dtype": "float32", "seq_len": 8, "batch": 2, "hidden": 4,
            "input_size": 4, "layers": 1}
    rows = [{**base, "model": "lstm", "ms": 10.0}, {**base, "model": "sru", "ms": 2.5},
            {**base, "seq_len": 16, "model": "sru", "ms": 1.0}, {**base, "model": "rec-cpu-v2", "ms": 1.0}]
    attach_speedups(rows)
    assert [r["speedup_vs_lstm"] for r in rows] == [1.0, 4.0, None, None]
    assert recurrence_bytes("fwd", torch.float32, 1) == 24
    assert recurrence_bytes("fwdbwd", torch.float32, 1) == 24 + 40


def test_streaming_target_is_checked() -> None:
    size = {"device": "cpu", "dtype": "float32", "batch": 1, "hidden": 512, "input_size": 512, "layers": 2,
            "mode": "stream"}
    rows = [{**size, "seq_len": length, "model": model, "ms": ms}
            for length, model, ms in ((1, "lstm", 1.0), (1, "sru", 0.4), (16, "lstm", 2.0), (16, "sru", 1.5))]
    attach_speedups(rows)
    results = check_targets(rows)
    assert [(r.group, r.case.split()[2], r.verdict) for r in results] == [
        ("streaming", "L=1", "PASS"), ("streaming", "L=16", "FAIL")]


def test_lstm_comparison_targets_are_checked() -> None:
    size = {"device": "cpu", "dtype": "float32", "seq_len": 256, "batch": 32, "hidden": 512,
            "input_size": 512, "layers": 2}
    rows = [{**size, "mode": mode, "model": model, "ms": ms} for mode, model, ms in (
        ("fwdbwd", "lstm", 645.0), ("fwdbwd", "sru26", 897.0), ("fwdbwd", "sru-cpu-v2", 290.0),
        ("fwd", "lstm", 172.0), ("fwd", "sru-cpu-v2", 130.0))]
    attach_speedups(rows)
    results = check_targets(rows)
    assert [(r.group, r.baseline, r.verdict) for r in results] == [
        ("lstm-comparison", "lstm", "PASS"), ("lstm-comparison", "lstm", "PASS"),  # 645 / 290 = 2.22 >= 2.2
        ("lstm-comparison", "sru26", "PASS"), ("lstm-comparison", "lstm", "FAIL")]  # fwd: 172 / 130 = 1.32 < 2
    assert results[2].value == pytest.approx(897 / 290)


def test_timing_and_memory_helpers() -> None:
    t = time_callable(lambda: torch.ones(1000).sum(), torch.device("cpu"), warmup=1, repeats=3,
                      min_sample_s=0.001)
    assert len(t.samples_ms) == 3 and t.median_ms > 0 and t.inner >= 1
    mem = peak_memory(lambda: torch.ones(1 << 22).add_(1), torch.device("cpu"))
    assert mem is None or mem >= 0


def test_run_benchmark_api_dedups_shared_sizes() -> None:
    sweeps = [Sweep(["lstm"], [4], [1], [4], layers=[1], modes=["fwd"], label="a"),
              Sweep(["lstm"], [4, 8], [1], [4], layers=[1], modes=["fwd"], label="b")]
    config = BenchConfig(sweeps=sweeps, repeats=1, warmup=0, memory=False, threads=1)
    assert count_runs(config) == 2
    threads = torch.get_num_threads()
    result = run_benchmark(config, progress=False)
    assert torch.get_num_threads() == threads  # restored
    assert [(r["seq_len"], r["sweep"]) for r in result.rows] == [(4, "a"), (8, "b")]


@pytest.mark.parametrize("name", ["srupp", "transformer"])
def test_srupp_and_transformer_models_are_causal(name: str) -> None:
    model = build_model(name, input_size=8, hidden=16, layers=2, device="cpu", dtype=torch.float32)
    model.module.eval()
    (x,) = model.make_inputs(6, 2, False)
    x2 = x.clone()
    x2[4:] = 3.0
    with torch.no_grad():
        out, out2 = model.run(x), model.run(x2)
    assert out.shape == (6, 2, 16)
    torch.testing.assert_close(out2[:4], out[:4])  # later steps never change earlier outputs
    assert not torch.allclose(out2[4:], out[4:])
    assert name in presets.preset("srupp")["sweeps"][0].models
def test_streaming_mode_carries_the_state() -> None:
    stream = presets.preset("streaming")
    (sweep,) = stream["sweeps"]
    assert (sweep.seq_lens, sweep.batches, sweep.hiddens, sweep.layers, sweep.modes) == (
        [1, 16], [1], [512], [2], ["stream"])
    assert {"lstm", "lstm-nomkldnn", "lstm-cell", "sru", "sru26"} <= set(sweep.models)

    class Counter(torch.nn.Module):  # returns (output, state + 1), records the state it was given
        def __init__(self) -> None:
            super().__init__()
            self.given: list[object] = []

        def forward(self, x: torch.Tensor, state: int | None = None) -> tuple[torch.Tensor, int]:
            self.given.append(state)
            return x, (state or 0) + 1

    counter = Counter()
    step = make_step(BenchModel(parse_model_name("lstm"), counter, lambda *a: (), lambda x: x), (torch.ones(1),),
                     "stream")
    for _ in range(3):
        step()
    assert counter.given == [None, 1, 2] and not counter.training
    x = torch.randn(8, 1, 4)
    with pytest.raises(ValueError, match="cannot stream"):
        make_step(build_model("sliced-gru", input_size=4, hidden=4, layers=1, device="cpu",
                              dtype=torch.float32), (x.float(),), "stream")
    sweeps = [Sweep(["lstm", "sru-cpu-v2"], [1, 2], [1], [8], layers=[2], modes=["stream"], label="s")]
    result = run_benchmark(BenchConfig(sweeps=sweeps, repeats=1, warmup=1, memory=False, threads=1),
                           progress=False)
    assert len(result.rows) == 4 and all("ms/step" in r["notes"] for r in result.rows)


def test_plot_axes_read_as_speedups() -> None:
    from parrnn.experiments.bench import plots

    assert [plots.ratio_label(v) for v in (0.125, 0.5, 1, 2, 4, 16, 128)] == [
        "0.125x", "0.5x", "1x", "2x", "4x", "16x", "128x"]
    assert [plots.count_label(v) for v in (500, 2e4, 1.5e6)] == ["500", "20k", "1.5M"]
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    rows = [{"model": m, "seq_len": 64, "speedup_vs_lstm": v} for m, v in (("lstm", 1.0), ("sru", 3.0))]
    plots._draw(ax, rows, "speedup_vs_lstm", "speedup")
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_yticklabels() if t.get_text()}
    plt.close(fig)
    assert labels and labels <= {"0.5x", "1x", "2x", "4x", "8x"} and "1x" in labels and "2x" in labels

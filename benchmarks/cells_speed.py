"""Speed of parrnn's MinGRU, MinLSTM, QRNN and HGRN layers against torch.nn.GRU / torch.nn.LSTM and the reference
``minGRU-pytorch`` 0.2.1 layer: forward (``torch.no_grad``) and forward+backward (a training step's cost:
``output.sum().backward()``, the input needs no gradient).

Every round times every model once in each mode, interleaved, so the ratios compare timings taken under the same
machine load; the report gives medians over the rounds with their interquartile range, the CPU's name, the thread
count and the load average before and after. ``nn.GRU``/``nn.LSTM`` are timed as torch runs them by default
(oneDNN on a CPU) and with oneDNN off; each ratio is taken against the faster of the two in that mode. A
"gemm floor" row times the MinGRU stack's matrix products alone (``x @ W`` per layer, the same products and
their backward), the least any layer of this shape can cost here.

    python benchmarks/cells_speed.py --threads 2 --rounds 7 --out benchmarks/results/<date>-<cpu>-cells-<commit>

The functions (`build_models`, `measure`, `markdown`) are importable by tests.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import parrnn  # noqa: E402
from parrnn.experiments.bench.report import cpu_model, git_commit  # noqa: E402
from parrnn.ops import gemm  # noqa: E402

#: (model, baseline) pairs whose ratio the report gives; "gemm floor" is a bound, not a model to beat
PAIRS = (("MinGRU", "nn.GRU"), ("MinGRU", "minGRU-pytorch"), ("MinGRU", "gemm floor"), ("MinLSTM", "nn.LSTM"),
         ("QRNN", "nn.LSTM"), ("HGRN", "nn.GRU"))
MODES = ("fwd", "fwdbwd")
#: the configurations a baseline is timed in; its ratio is against the fastest of them, per mode
BASELINE_CONFIGS = {"nn.GRU": ("nn.GRU", "nn.GRU (oneDNN off)"), "nn.LSTM": ("nn.LSTM", "nn.LSTM (oneDNN off)")}


class WithoutOneDNN(nn.Module):
    """``module`` run under ``torch.backends.mkldnn.flags(enabled=False)`` (torch's native RNN kernels); its
    backward follows the graph the forward recorded."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        with torch.backends.mkldnn.flags(enabled=False):
            return self.module(x)


class _Batch1st(nn.Module):
    """``minGRU-pytorch`` layers (batch first) applied in turn to time-major input."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor]:
        x = x.transpose(0, 1)
        for layer in self.layers:
            x = layer(x)
        return (x.transpose(0, 1),)


class GemmFloor(nn.Module):
    """The MinGRU stack's projections alone: per layer ``x @ W`` with ``W`` ``(D, 2H)``, keeping ``H`` columns."""

    def __init__(self, size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(size if i == 0 else hidden, 2 * hidden) / size**0.5)
                                        for i in range(layers))

    def forward(self, x: Tensor) -> tuple[Tensor]:
        length, batch, _ = x.shape
        for weight in self.weights:
            u = gemm.matmul(x.reshape(length * batch, -1), weight)
            x = u[:, :weight.size(1) // 2].reshape(length, batch, -1)
        return (x,)


def _mingru_pytorch(size: int, hidden: int, layers: int) -> nn.Module | None:
    target = Path(sys.prefix) / "mingru"  # scripts/bootstrap.sh installs it there
    if (target / "minGRU_pytorch").is_dir() and str(target) not in sys.path:
        sys.path.append(str(target))
    try:
        layer = importlib.import_module("minGRU_pytorch.minGRU").minGRU
    except ImportError:
        return None
    return _Batch1st([layer(size, expansion_factor=hidden / size) for _ in range(layers)])


def build_models(size: int, hidden: int, layers: int, seed: int = 0) -> dict[str, nn.Module]:
    """Every model of the comparison (minGRU-pytorch only where it imports)."""
    torch.manual_seed(seed)
    models: dict[str, nn.Module] = {
        "MinGRU": parrnn.MinGRU(size, hidden, layers),
        "MinLSTM": parrnn.MinLSTM(size, hidden, layers),
        "QRNN": parrnn.QRNN(size, hidden, layers),
        "HGRN": parrnn.HGRN(size, hidden, layers),
        "nn.GRU": nn.GRU(size, hidden, layers),
        "nn.LSTM": nn.LSTM(size, hidden, layers),
        "gemm floor": GemmFloor(size, hidden, layers),
    }
    models["nn.GRU (oneDNN off)"] = WithoutOneDNN(models["nn.GRU"])
    models["nn.LSTM (oneDNN off)"] = WithoutOneDNN(models["nn.LSTM"])
    reference = _mingru_pytorch(size, hidden, layers)
    if reference is not None:
        models["minGRU-pytorch"] = reference
    return models


def _step(model: nn.Module, x: Tensor, mode: str) -> Callable[[], None]:
    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwdbwd() -> None:
        model(x)[0].sum().backward()
        for p in model.parameters():
            p.grad = None

    return fwd if mode == "fwd" else fwdbwd


def measure(models: dict[str, nn.Module], length: int, batch: int, size: int, rounds: int,
            seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per call, ``samples[mode][model]``: one warm-up call each, then ``rounds`` rounds timing
    every model once per mode."""
    x = torch.randn(length, batch, size, generator=torch.Generator().manual_seed(seed))
    calls = {mode: {name: _step(model, x, mode) for name, model in models.items()} for mode in MODES}
    for per_mode in calls.values():
        for call in per_mode.values():
            call()
    samples: dict[str, dict[str, list[float]]] = {mode: {name: [] for name in models} for mode in MODES}
    for index in range(rounds):
        for mode, per_mode in calls.items():
            for name, call in per_mode.items():
                start = time.perf_counter()
                call()
                samples[mode][name].append((time.perf_counter() - start) * 1e3)
        print(f"round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict:
    """Medians and quartiles per mode and model, and each pair's ratio (baseline / model) per mode, a baseline
    with several configurations (`BASELINE_CONFIGS`) taken at its fastest in that mode (named in ``fastest``)."""
    medians = {mode: {name: statistics.median(v) for name, v in per.items()} for mode, per in samples.items()}
    quartiles = {mode: {name: _quartiles(v) for name, v in per.items()} for mode, per in samples.items()}
    fastest = {mode: {base: min((name for name in configs if name in medians[mode]), key=medians[mode].get)
                      for base, configs in BASELINE_CONFIGS.items() if base in medians[mode]} for mode in MODES}
    ratios = {f"{a} vs {b}": {mode: medians[mode][fastest[mode].get(b, b)] / medians[mode][a] for mode in MODES}
              for a, b in PAIRS if a in medians["fwd"] and b in medians["fwd"]}
    return {"median_ms": medians, "quartiles_ms": quartiles, "fastest": fastest, "ratios": ratios}


def markdown(result: dict) -> str:
    meta, summary = result["meta"], result["summary"]
    lines = [f"# Cells speed, {meta['date']}", "",
             f"CPU: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}; L={meta['length']}, "
             f"N={meta['batch']}, D=H={meta['size']}, {meta['layers']} layers, float32; median of "
             f"{meta['rounds']} interleaved rounds; load average {meta['load_before']:.2f} before, "
             f"{meta['load_after']:.2f} after (shared machine: read the ratios).", "",
             f"Command: `{meta['command']}`", "",
             "| model | fwd ms, median [IQR] | fwd+bwd ms, median [IQR] |", "|---|---:|---:|"]
    quartiles = summary.get("quartiles_ms")

    def cell(mode: str, name: str) -> str:
        text = f"{summary['median_ms'][mode][name]:.1f}"
        if quartiles is not None:
            low, high = quartiles[mode][name]
            text += f" [{low:.1f}-{high:.1f}]"
        return text

    for name in summary["median_ms"]["fwd"]:
        lines.append(f"| {name} | {cell('fwd', name)} | {cell('fwdbwd', name)} |")
    lines += ["", "| ratio (baseline time / model time) | fwd | fwd+bwd |", "|---|---:|---:|"]
    for pair, value in summary["ratios"].items():
        lines.append(f"| {pair} | {value['fwd']:.2f}x | {value['fwdbwd']:.2f}x |")
    fastest = summary.get("fastest")
    if fastest:
        lines += ["", "Baselines at their fastest configuration: " + "; ".join(
            f"{mode}: " + ", ".join(f"{base} = {name}" for base, name in per.items())
            for mode, per in fastest.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="input and hidden size (D = H)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    models = build_models(args.size, args.size, args.layers)
    samples = measure(models, args.length, args.batch, args.size, args.rounds)
    load_after = os.getloadavg()[0]
    result = {
        "meta": {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "machine": platform.machine(),
                 "threads": args.threads, "torch": torch.__version__, "length": args.length, "batch": args.batch,
                 "size": args.size, "layers": args.layers, "rounds": args.rounds, "load_before": load_before,
                 "load_after": load_after, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                 "gemm_engines": gemm.choices(), "commit": git_commit()},
        "samples_ms": samples,
        "summary": summarize(samples),
    }
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

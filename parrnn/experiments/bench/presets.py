"""Named benchmark configurations (``parrnn-bench --preset NAME``), named by what they measure.

Every preset runs nn.LSTM in each of its configurations worth trying at those sizes, and speed-ups are taken
against the fastest (see `parrnn.experiments.bench.runner`); docs/benchmarks.md lists sizes, models and purpose.

* ``quick``           -- tiny sizes, seconds: a smoke test of the harness.
* ``default``         -- what ``make bench`` runs (a few minutes on a 2-core CPU): nn.LSTM (oneDNN on and off),
  nn.GRU, parrnn SRU (auto backend) and sru 2.6 at N=32, D=H=512, 2 layers, L = 128 and 256, fp32, forward and
  forward+backward.
* ``lstm-comparison`` -- the CPU speed targets (`parrnn.experiments.bench.targets`): 2 layers, L=256, N=32,
  D=H=512, fp32, 2 threads; nn.LSTM (oneDNN on and off), nn.GRU, parrnn SRU on the ``cpu`` backend, sru 2.6.
  ``issue3`` is its deprecated old name.
* ``full``            -- the committed CPU sweep (about 15-20 minutes on a 2-core CPU): L (64 ... 4096) and
  batch (1, 8, 32), with SRU v1 and v2 and the SlicedRNNs (sru 2.6 only in ``lstm-comparison``/``default``).
* ``srupp``           -- SRU++ vs the causal Transformer of the same width and depth (and SRU, LSTM) at
  L = 512, 1024, 2048, 4096, N=8, D=H=512, 2 layers, fp32, forward and forward+backward.
* ``streaming``       -- streaming inference latency on CPU: N=1, D=H=512, 2 layers, one step and 16-step chunks
  per call (``stream`` mode: no_grad, the state carried from call to call); nn.LSTM as a layer with oneDNN on
  and off and as a loop of ``nn.LSTMCell``, parrnn SRU, sru 2.6; ``ms/step`` in the notes.
* ``gpu``             -- a CUDA device: two sizes in fp32 and bf16, an L sweep 128 ... 65536, SlicedRNN(gru) vs
  nn.GRU at T=32768, the v1 scan vs the sequential kernel at N=1, and the recurrence alone for bandwidth.
"""

from __future__ import annotations

import warnings
from typing import Any

from parrnn.experiments.bench.runner import Sweep

_CPU_MODELS = ["lstm", "lstm-nomkldnn", "gru", "sru", "sru26"]
# sru 2.6 is left out: its CPU backward is a Python loop (minutes at L=4096); lstm-comparison compares it
_FULL_MODELS = ["lstm", "lstm-nomkldnn", "gru", "sru-cpu-v2", "sru-cpu-v1", "sliced-gru", "sliced-sru"]
_GPU_MODELS = ["lstm", "gru", "sru-cuda-v2", "sru-cuda-v1", "sru26", "rec-cuda-v2"]


def _presets() -> dict[str, dict[str, Any]]:
    return {
        "quick": {"device": "cpu", "warmup": 1, "repeats": 3, "sweeps": [
            Sweep(_CPU_MODELS, [32, 64], [4], [64], label="quick")]},
        "default": {"device": "cpu", "warmup": 1, "repeats": 5, "max_case_s": 20.0, "sweeps": [
            Sweep(_CPU_MODELS, [128, 256], [32], [512], label="default")]},
        "lstm-comparison": {"device": "cpu", "threads": 2, "warmup": 2, "repeats": 10, "sweeps": [
            Sweep(["lstm", "lstm-nomkldnn", "gru", "sru-cpu-v2", "sru26"], [256], [32], [512],
                  label="lstm-comparison")]},
        "full": {"device": "cpu", "warmup": 1, "repeats": 3, "max_case_s": 10.0, "sweeps": [
            Sweep(_FULL_MODELS, [64, 256, 1024, 4096], [16], [512], label="length"),
            Sweep(_FULL_MODELS, [256], [1, 8, 32], [512], label="batch")]},
        "srupp": {"device": "cpu", "warmup": 1, "repeats": 3, "max_case_s": 30.0, "sweeps": [
            Sweep(["srupp", "transformer", "sru-cpu-v2", "lstm"], [512, 1024, 2048, 4096], [8], [512],
                  label="srupp")]},
        "streaming": {"device": "cpu", "threads": 2, "warmup": 20, "repeats": 21,
                      "sweeps": [Sweep(["lstm", "lstm-nomkldnn", "lstm-cell", "sru", "sru26"], [1, 16], [1], [512],
                                       modes=["stream"],
                                       label="streaming")]},
        "gpu": {"device": "cuda", "warmup": 2, "repeats": 20, "max_case_s": 10.0, "sweeps": [
            Sweep(_GPU_MODELS, [128], [32], [512], dtypes=["float32", "bfloat16"], label="gpu-small"),
            Sweep(_GPU_MODELS, [512], [64], [1024], dtypes=["float32", "bfloat16"], label="gpu-large"),
            Sweep(_GPU_MODELS + ["sliced-gru"], [128, 512, 2048, 8192, 32768, 65536], [8], [512],
                  label="length"),
            Sweep(["gru", "sliced-gru"], [32768], [8], [256], layers=[1], label="sliced"),
            Sweep(["sru-cuda-v1", "sru-scan-v1", "rec-cuda-v1", "rec-scan-v1"], [16384, 65536], [1], [512],
                  label="scan")]},
    }


PRESET_NAMES = ("default", "quick", "full", "lstm-comparison", "srupp", "streaming", "gpu")
#: Old names that still work, with a deprecation warning: old name -> current name.
DEPRECATED_NAMES = {"issue3": "lstm-comparison"}


def preset(name: str) -> dict[str, Any]:
    """A fresh copy of preset ``name``: ``sweeps`` plus `parrnn.experiments.bench.runner.BenchConfig` fields.

    A deprecated name (`DEPRECATED_NAMES`) gives its successor, with a ``FutureWarning`` (the category Python
    shows to end users by default).
    """
    if name in DEPRECATED_NAMES:
        warnings.warn(f"preset {name!r} is deprecated; use {DEPRECATED_NAMES[name]!r}", FutureWarning,
                      stacklevel=2)
        name = DEPRECATED_NAMES[name]
    presets = _presets()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
    return presets[name]

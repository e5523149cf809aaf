"""parrnn-bench: throughput benchmarks for parrnn's recurrences against torch.nn.LSTM / nn.GRU.

* `parrnn.bench.models`  -- the model factory (``lstm``, ``gru``, ``sru-<backend>-<v1|v2>``, ``sru26``,
  ``sliced-<cell>``, ``rec-<backend>-<v1|v2>``) behind one calling convention;
* `parrnn.bench.timing`  -- wall-clock (CPU) and CUDA-event timing, peak memory, copy bandwidth;
* `parrnn.bench.runner`  -- sweeps, speedups vs nn.LSTM measured in the same run;
* `parrnn.bench.targets` -- the speed targets of issues 3 and 10, checked against a run's rows;
* `parrnn.bench.report`  -- metadata, terminal/markdown tables, JSON, CSV and PNG plots;
* `parrnn.bench.presets` -- named sweeps (``default``, ``quick``, ``full``, ``issue3``, ``gpu``);
* `parrnn.bench.cli`     -- the ``parrnn-bench`` command (``python -m parrnn.bench.cli``).

This package imports no model library at import time, so it works (and reports why) even where a backend
or the ``sru`` package is missing.
"""

from parrnn.bench.runner import BenchConfig, BenchResult, Sweep, run_benchmark

__all__ = ["BenchConfig", "BenchResult", "Sweep", "run_benchmark"]

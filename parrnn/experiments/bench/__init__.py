"""parrnn-bench: throughput benchmarks for parrnn's recurrences against torch.nn.LSTM / nn.GRU.

* `parrnn.experiments.bench.models`  -- the model factory (``lstm``, ``gru``, ``sru-<backend>-<v1|v2>``, ``sru26``,
  ``sliced-<cell>``, ``rec-<backend>-<v1|v2>``) behind one calling convention;
* `parrnn.experiments.bench.timing`  -- wall-clock (CPU) and CUDA-event timing, peak memory, copy bandwidth;
* `parrnn.experiments.bench.runner`  -- sweeps, speedups vs nn.LSTM measured in the same run;
* `parrnn.experiments.bench.targets` -- the speed targets of issues 3 and 10, checked against a run's rows;
* `parrnn.experiments.bench.report`  -- metadata, terminal/markdown tables, JSON, CSV and PNG plots;
* `parrnn.experiments.bench.presets` -- named sweeps (``default``, ``quick``, ``full``, ``issue3``, ``gpu``);
* `parrnn.experiments.bench.bench_command`     -- the ``parrnn-bench`` command
  (``python -m parrnn.experiments.bench.bench_command``).

This package imports no model library at import time, so it works (and reports why) even where a backend
or the ``sru`` package is missing.
"""

from parrnn.experiments.bench.runner import BenchConfig, BenchResult, Sweep, run_benchmark

__all__ = ["BenchConfig", "BenchResult", "Sweep", "run_benchmark"]

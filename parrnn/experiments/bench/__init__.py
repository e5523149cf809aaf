"""parrnn-bench: throughput benchmarks for parrnn's recurrences against torch.nn.LSTM / nn.GRU.

* `parrnn.experiments.bench.models`  -- the model factory (``lstm``, ``lstm-nomkldnn``, ``lstm-cell``, ``gru``,
  ``sru-<backend>-<v1|v2>``, ``sru26``, ``sliced-<cell>``, ``rec-<backend>-<v1|v2>``) behind one calling
  convention;
* `parrnn.experiments.bench.timing`  -- interleaved rounds of wall-clock (CPU) or CUDA-event samples, peak memory, copy
  bandwidth;
* `parrnn.experiments.bench.noise`   -- spread, paired ratios, monotonicity and machine load: when a row is noisy;
* `parrnn.experiments.bench.runner`  -- sweeps, paired speed-ups vs the fastest nn.LSTM configuration of the same run,
  re-sampling and noise marks;
* `parrnn.experiments.bench.targets` -- the speed targets (``lstm-comparison``, ``streaming``, ``gpu``), judged only
  from trustworthy rows;
* `parrnn.experiments.bench.report`  -- metadata, terminal/markdown tables, JSON, CSV and PNG plots;
* `parrnn.experiments.bench.presets` -- named sweeps (``default``, ``quick``, ``full``, ``lstm-comparison``, ``srupp``,
  ``streaming``, ``gpu``);
* `parrnn.experiments.bench.bench_command` -- the ``parrnn-bench`` command
  (``python -m parrnn.experiments.bench.bench_command``).

This package imports no model library at import time, so it works (and reports why) even where a backend
or the ``sru`` package is missing.
"""

from parrnn.experiments.bench.runner import BenchConfig, BenchResult, Sweep, run_benchmark

__all__ = ["BenchConfig", "BenchResult", "Sweep", "run_benchmark"]

"""Tools for experiments with parrnn's layers: not part of the library, and never imported by ``import parrnn``.

* `parrnn.experiments.bench` -- throughput benchmarks (``parrnn-bench``: `bench.bench_command`);
* `parrnn.experiments.tasks` -- the long-sequence accuracy tasks and their models;
* `parrnn.experiments.training` -- the training loop behind ``parrnn-train`` and ``parrnn-compare``;
* `parrnn.experiments.train_commands` -- the ``parrnn-train``, ``parrnn-compare`` and ``parrnn-gradflow``
  command lines;
* `parrnn.experiments.gradient_flow` -- how far back the loss's gradient reaches (``parrnn-gradflow``);
* `parrnn.experiments.machine` -- which machine a result comes from (``python -m parrnn.experiments.machine``);
* `parrnn.experiments.allocator`, `parrnn.experiments.progress` -- the training loop's malloc tuning and
  progress bars.
"""

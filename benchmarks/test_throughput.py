"""pytest-benchmark regression suite: the parrnn-bench models at a few small sizes.

Run (not part of plain ``pytest``, whose testpaths is ``tests``)::

    pytest benchmarks --benchmark-only                         # run and print the table
    pytest benchmarks --benchmark-only --benchmark-autosave    # also save to .benchmarks/
    pytest benchmarks --benchmark-only --benchmark-compare     # compare with the last saved run
    pytest benchmarks --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=median:10%

Environment: ``PARRNN_BENCH_DEVICE`` (default ``cpu``; ``cuda`` on a GPU machine) and ``PARRNN_BENCH_THREADS``
(CPU threads, default 2). Models that cannot run here (no ``sru`` package, no CUDA, a backend that did not
build) are skipped with the reason. Each benchmark is grouped by size and mode, so the table puts every model
next to ``lstm``; ``extra_info`` carries tokens/s.
"""

from __future__ import annotations

import os

import pytest
import torch

from parrnn.experiments.bench.models import ModelUnavailable, build_model
from parrnn.experiments.bench.runner import make_step
from parrnn.experiments.bench.timing import set_threads, synchronize

pytestmark = pytest.mark.filterwarnings("ignore:Running SRU on CPU")

DEVICE = torch.device(os.environ.get("PARRNN_BENCH_DEVICE", "cpu"))
MODELS = ["lstm", "gru", "sru-cpu-v2", "sru-cpu-v1", "sru26", "sliced-gru", "sliced-lstm", "sliced-sru"]
if DEVICE.type == "cuda":
    MODELS = ["lstm", "gru", "sru-cuda-v2", "sru-cuda-v1", "sru26", "sliced-gru", "rec-cuda-v2"]
#: (seq_len, batch, hidden, layers)
SIZES = [(64, 8, 128, 2), (256, 16, 256, 2)]


@pytest.fixture(scope="module", autouse=True)
def _fixed_threads():
    before = torch.get_num_threads()
    set_threads(int(os.environ.get("PARRNN_BENCH_THREADS", "2")))
    yield
    set_threads(before)


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "L{}-N{}-H{}-l{}".format(*s))
@pytest.mark.parametrize("model", MODELS)
def test_throughput(benchmark, model: str, size: tuple[int, int, int, int], mode: str) -> None:
    """Median time of one forward (no_grad) or one forward+backward step."""
    seq_len, batch, hidden, layers = size
    try:
        bm = build_model(model, input_size=hidden, hidden=hidden, layers=layers, device=DEVICE,
                         dtype=torch.float32)
    except ModelUnavailable as exc:
        pytest.skip(str(exc))
    inputs = bm.make_inputs(seq_len, batch, mode == "fwdbwd" and bm.spec.family == "rec")
    step = make_step(bm, inputs, mode)

    def run() -> None:
        step()
        synchronize(DEVICE)

    benchmark.group = f"{DEVICE.type} {mode} L={seq_len} N={batch} H={hidden} layers={layers}"
    benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(model=model, mode=mode, seq_len=seq_len, batch=batch, hidden=hidden,
                                layers=layers, tokens_per_s=seq_len * batch / benchmark.stats.stats.median)

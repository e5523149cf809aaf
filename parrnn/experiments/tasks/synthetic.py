"""Synthetic memory tasks: the adding problem and copy memory, for any sequence length ``T``.

* **Adding** (Hochreiter & Schmidhuber 1997, the variant of Le et al. 2015): each step carries a value drawn
  from U(0, 1) and a marker; exactly two steps are marked, one in each half of the sequence. The target is the
  sum of the two marked values. Predicting the mean (1.0) gives MSE = Var(U1 + U2) = 1/6 ≈ 0.167.
* **Copy memory** (Arjovsky et al. 2016): ten symbols from {1..8}, then ``T - 1`` blanks (0), a delimiter (9)
  and ten more blanks; the model must output blanks and then reproduce the ten symbols at the last ten steps.
  Length ``T + 20``. Outputting blanks and then uniform guesses gives cross-entropy ``10 ln 8 / (T + 20)``.
"""

from __future__ import annotations

import math
import random

import torch

from parrnn.experiments.tasks.base import Example, GeneratedDataset, Task

ADDING_BASELINE = 1.0 / 6.0
COPY_SYMBOLS, COPY_BLANK, COPY_DELIMITER, COPY_VOCAB, COPY_LENGTH = 8, 0, 9, 10, 10


def copy_baseline(seq_len: int) -> float:
    """Cross-entropy of the memoryless strategy on copy memory, delay ``seq_len``: ``10 ln 8 / (T + 20)``."""
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (seq_len + 2 * COPY_LENGTH)


def adding_example(rng: random.Random, seq_len: int) -> Example:
    """One adding-problem example: inputs ``(T, 2)`` (value, marker) and the scalar target."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 for the adding problem, got {seq_len}")
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    values = torch.rand(seq_len, generator=gen)
    half = seq_len // 2
    first, second = rng.randrange(half), rng.randrange(half, seq_len)
    markers = torch.zeros(seq_len)
    markers[first] = markers[second] = 1.0
    return torch.stack([values, markers], dim=1), values[first] + values[second]


def copy_example(rng: random.Random, seq_len: int) -> Example:
    """One copy-memory example: input tokens ``(T + 20,)`` and per-step target tokens ``(T + 20,)``."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive for copy memory, got {seq_len}")
    symbols = torch.tensor([rng.randint(1, COPY_SYMBOLS) for _ in range(COPY_LENGTH)], dtype=torch.int64)
    total = seq_len + 2 * COPY_LENGTH
    inputs = torch.full((total,), COPY_BLANK, dtype=torch.int64)
    inputs[:COPY_LENGTH] = symbols
    inputs[seq_len + COPY_LENGTH - 1] = COPY_DELIMITER
    targets = torch.full((total,), COPY_BLANK, dtype=torch.int64)
    targets[-COPY_LENGTH:] = symbols
    return inputs, targets


def adding_task(seq_len: int = 1000, *, train_size: int = 1_000_000, test_size: int = 2000, seed: int = 0) -> Task:
    """The adding problem of length ``seq_len``; examples are generated on demand from ``seed``."""

    def make(rng: random.Random) -> Example:
        return adding_example(rng, seq_len)

    return Task(
        name="adding",
        input_size=2,
        num_outputs=1,
        readout="last",
        metric="mse",
        baseline=ADDING_BASELINE,
        train=GeneratedDataset(make, train_size, seed),
        test=GeneratedDataset(make, test_size, seed + 1_000_003, cache=True),
        description=f"adding problem, T={seq_len}",
    )


def copy_task(seq_len: int = 100, *, train_size: int = 1_000_000, test_size: int = 2000, seed: int = 0) -> Task:
    """Copy memory with delay ``seq_len`` (sequences of ``seq_len + 20`` tokens)."""

    def make(rng: random.Random) -> Example:
        return copy_example(rng, seq_len)

    return Task(
        name="copy",
        input_size=COPY_VOCAB,
        vocab_size=COPY_VOCAB,
        num_outputs=COPY_VOCAB,
        readout="every",
        metric="accuracy",
        metric_positions=COPY_LENGTH,
        baseline=copy_baseline(seq_len),
        train=GeneratedDataset(make, train_size, seed),
        test=GeneratedDataset(make, test_size, seed + 1_000_003, cache=True),
        description=f"copy memory, T={seq_len} (length {seq_len + 2 * COPY_LENGTH})",
    )

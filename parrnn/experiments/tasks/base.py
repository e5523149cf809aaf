"""What every accuracy task is made of: batches, datasets and the `Task` description.

A dataset is *indexed*: ``dataset.batch(indices)`` returns the examples at those indices. Generated datasets
compute example ``i`` from ``(seed, i)`` alone, so a batch depends only on the indices the trainer asks for --
which keeps training reproducible, resumable and splittable across distributed ranks without a data loader.

Shapes (``N`` batch, ``L`` sequence length, ``F`` features per step):

* ``Batch.inputs``  ``(N, L, F)`` float features, or ``(N, L)`` int64 token ids (``Task.vocab_size`` set).
* ``Batch.targets`` ``(N,)`` (one label/value per sequence) or ``(N, L)`` (one label per step).
* ``Batch.lengths`` ``(N,)`` int64 valid lengths when sequences are padded, else ``None``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

Example = tuple[Tensor, Tensor]


@dataclass
class Batch:
    """One batch of examples (see the module docstring for shapes)."""

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Batch(self.inputs.to(device), self.targets.to(device), lengths)


class SequenceDataset(Protocol):
    """An indexed dataset: ``len(ds)`` examples, ``ds.batch(indices)`` collates some of them."""

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> Batch: ...


def collate(examples: Sequence[Example], pad_value: float | int = 0) -> Batch:
    """Stack ``(input, target)`` pairs; pad along time (and report ``lengths``) when lengths differ."""
    inputs = [x for x, _ in examples]
    targets = torch.stack([y for _, y in examples])
    sizes = [x.shape[0] for x in inputs]
    if len(set(sizes)) == 1:
        return Batch(torch.stack(inputs), targets)
    padded = torch.nn.utils.rnn.pad_sequence(inputs, batch_first=True, padding_value=pad_value)
    return Batch(padded, targets, torch.tensor(sizes, dtype=torch.int64))


class TensorDataset:
    """Fixed-length examples held in two tensors (``inputs[i]``, ``targets[i]``)."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"inputs and targets must have the same length, got {inputs.shape[0]} and {targets.shape[0]}"
            )
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        return Batch(self.inputs[idx], self.targets[idx])


class ListDataset:
    """Variable-length examples held in a list; batches are padded with ``pad_value``."""

    def __init__(self, examples: Sequence[Example], pad_value: int = 0) -> None:
        self.examples, self.pad_value = list(examples), pad_value

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int]) -> Batch:
        return collate([self.examples[i] for i in indices], self.pad_value)


class Subset:
    """The examples of ``dataset`` at ``indices``, renumbered ``0 .. len(indices) - 1`` (a validation split
    carved from a training split, or the training part that is left)."""

    def __init__(self, dataset: SequenceDataset, indices: Sequence[int]) -> None:
        if not indices:
            raise ValueError("a subset needs at least one index")
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, indices: Sequence[int]) -> Batch:
        return self.dataset.batch([self.indices[i] for i in indices])


class GeneratedDataset:
    """``size`` examples computed on demand: example ``i`` is ``make(rng)`` with ``rng`` seeded by
    ``(seed, i)``.

    ``make`` receives a `random.Random`; examples are cached when ``cache`` is set (useful when
    generating is slow, e.g. ListOps).
    """

    def __init__(
        self,
        make: Callable[[random.Random], Example],
        size: int,
        seed: int,
        *,
        pad_value: int = 0,
        cache: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.make, self.size, self.seed, self.pad_value = make, size, seed, pad_value
        self._cache: dict[int, Example] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def example(self, index: int) -> Example:
        """Example ``index`` (always the same for the same seed)."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of {self.size}")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self.make(random.Random(f"{self.seed}:{index}"))
        if self._cache is not None:
            self._cache[index] = item
        return item

    def batch(self, indices: Sequence[int]) -> Batch:
        return collate([self.example(i) for i in indices], self.pad_value)


@dataclass
class Task:
    """A supervised sequence task: its data and how a model's outputs are scored.

    Attributes:
        name: task name (``"adding"``, ``"copy"``, ...).
        train, test: indexed datasets; ``test`` is the held-out split used for evaluation.
        valid: a validation split carved from the training data (`with_validation`), or ``None``; when set,
            evaluations during training read it and the test split is read once, at the end.
        input_size: features per time step (ignored when ``vocab_size`` is set: inputs are token ids).
        vocab_size: number of token ids for token inputs, else ``None``.
        num_outputs: 1 for regression, else the number of classes.
        readout: ``"last"`` -- one prediction per sequence from the last valid step;
            ``"every"`` -- one per step.
        metric: ``"mse"`` (regression, lower is better), ``"accuracy"`` (higher is better) or ``"bpc"`` (bits
            per character of a language model, lower is better).
        baseline: loss of the best input-independent guess (e.g. 0.167 for adding), if meaningful.
        metric_positions: for ``readout="every"``, score the metric only on the last
            ``metric_positions`` steps.
        max_length: longest sequence of a variable-length task: sliced models pad every batch to it, so that
            an example is cut into the same slices whatever batch it is in.
        stateful: the datasets are streams read in order (batch ``k`` continues batch ``k - 1``); the trainer
            feeds the segments in order and the model carries its state across them (see
            ``parrnn.experiments.tasks.charlm``).
    """

    name: str
    train: SequenceDataset
    test: SequenceDataset
    input_size: int
    num_outputs: int
    readout: Literal["last", "every"] = "last"
    metric: Literal["mse", "accuracy", "bpc"] = "accuracy"
    vocab_size: int | None = None
    baseline: float | None = None
    metric_positions: int | None = None
    max_length: int | None = None
    stateful: bool = False
    description: str = ""
    valid: SequenceDataset | None = None

    @property
    def higher_is_better(self) -> bool:
        """Whether larger metric values are better."""
        return self.metric == "accuracy"

    def loss(self, pred: Tensor, targets: Tensor) -> Tensor:
        """Mean loss: MSE for regression, cross-entropy (over sequences or over all steps) otherwise.

        ``pred`` is ``(N,)`` for regression, ``(N, C)`` or ``(N, L, C)`` for classification.
        """
        if self.metric == "mse":
            return F.mse_loss(pred, targets.to(pred.dtype))
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1))

    def metric_sum(self, pred: Tensor, targets: Tensor) -> tuple[float, int]:
        """``(sum, count)`` of the metric over a batch, so that batches can be pooled exactly."""
        if self.metric == "mse":
            return float(((pred - targets.to(pred.dtype)) ** 2).sum()), targets.numel()
        if self.metric == "bpc":
            nats = F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), targets.reshape(-1), reduction="sum")
            return float(nats) / math.log(2), targets.numel()
        if self.readout == "every" and self.metric_positions:
            pred, targets = pred[:, -self.metric_positions :], targets[:, -self.metric_positions :]
        correct = pred.argmax(-1) == targets
        return float(correct.sum()), correct.numel()


def with_validation(task: Task, fraction: float) -> Task:
    """``task`` with the last ``fraction`` of its training examples (segments, for streams) moved to ``valid``.

    The test split is untouched: choosing anything (a learning rate, a step) on ``valid`` never looks at it.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    size = len(task.train)
    n_valid = max(1, round(size * fraction))
    if n_valid >= size:
        raise ValueError(f"a training split of {size} leaves nothing to train on after {n_valid} for validation")
    train = Subset(task.train, range(size - n_valid))
    valid = Subset(task.train, range(size - n_valid, size))
    return replace(task, train=train, valid=valid,
                   description=f"{task.description}; validation: last {n_valid} of {size} training "
                               f"{'segments' if task.stateful else 'examples'}")


@dataclass
class TrivialBaseline:
    """The best input-independent predictor fitted on the training split, scored on ``split``.

    ``kind``: ``mean`` (regression: predict the training targets' mean), ``unigram`` (per-step tasks: predict
    the training token frequencies) or ``majority`` (classification: predict the class frequencies; its
    accuracy is the majority class's). ``loss`` is in the task's loss units (MSE or nats), ``metric`` in the
    task's metric.
    """

    kind: str
    loss: float
    metric: float
    metric_name: str
    split: str

    def describe(self) -> str:
        """One line for reports: ``unigram predictor: loss 3.21, bpc 4.63 (valid split)``."""
        return (f"{self.kind} predictor (fitted on train): loss {self.loss:.4g}, {self.metric_name} "
                f"{self.metric:.4g} on the {self.split} split")


def _targets(dataset: SequenceDataset, limit: int) -> Tensor:
    """The targets of the first ``limit`` examples (segments) of ``dataset``, concatenated along the batch."""
    count = min(limit, len(dataset))
    return torch.cat([dataset.batch(list(range(start, min(start + 256, count)))).targets
                      for start in range(0, count, 256)])


def trivial_baseline(task: Task, limit: int = 5000) -> TrivialBaseline:
    """The task's trivial baseline: fit on (up to ``limit`` examples of) the training split, score on the
    validation split (the test split when the task has none) with the task's own loss and metric."""
    split, held_out = ("valid", task.valid) if task.valid is not None else ("test", task.test)
    train_y, y = _targets(task.train, limit), _targets(held_out, limit)
    if task.metric == "mse":
        kind, pred = "mean", torch.full(y.shape, float(train_y.float().mean()))
    else:
        counts = torch.bincount(train_y.reshape(-1), minlength=task.num_outputs).double() + 1.0  # add-one
        log_p = (counts / counts.sum()).log().float()
        kind = "unigram" if task.readout == "every" else "majority"
        pred = log_p.expand(*y.shape, task.num_outputs)
    total, count = task.metric_sum(pred, y)
    return TrivialBaseline(kind, float(task.loss(pred, y)), total / count, task.metric, split)

"""Adding problem and copy memory: structure, determinism, baselines."""

import math
import random

import pytest
import torch

from parrnn.experiments.tasks import make_task
from parrnn.experiments.tasks.synthetic import ADDING_BASELINE, adding_example, copy_baseline, copy_example


@pytest.mark.parametrize("seq_len", [2, 7, 100])
def test_adding_example_structure(seq_len):
    x, y = adding_example(random.Random(3), seq_len)
    assert x.shape == (seq_len, 2) and y.shape == ()
    marked = x[:, 1].nonzero().flatten().tolist()
    assert len(marked) == 2 and marked[0] < seq_len // 2 <= marked[1]
    assert torch.isclose(y, x[marked, 0].sum())
    assert x[:, 0].min() >= 0.0 and x[:, 0].max() < 1.0


def test_adding_baseline_is_the_variance_of_the_target():
    task = make_task("adding", seq_len=20, test_size=4000)
    targets = task.test.batch(range(4000)).targets
    assert float(((targets - 1.0) ** 2).mean()) == pytest.approx(ADDING_BASELINE, abs=0.01)
    assert task.baseline == pytest.approx(0.1667, abs=1e-4)


def test_generated_data_is_a_function_of_seed_and_index():
    a, b = make_task("adding", seq_len=30, seed=5), make_task("adding", seq_len=30, seed=5)
    assert torch.equal(a.train.batch([3, 9]).inputs, b.train.batch([3, 9]).inputs)
    assert not torch.equal(a.train.batch([3]).inputs, a.train.batch([4]).inputs)
    assert not torch.equal(a.train.batch([3]).inputs, a.test.batch([3]).inputs)  # held-out split differs
    assert not torch.equal(a.train.batch([3]).inputs, make_task("adding", seq_len=30, seed=6).train.batch([3]).inputs)


def test_copy_example_structure():
    seq_len = 15
    x, y = copy_example(random.Random(0), seq_len)
    assert x.shape == y.shape == (seq_len + 20,)
    assert ((x[:10] >= 1) & (x[:10] <= 8)).all()
    assert x[seq_len + 9] == 9 and (x[10 : seq_len + 9] == 0).all() and (x[seq_len + 10 :] == 0).all()
    assert torch.equal(y[-10:], x[:10]) and (y[:-10] == 0).all()


def test_copy_baseline_and_metric_positions():
    assert copy_baseline(100) == pytest.approx(10 * math.log(8) / 120)
    task = make_task("copy", seq_len=10, test_size=8)
    batch = task.test.batch(range(8))
    perfect = torch.nn.functional.one_hot(batch.targets, 10).float() * 20
    assert task.metric_sum(perfect, batch.targets) == (80.0, 80)  # only the 10 recall steps are scored
    assert float(task.loss(perfect, batch.targets)) < 1e-6


def test_bad_lengths_are_rejected():
    with pytest.raises(ValueError, match="seq_len"):
        adding_example(random.Random(0), 1)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")

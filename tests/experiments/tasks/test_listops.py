"""ListOps: evaluator, generator (lengths, depth, labels) and tokenization."""

import random

import pytest
import torch

from parrnn.experiments.tasks import make_task
from parrnn.experiments.tasks.listops import TOKEN_ID, VOCAB, evaluate, generate_expression


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MIN 3 [MAX 8 1 ] 5 ]", 3),
        ("[MED 1 7 4 ]", 4),
        ("[MED 1 2 4 7 ]", 3),  # median 3.0 of an even count, rounded down
        ("[SM 9 8 [SM 5 ] ]", 2),
        ("7", 7),
    ],
)
def test_evaluate(expr, value):
    assert evaluate(expr.split()) == value


def test_evaluate_rejects_unbalanced():
    with pytest.raises(ValueError, match="unbalanced"):
        evaluate(["[MAX", "1", "2"])


def _depth(tokens):
    depth = deepest = 0
    for tok in tokens:
        depth += tok.startswith("[") - (tok == "]")
        deepest = max(deepest, depth)
    return deepest


def test_generator_respects_length_and_depth():
    rng = random.Random(0)
    for _ in range(20):
        tokens = generate_expression(rng)
        assert 500 <= len(tokens) <= 2000
        assert 1 <= _depth(tokens) <= 10
        assert 0 <= evaluate(tokens) <= 9
    short = generate_expression(random.Random(1), 10, 30)
    assert 10 <= len(short) <= 30


def test_task_batches_are_padded_with_lengths():
    task = make_task("listops", seq_len=20, max_len=60, train_size=16, test_size=4)
    batch = task.train.batch([0, 1, 2, 3])
    assert batch.inputs.dtype == torch.int64 and batch.lengths is not None
    assert batch.inputs.shape == (4, int(batch.lengths.max()))
    for row, n, label in zip(batch.inputs, batch.lengths, batch.targets, strict=True):
        tokens = [VOCAB[i] for i in row[:n].tolist()]
        assert evaluate(tokens) == int(label) and (row[n:] == TOKEN_ID["<pad>"]).all()
    assert task.vocab_size == len(VOCAB) == 16 and task.num_outputs == 10

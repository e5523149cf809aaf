"""Character-level LM task (parrnn/experiments/tasks/charlm.py): the text, stream batching, bits per character, and
language models that carry their state across segments."""

import math

import pytest
import torch

from parrnn.experiments.tasks import make_task
from parrnn.experiments.tasks.charlm import StreamDataset, charlm_task, encode, load_text
from parrnn.experiments.tasks.models import STATEFUL_MODEL_NAMES, LanguageModel, ModelSpec, build_model


def test_text_is_pythons_reference_prose():
    text = load_text()
    assert len(text) > 300_000
    assert 'The "assert" statement' in text and "exception" in text
    ids = encode(text[:1000])
    assert ids.dtype == torch.int64 and int(ids.max()) < 256
    assert sum(c.isalpha() or c.isspace() for c in text) > 0.8 * len(text)  # mostly words, not code or noise


def test_streams_are_contiguous_segments():
    ids = torch.arange(103)
    data = StreamDataset(ids, streams=3, seg_len=4)  # rows of 34 tokens -> 8 segments
    assert len(data) == 8
    a, b = data.batch([0]), data.batch([1])
    assert a.inputs.shape == a.targets.shape == (3, 4)
    torch.testing.assert_close(a.inputs[0], torch.arange(4))
    torch.testing.assert_close(a.inputs[1], torch.arange(34, 38))
    torch.testing.assert_close(a.targets, a.inputs + 1)  # next-token targets
    torch.testing.assert_close(b.inputs[:, 0], a.targets[:, -1])  # segment k + 1 continues segment k
    assert data.batch([0, 1]).inputs.shape == (6, 4)
    with pytest.raises(IndexError):
        data.batch([8])
    with pytest.raises(ValueError, match="too short"):
        StreamDataset(torch.arange(10), streams=3, seg_len=4)


def test_task_split_and_bits_per_character():
    task = make_task("charlm", seq_len=16, train_size=4, test_size=2, max_len=5000)
    assert task.stateful and task.metric == "bpc" and not task.higher_is_better
    assert task.train.batch([0]).inputs.shape == (4, 16) and task.test.batch([0]).inputs.shape == (2, 16)
    assert len(task.train) == (4500 // 4 - 1) // 16
    text = load_text()[:5000].encode()
    first_test = bytes(task.test.batch([0]).inputs[0, :16].tolist())
    assert text.index(first_test) >= 4500  # the test split is the end of the text
    targets = task.test.batch([0]).targets
    uniform = torch.zeros(*targets.shape, 256)
    total, count = task.metric_sum(uniform, targets)
    assert total / count == pytest.approx(8.0)  # log2(256) bits for a uniform guess
    assert task.loss(uniform, targets).item() == pytest.approx(8 * math.log(2))


@pytest.mark.parametrize("name", ["lstm", "gru", "sru", "srupp", "qrnn", "mingru", "minlstm", "hgrn"])
def test_state_carried_across_segments_equals_one_long_segment(name):
    """Two segments read one after the other give the predictions of their concatenation read at once."""
    torch.manual_seed(0)
    task = charlm_task(seg_len=6, streams=2, eval_streams=1, text=load_text()[:400])
    spec = ModelSpec(name=name, hidden=8, layers=2, embed_dim=6, sru_backend="reference")
    model = build_model(task, spec).double().eval()
    assert isinstance(model, LanguageModel)
    if name == "srupp":
        for layer in model.encoder.rnn.layers:
            torch.nn.init.constant_(layer.transform.alpha, 0.8)  # let attention (and so memory) count
    a, b = task.train.batch([0]).inputs, task.train.batch([1]).inputs
    with torch.no_grad():
        separate = torch.cat([model(a), model(b)], dim=1)
        model.reset_state()
        joint = model(torch.cat([a, b], dim=1))
    torch.testing.assert_close(separate, joint)


def test_transformer_context_is_one_segment():
    torch.manual_seed(0)
    task = charlm_task(seg_len=6, streams=2, eval_streams=1, text=load_text()[:400])
    model = build_model(task, ModelSpec(name="transformer", hidden=8, layers=1, embed_dim=6)).eval()
    b = task.train.batch([1]).inputs
    with torch.no_grad():
        model(task.train.batch([0]).inputs)
        after_a = model(b)
        model.reset_state()
        torch.testing.assert_close(model(b), after_a)
    assert set(STATEFUL_MODEL_NAMES) >= {"srupp", "transformer", "sru", "lstm"}


def test_sliced_models_cannot_carry_state():
    task = charlm_task(seg_len=6, streams=2, eval_streams=1, text=load_text()[:400])
    with pytest.raises(ValueError, match="cannot carry state"):
        build_model(task, ModelSpec(name="sliced-gru", hidden=8))

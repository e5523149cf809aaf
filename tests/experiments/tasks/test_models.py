"""Model wrappers: shapes per task kind, last-valid readout, padding invariance, sliced-model limits."""

import importlib.util

import pytest
import torch

import parrnn.compat.sru as compat
from parrnn.experiments.tasks import make_task
from parrnn.experiments.tasks.models import (
    MODEL_NAMES,
    ModelSpec,
    build_model,
    count_parameters,
    last_valid,
    set_memory_bias,
)

SPEC = ModelSpec(hidden=8, layers=1, embed_dim=6, slices=2, levels=1, sru_backend="reference")
HAVE_SLICED = importlib.util.find_spec("parrnn.sliced") is not None
needs_sliced = pytest.mark.skipif(not HAVE_SLICED, reason="parrnn.sliced not available yet")


def _models(names):
    return [pytest.param(n, marks=needs_sliced) if n.startswith("sliced") else n for n in names]


@pytest.mark.parametrize("name", _models(MODEL_NAMES))
def test_regression_and_classification_shapes(name):
    spec = ModelSpec(**{**vars(SPEC), "name": name})
    adding = make_task("adding", seq_len=12, test_size=4)
    batch = adding.test.batch(range(3))
    model = build_model(adding, spec)
    assert model(batch.inputs).shape == (3,) and count_parameters(model) > 0
    listops = make_task("listops", seq_len=8, max_len=20, train_size=4, test_size=4)
    batch = listops.train.batch(range(4))
    assert build_model(listops, spec)(batch.inputs, batch.lengths).shape == (4, 10)


@pytest.mark.parametrize("name", ["lstm", "gru", "sru", "sru-v1", "qrnn", "mingru", "minlstm", "hgrn"])
def test_per_step_outputs(name):
    task = make_task("copy", seq_len=5, test_size=2)
    batch = task.test.batch([0, 1])
    assert build_model(task, ModelSpec(**{**vars(SPEC), "name": name}))(batch.inputs).shape == (2, 25, 10)


@needs_sliced
def test_sliced_models_refuse_per_step_tasks():
    with pytest.raises(ValueError, match="output at every step"):
        build_model(make_task("copy", seq_len=5), ModelSpec(**{**vars(SPEC), "name": "sliced-gru"}))


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        build_model(make_task("adding", seq_len=5), ModelSpec(name="transformer"))


def test_last_valid():
    out = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3)
    assert torch.equal(last_valid(out, None), out[-1])
    assert torch.equal(last_valid(out, torch.tensor([2, 5])), torch.stack([out[1, 0], out[4, 1]]))


@pytest.mark.parametrize("name", _models(["gru", "sru", "qrnn", "hgrn", "sliced-gru", "sliced-sru"]))
def test_an_example_gets_the_same_prediction_in_any_batch(name):
    torch.manual_seed(0)
    task = make_task("listops", seq_len=8, max_len=30, train_size=4, test_size=4)
    model = build_model(task, ModelSpec(**{**vars(SPEC), "name": name})).eval()
    short, long = sorted((task.train.example(i)[0] for i in range(4)), key=len)[::3]
    alone = model(short.unsqueeze(0))
    batch = torch.nn.utils.rnn.pad_sequence([short, long], batch_first=True)
    together = model(batch, torch.tensor([len(short), len(long)]))
    assert torch.allclose(together[0], alone[0], atol=1e-5)


@pytest.mark.parametrize("name", _models(["lstm", "gru", "sru", "sliced-gru"]))
def test_memory_bias_sets_the_keep_gate_of_every_layer(name):
    task = make_task("adding", seq_len=8)
    model = build_model(task, ModelSpec(**{**vars(SPEC), "name": name, "layers": 2, "memory_bias": 4.0}))
    seen = 0
    for module in model.modules():
        if isinstance(module, torch.nn.LSTM | torch.nn.GRU):
            gate = slice(module.hidden_size, 2 * module.hidden_size)
            for layer in range(module.num_layers):
                assert torch.all(getattr(module, f"bias_ih_l{layer}")[gate] == 4.0)
                assert torch.all(getattr(module, f"bias_hh_l{layer}")[gate] == 0.0)
                seen += 1
        elif hasattr(module, "bias") and isinstance(getattr(module, "weight_c", None), torch.nn.Parameter):
            assert torch.all(module.bias[0] == 4.0) and not torch.all(module.bias[1] == 4.0)
            seen += 1
    assert seen >= 2


def test_memory_bias_reaches_the_forget_gate_in_sru_s_layout_too() -> None:
    """A `parrnn.compat.sru` cell keeps sru's flat bias: the forget half is set, not one element."""
    model = compat.SRU(4, 3, 2, bidirectional=True)
    set_memory_bias(model, 4.0)
    for cell in model.rnn_lst:
        assert torch.all(cell.bias[:cell.output_size] == 4.0) and torch.all(cell.bias[cell.output_size:] == 0.0)

"""The cell registry (parrnn.cells): every registered cell builds and follows its reference step, and everything that
lists cells -- SlicedRNN, parrnn-bench, the tasks -- accepts every registered name, including one registered here
(adding a cell is one file)."""

from __future__ import annotations

import pytest
import torch

import parrnn
from parrnn import cells
from parrnn.cells import cell_names, get_cell, reference_forward, register_cell
from parrnn.experiments.bench import models as bench_models
from parrnn.experiments.tasks import models as task_models

D, H = 3, 4
SHIPPED = ("qrnn", "mingru", "minlstm", "hgrn", "rglru")


def test_every_shipped_cell_is_registered_by_its_file() -> None:
    assert set(SHIPPED) <= set(cell_names())
    for name, cls in zip(SHIPPED, (parrnn.QRNN, parrnn.MinGRU, parrnn.MinLSTM, parrnn.HGRN, parrnn.RGLRU),
                         strict=True):
        cell = get_cell(name)
        assert cell.cls is cls and cell.reference_step.__module__ == cls.__module__  # the equations beside it


@pytest.mark.parametrize("name", cell_names())
def test_every_registered_cell_builds_and_matches_its_reference_step(name: str) -> None:
    cell = get_cell(name)
    torch.manual_seed(0)
    model = cell.build(D, H, 2).double()
    x = torch.randn(5, 2, D, dtype=torch.float64)
    out, state = model(x)
    assert out.shape == (5, 2, H)  # nn.GRU's shapes
    ref, ref_state = reference_forward(model, x)
    torch.testing.assert_close(out, ref)
    for got, want in zip(state if isinstance(state, tuple) else (state,),
                         ref_state if isinstance(ref_state, tuple) else (ref_state,), strict=True):
        torch.testing.assert_close(got, want)
    y, _ = model.step(x[0])
    torch.testing.assert_close(y, out[0])
    if cell.bidirectional:
        both = cell.build(D, H, 1, bidirectional=True).double()
        assert both(x)[0].shape == (5, 2, 2 * H)


@pytest.mark.parametrize("name", ["gru", "lstm", "sru", *cell_names()])
def test_sliced_rnn_accepts_every_registered_name(name: str) -> None:
    from parrnn import sliced

    assert name in sliced.CELLS
    torch.manual_seed(0)
    model = parrnn.SlicedRNN(D, H, slices=2, levels=1, cell=name, num_layers=2)
    out, h = model(torch.randn(7, 3, D), lengths=[7, 3, 1])
    assert out.shape == (2, 3, H) and h.shape == (3, H) and torch.isfinite(out).all()
    if name in cell_names() and not get_cell(name).bidirectional:
        with pytest.raises(ValueError, match="bidirectional"):
            parrnn.SlicedRNN(D, H, cell=name, bidirectional=True)


@pytest.mark.parametrize("name", cell_names())
def test_bench_and_tasks_list_every_registered_cell(name: str) -> None:
    assert name in bench_models.MODEL_PATTERNS and name in task_models.MODEL_NAMES
    assert name in task_models.STATEFUL_MODEL_NAMES
    bm = bench_models.build_model(name, input_size=D, hidden=H, layers=1, device="cpu", dtype=torch.float32)
    assert bm.run(*bm.make_inputs(5, 2, False)).shape == (5, 2, H)
    assert bench_models.parse_model_name(f"sliced-{name}").cell == name
    encoder = task_models.build_encoder(D, task_models.ModelSpec(name=name, hidden=H, layers=1))
    outputs, last = encoder(torch.randn(6, 2, D), torch.tensor([6, 2]))
    assert outputs.shape == (6, 2, H) and last.shape == (2, H)


class ToyCell(parrnn.MinGRU):
    """A cell defined in one place (here) and registered: nothing else is edited."""


def test_a_new_cell_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cells._REGISTRY, "toy", cells.Cell("toy", ToyCell, get_cell("mingru").reference_step,
                                                           get_cell("mingru").reference_readout))
    assert "toy" in cell_names()
    torch.manual_seed(0)
    model = parrnn.SlicedRNN(D, H, slices=2, levels=1, cell="toy")
    assert type(model.base) is ToyCell
    assert model(torch.randn(4, 2, D))[1].shape == (2, H)
    bm = bench_models.build_model("toy", input_size=D, hidden=H, layers=1, device="cpu", dtype=torch.float32)
    assert type(bm.module) is ToyCell
    encoder = task_models.build_encoder(D, task_models.ModelSpec(name="toy", hidden=H, layers=1))
    assert type(encoder.rnn) is ToyCell
    toy = ToyCell(D, H).double()
    x = torch.randn(3, 2, D, dtype=torch.float64)
    torch.testing.assert_close(toy(x)[0], reference_forward(toy, x)[0])


def test_registry_errors_are_named() -> None:
    with pytest.raises(KeyError, match="no cell named 'nope'; registered: .*rglru"):
        get_cell("nope")
    with pytest.raises(ValueError, match="already registered for QRNN"):
        register_cell("qrnn", ToyCell, reference_step=get_cell("qrnn").reference_step)
    with pytest.raises(ValueError, match="lower-case"):
        register_cell("Toy", ToyCell, reference_step=get_cell("qrnn").reference_step)
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_cell("toy", int, reference_step=get_cell("qrnn").reference_step)
    with pytest.raises(TypeError, match="reference_step must be callable"):
        register_cell("toy", ToyCell, reference_step=None)
    with pytest.raises(TypeError, match="not a registered cell"):
        reference_forward(torch.nn.GRU(D, H), torch.randn(2, 1, D))
    assert "toy" not in cell_names()

"""TorchScript: `torch.jit.script` of `SRU`, `SRUCell`, the `parrnn.compat.sru` classes and the linear-recurrence
cells (QRNN, MinGRU, MinLSTM, HGRN), compared with eager (values and gradients), and scripted models loaded in a
fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import parrnn
import parrnn.compat.sru as compat
from parrnn import SRU, SRUCell

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]

CONFIGS = [
    {},
    {"version": "v1"},
    {"bidirectional": True, "projection_size": [0, 3]},
    {"layer_norm": True, "normalize_after": True, "use_tanh": True},
    {"has_skip_term": False, "rescale": False, "batch_first": True},
    {"input_size": 5, "bidirectional": True, "version": "v1", "layer_norm": True},
]


@pytest.fixture(autouse=True)
def _cpu_backend() -> None:
    ok, why = parrnn.available_backends()["sru sequential"]
    if not ok:
        pytest.skip(f"TorchScript runs the fused kernel; the cpu backend is unavailable: {why}")


def _values_and_grads(model, args):
    """Output, c_n, and the gradients of a loss w.r.t. the float inputs and every parameter."""
    model.zero_grad()
    args = [a.clone().requires_grad_() if a is not None and a.is_floating_point() else a for a in args]
    out, c_n = model(*args)
    (out.sin().sum() + c_n.cos().sum()).backward()
    grads = [a.grad for a in args if a is not None and a.is_floating_point()]
    grads += [p.grad for p in model.parameters() if p.requires_grad]
    return [out.detach(), c_n.detach(), *grads]


def _assert_scripted_equals_eager(model, args) -> None:
    scripted = torch.jit.script(model)
    expected = _values_and_grads(model, args)
    got = _values_and_grads(scripted, args)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_scripted_sru_equals_eager_reference(config: dict) -> None:
    config = dict(config)
    input_size = config.pop("input_size", 6 if config.get("bidirectional") else 3)
    torch.manual_seed(0)
    model = SRU(input_size, 3, 2, backend="reference", **config).double()
    batch_first = config.get("batch_first", False)
    x = torch.randn(*((2, 5) if batch_first else (5, 2)), input_size, dtype=torch.float64)
    c0 = torch.randn(2, 2, model.output_size, dtype=torch.float64)
    mask = torch.zeros(*((2, 5) if batch_first else (5, 2)), dtype=torch.bool)
    mask[(1, slice(3, None)) if batch_first else (slice(3, None), 1)] = True
    _assert_scripted_equals_eager(model, [x])
    _assert_scripted_equals_eager(model, [x, c0, torch.tensor([5, 3])])
    _assert_scripted_equals_eager(model, [x, None, None, mask])


def test_scripted_cell_and_scan_backend() -> None:
    torch.manual_seed(0)
    cell = SRUCell(4, 3, bidirectional=True, backend="reference").double()
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    _assert_scripted_equals_eager(cell, [x, torch.randn(2, 6, dtype=torch.float64), torch.tensor([6, 2])])
    model = SRU(3, 3, 2, version="v1", backend="scan").double()
    expected = SRU(3, 3, 2, version="v1", backend="reference").double()
    expected.load_state_dict(model.state_dict())
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(torch.jit.script(model)(x), expected(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("options", [{}, {"bidirectional": True, "projection_size": 3, "v1": True},
                                     {"layer_norm": True, "rescale": True, "highway_bias": -2.0,
                                      "nn_rnn_compatible_return": True, "bidirectional": True}])
def test_scripted_compat_classes(options: dict) -> None:
    torch.manual_seed(0)
    model = compat.SRU(5, 4, 2, **options).double()
    x = torch.randn(6, 2, 5, dtype=torch.float64)
    mask = torch.zeros(6, 2)
    mask[4:, 0] = 1
    _assert_scripted_equals_eager(model, [x, None, mask])
    cell = compat.SRUCell(5, 4).double()
    _assert_scripted_equals_eager(cell, [x[0]])  # one step (N, D)
    _assert_scripted_equals_eager(cell, [x, None, mask])


def test_scripted_training_step_with_dropout_runs() -> None:
    model = torch.jit.script(SRU(4, 4, 2, dropout=0.2, rnn_dropout=0.1).train())
    out, c_n = model(torch.randn(5, 3, 4))
    (out.sum() + c_n.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


CELL_CONFIGS = [
    ("QRNN", {}),
    ("QRNN", {"window": 2, "pooling": "ifo", "bidirectional": True}),
    ("QRNN", {"window": 2, "pooling": "f", "zoneout": 0.2}),
    ("MinGRU", {"batch_first": True}),
    ("MinGRU", {"activation": "g", "output_projection_size": 4, "bidirectional": True}),
    ("MinLSTM", {"bidirectional": True}),
    ("HGRN", {}),
    ("HGRN", {"bidirectional": True, "lower_bound": False}),
]


def _cell_values_and_grads(model, x: torch.Tensor, hx, lengths):
    """Output, the final state's tensors, and the gradients of a loss w.r.t. ``x``, ``hx`` and every parameter."""
    model.zero_grad()
    x = x.clone().requires_grad_()
    states = [] if hx is None else ([hx] if isinstance(hx, torch.Tensor) else list(hx))
    states = [h.clone().requires_grad_() for h in states]
    state = None if hx is None else (states[0] if isinstance(hx, torch.Tensor) else tuple(states))
    out, h_n = model(x, state, lengths)
    finals = [h_n] if isinstance(h_n, torch.Tensor) else list(h_n)
    (out.sin().sum() + sum(f.cos().sum() for f in finals)).backward()
    grads = [x.grad, *(h.grad for h in states), *(p.grad for p in model.parameters() if p.requires_grad)]
    return [out.detach(), *(f.detach() for f in finals), *grads]


@pytest.mark.parametrize(("name", "options"), CELL_CONFIGS,
                         ids=[f"{n}-" + (",".join(f"{k}={v}" for k, v in o.items()) or "default")
                              for n, o in CELL_CONFIGS])
def test_scripted_cells_equal_eager(name: str, options: dict) -> None:
    """Forward (no state; a state and lengths) and backward of the scripted cell equal eager's."""
    torch.manual_seed(0)
    model = getattr(parrnn, name)(5, 4, 2, **options).double().eval()
    batch_first = options.get("batch_first", False)
    x = torch.randn(*((3, 6) if batch_first else (6, 3)), 5, dtype=torch.float64)
    _, hx = model(x)
    hx = torch.randn_like(hx) if isinstance(hx, torch.Tensor) else tuple(torch.randn_like(h) for h in hx)
    scripted = torch.jit.script(model)
    for args in ((None, None), (hx, torch.tensor([6, 2, 4]))):
        got = _cell_values_and_grads(scripted, x, *args)
        expected = _cell_values_and_grads(model, x, *args)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_scripted_cell_trains_with_dropout_and_zoneout() -> None:
    model = torch.jit.script(parrnn.QRNN(4, 4, 2, dropout=0.2, zoneout=0.1, window=2).train())
    out, (c_n, _) = model(torch.randn(5, 3, 4))
    (out.sum() + c_n.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_scripted_model_loads_in_a_fresh_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    models = {"sru": SRU(4, 5, 2, bidirectional=True, layer_norm=True).eval(),
              "compat": compat.SRU(4, 5, 2, rescale=True, highway_bias=-1.0).eval(),
              "qrnn": parrnn.QRNN(4, 5, 2, window=2).eval(), "hgrn": parrnn.HGRN(4, 5, 2).eval(),
              "mingru": parrnn.MinGRU(4, 5, 2, bidirectional=True).eval(), "minlstm": parrnn.MinLSTM(4, 5).eval()}
    x = torch.randn(6, 3, 4)
    for name, model in models.items():
        torch.jit.script(model).save(str(tmp_path / f"{name}.pt"))
        with torch.no_grad():
            torch.save(model(x), tmp_path / f"{name}_expected.pt")
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch, parrnn\n"
        "d = sys.argv[1]\n"
        "x = torch.load(d + '/x.pt')\n"
        "for name in sys.argv[2:]:\n"
        "    with torch.no_grad():\n"
        "        torch.save(torch.jit.load(d + f'/{name}.pt')(x), d + f'/{name}_got.pt')\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path), *models], cwd=ROOT, check=True, timeout=300)
    for name in models:
        got, expected = torch.load(tmp_path / f"{name}_got.pt"), torch.load(tmp_path / f"{name}_expected.pt")
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)

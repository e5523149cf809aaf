"""torch.onnx.export of SRU and SlicedRNN with dynamic length and batch, run in onnxruntime against eager.

Every model is exported at one (L, N) and run at other sizes; the graph must hold only standard ONNX ops (the
recurrence as a Scan), and onnxruntime's outputs must be within 1e-5 of eager PyTorch in float32.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

import parrnn

ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime (pip install parrnn[onnx])")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (pip install parrnn[onnx])")

ATOL = 1e-5


def export(model: torch.nn.Module, args: tuple, dynamic_shapes: dict) -> ort.InferenceSession:
    """Export ``model`` (in eval mode) with the dynamo exporter; check the graph; return an onnxruntime session."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, args, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False)
    nodes = program.model_proto.graph.node
    assert {n.domain for n in nodes} <= {""}, "the graph must hold standard ONNX ops only"
    assert "Scan" in {n.op_type for n in nodes}, "the recurrence must export as an ONNX Scan"
    return ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, *inputs: torch.Tensor) -> list[torch.Tensor]:
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def assert_matches_eager(got: list[torch.Tensor], expected: tuple) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= ATOL


# a small representative grid (each export takes seconds): every option appears, with 1-3 layers
SRU_CASES = {
    "v2-1layer": dict(num_layers=1),
    "v1-2layers-lengths": dict(num_layers=2, version="v1"),
    "v2-3layers-bidir-lengths": dict(num_layers=3, bidirectional=True),
    "v2-projection-layernorm": dict(num_layers=2, projection_size=3, layer_norm=True),
    "v1-bidir-projection-normafter-tanh": dict(num_layers=2, version="v1", bidirectional=True, projection_size=3,
                                               layer_norm=True, normalize_after=True, use_tanh=True),
    "v1-noskip-batchfirst": dict(num_layers=1, version="v1", has_skip_term=False, batch_first=True),
}


@pytest.mark.parametrize("name", list(SRU_CASES))
def test_sru_exports_with_dynamic_length_and_batch(name: str) -> None:
    torch.manual_seed(0)
    options = SRU_CASES[name]
    model = parrnn.SRU(5, 4, **options).eval()
    with_lengths = "lengths" in name
    time_dim, batch_dim = (1, 0) if model.batch_first else (0, 1)
    length, batch = Dim("L"), Dim("N")

    def sample(steps: int, n: int) -> torch.Tensor:
        shape = (n, steps, 5) if model.batch_first else (steps, n, 5)
        return torch.randn(shape)

    x = sample(6, 3)
    if with_lengths:
        session = export(model, (x, None, torch.tensor([6, 2, 4])),
                         {"input": {time_dim: length, batch_dim: batch}, "state": None, "lengths": {0: batch}})
    else:
        session = export(model, (x,), {"input": {time_dim: length, batch_dim: batch}})
    for steps, n in ((9, 4), (1, 1)):
        x = sample(steps, n)
        with torch.no_grad():
            if with_lengths:
                lengths = torch.randint(1, steps + 1, (n,))
                lengths[0] = steps
                assert_matches_eager(run(session, x, lengths), model(x, lengths=lengths))
            else:
                assert_matches_eager(run(session, x), model(x))


@pytest.mark.parametrize(("cell", "bidirectional", "num_layers", "levels"),
                         [("gru", False, 1, 2), ("gru", True, 2, 1), ("sru", False, 1, 1)])
def test_sliced_rnn_exports_with_dynamic_length_and_batch(cell: str, bidirectional: bool, num_layers: int,
                                                          levels: int) -> None:
    torch.manual_seed(0)
    model = parrnn.SlicedRNN(5, 4, slices=3, levels=levels, cell=cell, bidirectional=bidirectional,
                             num_layers=num_layers).eval()
    per = model.slices**model.levels  # the exported length is a multiple of slices**levels (no padding inside)
    session = export(model, (torch.randn(2 * per, 3, 5),), {"input": {0: per * Dim("m"), 1: Dim("N")}})
    for steps, n in ((5 * per, 4), (per, 1)):
        x = torch.randn(steps, n, 5)
        with torch.no_grad():
            assert_matches_eager(run(session, x), model(x))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_exported_sru_streams_with_c0(version: str) -> None:
    """An SRU exported with a c0 input runs chunk by chunk in onnxruntime, each chunk starting from the last
    chunk's c_n, and gives the whole sequence's eager output."""
    torch.manual_seed(0)
    model = parrnn.SRU(5, 4, num_layers=2, layer_norm=True, version=version).eval()
    batch = Dim("N")
    session = export(model, (torch.randn(6, 3, 5), torch.zeros(2, 3, 4)),
                     {"input": {0: Dim("L"), 1: batch}, "state": {1: batch}})
    x = torch.randn(17, 2, 5)
    with torch.no_grad():
        expected, c_expected = model(x)
    state, outputs = torch.zeros(2, 2, 4), []
    for chunk in x.split(5):
        out, state = run(session, chunk, state)
        outputs.append(out)
    assert_matches_eager([torch.cat(outputs), state], (expected, c_expected))


def test_torchscript_based_exporter_names_the_fix(tmp_path) -> None:
    model = parrnn.SRU(5, 4, num_layers=1).eval()
    with pytest.raises(RuntimeError, match="dynamo=True"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(3, 2, 5),), str(tmp_path / "m.onnx"), dynamo=False)


def _example_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "export_onnx.py"
    spec = importlib.util.spec_from_file_location("export_onnx_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lengths_outside_the_sequence_run_as_documented_and_the_example_refuses_them() -> None:
    """Issue 21: the graph does not check lengths. docs/deploying.md says what it does (a length above L runs as
    L; 0 or a negative length pads every step: output 0, c_n = c0); examples/export_onnx.py's check refuses them."""
    torch.manual_seed(0)
    model = parrnn.SRU(5, 4, num_layers=2, bidirectional=True).eval()
    session = export(model, (torch.randn(6, 2, 5), torch.zeros(2, 2, 8), torch.tensor([6, 3])),
                     {"input": {0: Dim("L"), 1: Dim("N")}, "state": {1: Dim("N")}, "lengths": {0: Dim("N")}})
    x, c0 = torch.randn(6, 2, 5), torch.randn(2, 2, 8)
    with torch.no_grad():
        out, c_n = run(session, x, c0, torch.tensor([7, 3]))
        assert_matches_eager([out, c_n], model(x, c0, lengths=torch.tensor([6, 3])))
        for bad in (0, -1):
            out, c_n = run(session, x, c0, torch.tensor([bad, 3]))
            expected = model(x, c0, lengths=torch.tensor([1, 3]))
            assert out[:, 0].abs().max() == 0 and torch.equal(c_n[:, 0], c0[:, 0])
            assert_matches_eager([out[:, 1:], c_n[:, 1:]], (expected[0][:, 1:], expected[1][:, 1:]))
    example = _example_module()

    def check(lengths: list[int]) -> None:
        example.check_inputs(x.numpy(), torch.zeros(2, 2, 4).numpy(), torch.tensor(lengths).numpy(), features=5,
                             hidden=4, layers=2)

    check([6, 1])
    for bad in ([7, 3], [0, 3], [-1, 3]):
        with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
            check(bad)

"""QRNN, MinGRU, MinLSTM and HGRN under torch.compile(fullgraph=True), torch.export (dynamic length and batch)
and torch.onnx.export run in onnxruntime at lengths and batches other than the exported ones."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

import parrnn

D, H = 3, 4
#: every cell once, the state-carrying QRNN window 2 bidirectional
MODELS = {
    "qrnn-window2-bidir": lambda: parrnn.QRNN(D, H, 2, window=2, bidirectional=True),
    "mingru-proj": lambda: parrnn.MinGRU(D, H, 2, output_projection_size=3),
    "minlstm-bidir": lambda: parrnn.MinLSTM(D, H, 2, bidirectional=True),
    "hgrn": lambda: parrnn.HGRN(D, H, 2),
}


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def first(state) -> torch.Tensor:
    return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("name", list(MODELS))
def test_compile_fullgraph_matches_eager_values_and_gradients(name: str) -> None:
    torch._dynamo.reset()
    model = make(name)
    x = torch.randn(6, 3, D)
    lengths = torch.tensor([6, 2, 5])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    out, state = compiled(x, lengths=lengths)
    eager, eager_state = model(x, lengths=lengths)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(first(state), first(eager_state))
    params = list(model.parameters())
    grads = torch.autograd.grad(out.square().sum(), params, allow_unused=True)
    eager_grads = torch.autograd.grad(eager.square().sum(), params, allow_unused=True)
    for got, want in zip(grads, eager_grads, strict=True):
        if want is not None:
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", list(MODELS))
def test_export_with_dynamic_length_and_batch(name: str) -> None:
    from parrnn.ops.linear_recurrence.op import backend_availability

    ok, why = backend_availability("sequential", "cpu", torch.float32)
    if not ok:
        pytest.skip(f"the fused CPU recurrence is unavailable: {why}")
    model = make(name).eval()  # backend "auto": chosen per call by the custom op, so the length stays unbounded
    batch = Dim("N")
    program = torch.export.export(model, (torch.randn(6, 3, D), None, torch.tensor([6, 2, 5])),
                                  dynamic_shapes={"input": {0: Dim("L"), 1: batch}, "state": None,
                                                  "lengths": {0: batch}})
    for steps, n in ((9, 4), (2, 1)):
        x, lengths = torch.randn(steps, n, D), torch.randint(1, steps + 1, (n,))
        out, state = program.module()(x, None, lengths)
        eager, eager_state = model(x, lengths=lengths)
        torch.testing.assert_close(out, eager)
        torch.testing.assert_close(first(state), first(eager_state))


# ---- ONNX ---------------------------------------------------------------------------------------------------------

def _onnx_session(model: torch.nn.Module, args: tuple, dynamic_shapes: dict):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime (pip install parrnn[onnx])")
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), args, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False)
    nodes = program.model_proto.graph.node
    assert {n.domain for n in nodes} <= {""}, "the graph must hold standard ONNX ops only"
    assert "Scan" in {n.op_type for n in nodes}, "the recurrence must export as an ONNX Scan"
    return ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(session, *inputs: torch.Tensor) -> list[torch.Tensor]:
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_export_runs_in_onnxruntime_at_other_lengths_and_batches(name: str) -> None:
    model = make(name)
    batch = Dim("N")
    session = _onnx_session(model, (torch.randn(6, 3, D), None, torch.tensor([6, 2, 4])),
                            {"input": {0: Dim("L"), 1: batch}, "state": None, "lengths": {0: batch}})
    for steps, n in ((11, 4), (1, 1)):
        x, lengths = torch.randn(steps, n, D), torch.randint(1, steps + 1, (n,))
        lengths[0] = steps
        with torch.no_grad():
            eager, state = model(x, lengths=lengths)
        got = _run(session, x, lengths)
        torch.testing.assert_close(got[0], eager, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], first(state), atol=1e-5, rtol=1e-5)


def test_onnx_exported_qrnn_window2_streams_chunks_with_its_state() -> None:
    """A QRNN with window 2 exported with its state (c, last input) runs chunk by chunk in onnxruntime and gives
    the whole sequence's eager output."""
    torch.manual_seed(0)
    model = parrnn.QRNN(D, H, 2, window=2).eval()
    batch = Dim("N")
    state0 = (torch.zeros(2, 2, H), torch.zeros(2, 2, H))
    session = _onnx_session(model, (torch.randn(5, 2, D), state0),
                            {"input": {0: Dim("L"), 1: batch}, "state": ({1: batch}, {1: batch})})
    x = torch.randn(13, 2, D)
    with torch.no_grad():
        expected, (c_n, x_n) = model(x)
    state, outputs = state0, []
    for chunk in x.split(4):
        out, c, last = _run(session, chunk, *state)
        outputs.append(out)
        state = (c, last)
    torch.testing.assert_close(torch.cat(outputs), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[1], x_n, atol=1e-6, rtol=1e-6)

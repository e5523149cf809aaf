"""Graph capture where a layer claims it (registry flags): ``torch.compile(fullgraph=True)``, ``torch.export``,
TorchScript and ONNX (run in onnxruntime) equal eager. Small sizes; the group is marked ``contract_graphs``
and stays under ~3 min on 2 cores."""

from __future__ import annotations

import warnings

import pytest
import torch

import parrnn

from .registry import BY_NAME, I, N, call, names

#: a multiple of every SlicedRNN's slices**levels (2): its exported graphs have no padding inside
L = 8

pytestmark = [pytest.mark.contract_graphs,
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]


def _eager(layer, model, x):
    with torch.no_grad():
        return call(layer, model, x)[0]


@pytest.mark.parametrize("name", names(compile=True))
def test_compile_fullgraph_equals_eager(name: str) -> None:
    torch._dynamo.reset()
    layer = BY_NAME[name]
    model = layer.make()
    x = torch.randn(L, N, I)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    out = compiled(x)[0]
    eager = call(layer, model, x)[0]
    torch.testing.assert_close(out, eager)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(out.square().sum(), params, allow_unused=True)
    want = torch.autograd.grad(eager.square().sum(), params, allow_unused=True)
    for g, w in zip(grads, want, strict=True):
        if w is not None:
            torch.testing.assert_close(g, w)


@torch.no_grad()
def test_compile_fullgraph_sru_v1_at_2_pow_23_elements() -> None:
    """The issue's reproduction: SRU v1 failed to compile once L*N*C >= 2^23 (a thread count read while
    tracing)."""
    torch._dynamo.reset()
    model = parrnn.SRU(8, 8, num_layers=1, version="v1").eval()
    x = torch.randn(2 ** 17, 8, 8)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x)[0], model(x)[0])


@pytest.mark.parametrize("name", names(export=True))
def test_torch_export_equals_eager(name: str) -> None:
    layer = BY_NAME[name]
    model = layer.make().eval()
    x = torch.randn(L, N, I)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x)[0], _eager(layer, model, x))


@pytest.mark.parametrize("name", names(torchscript=True))
def test_torchscript_equals_eager(name: str) -> None:
    layer = BY_NAME[name]
    model = layer.make().eval()
    x = torch.randn(L, N, I)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x)[0], _eager(layer, model, x))


@pytest.mark.parametrize("name", names(onnx=True))
def test_onnx_runs_in_onnxruntime_equal_to_eager(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    layer = BY_NAME[name]
    model = layer.make().eval()
    x = torch.randn(L, N, I)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), _eager(layer, model, x), atol=1e-5, rtol=1e-5)

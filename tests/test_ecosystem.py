"""parrnn layers inside the PyTorch ecosystem: torch.compile, torch.export, autocast, serialisation, .to()."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import parrnn
import parrnn.compat.sru as compat
from parrnn import SRU, SRUCell


def _cpu_backend_or_skip() -> None:
    ok, why = parrnn.available_backends()["sru sequential"]
    if not ok:
        pytest.skip(f"cpu backend unavailable: {why}")


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_torch_compile_fullgraph_matches_eager(version: str) -> None:
    _cpu_backend_or_skip()
    torch.manual_seed(0)
    model = SRU(8, 8, 2, bidirectional=True, version=version, backend="sequential")
    x = torch.randn(12, 3, 8, requires_grad=True)
    lengths = torch.tensor([12, 7, 3])
    out, c_n = model(x, lengths=lengths)
    grads = torch.autograd.grad(out.square().sum() + c_n.sum(), [x, *model.parameters()])

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out_c, c_n_c = compiled(x, lengths=lengths)
    grads_c = torch.autograd.grad(out_c.square().sum() + c_n_c.sum(), [x, *model.parameters()])
    torch.testing.assert_close(out_c, out)
    torch.testing.assert_close(c_n_c, c_n)
    for got, expected in zip(grads_c, grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_torch_compile_inductor_forward_backward() -> None:
    _cpu_backend_or_skip()
    torch.manual_seed(1)
    model = SRU(6, 6, 1, backend="sequential")
    x = torch.randn(9, 2, 6, requires_grad=True)
    expected = model(x)[0]
    compiled = torch.compile(model, fullgraph=True)
    got = compiled(x)[0]
    got.sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_torch_export_sru() -> None:
    _cpu_backend_or_skip()
    model = SRU(5, 5, 2, backend="sequential").eval()
    x = torch.randn(7, 2, 5)
    exported = torch.export.export(model, (x,))
    assert "parrnn.sru_forward" in str(exported.graph)
    torch.testing.assert_close(exported.module()(x)[0], model(x)[0])


def _compat_stack(backend: str) -> torch.nn.Module:
    model = compat.SRU(16, 16, 2, layer_norm=True)
    for cell in model.rnn_lst:
        cell.backend = backend
    return model


AUTOCAST_STACKS = {
    "SRU": lambda backend: SRU(16, 16, 2, layer_norm=True, backend=backend),
    "SRUpp": lambda backend: parrnn.SRUpp(16, 16, 8, 2, layer_norm=True, backend=backend),
    "compat.SRU": _compat_stack,
}


@pytest.mark.parametrize("kind", AUTOCAST_STACKS)
@pytest.mark.parametrize("backend", ["sequential", "reference"])
def test_autocast_bfloat16_keeps_float32_accumulation(backend: str, kind: str) -> None:
    if backend == "sequential":
        _cpu_backend_or_skip()
    torch.manual_seed(2)
    model = AUTOCAST_STACKS[kind](backend)
    x = torch.randn(40, 4, 16)
    expected, expected_c = model(x)[:2]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, c_n = model(x)[:2]
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert c_n.dtype == torch.float32  # the state stays float32 (parrnn._validation.keeps_float32)
    # documented tolerance (docs/usage.md): bf16 storage of U and h, float32 recurrence -> about 3e-2 absolute
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=6e-2)
    torch.testing.assert_close(c_n.float(), expected_c, rtol=0, atol=6e-2)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_state_dict_round_trip_deepcopy_and_pickle() -> None:
    torch.manual_seed(3)
    model = SRU(4, 6, 2, projection_size=3, layer_norm=True, highway_bias=-1.0).eval()
    x = torch.randn(5, 2, 4)
    expected = model(x)[0]

    fresh = SRU(4, 6, 2, projection_size=3, layer_norm=True, highway_bias=-1.0).eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x)[0], expected)

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh(x)[0], expected)

    torch.testing.assert_close(copy.deepcopy(model)(x)[0], expected)
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x)[0], expected)


def test_to_dtype_and_back_keeps_working() -> None:
    torch.manual_seed(4)
    model = SRU(4, 4, 2)
    x = torch.randn(6, 3, 4)
    expected = model(x)[0]
    model.to(torch.float64)
    torch.testing.assert_close(model(x.double())[0].float(), expected, rtol=1e-5, atol=1e-5)
    model.to(torch.bfloat16)
    assert model(x.bfloat16())[0].dtype == torch.bfloat16
    model.to(torch.float32)
    assert model(x)[0].dtype == torch.float32


@pytest.mark.gpu
def test_to_cuda_and_back() -> None:
    model = SRU(4, 4, 2)
    x = torch.randn(6, 3, 4)
    expected = model(x)[0]
    model.cuda()
    torch.testing.assert_close(model(x.cuda())[0].cpu(), expected, rtol=1e-5, atol=1e-5)
    model.cpu()
    torch.testing.assert_close(model(x)[0], expected)


# ---- SlicedRNN -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["sru", "gru"])
def test_sliced_rnn_torch_compile_fullgraph(cell: str) -> None:
    if cell == "sru":
        _cpu_backend_or_skip()
    torch.manual_seed(5)
    model = parrnn.SlicedRNN(6, 6, slices=4, levels=2, cell=cell)
    x = torch.randn(64, 3, 6, requires_grad=True)
    out, h = model(x)
    (g_eager,) = torch.autograd.grad(h.square().sum(), [x])
    # nn.GRU/nn.LSTM need Dynamo's allow_rnn (a PyTorch limitation); parrnn.SRU compiles as it is
    with torch._dynamo.config.patch(allow_rnn=cell != "sru"):
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out_c, h_c = compiled(x)
        (g_c,) = torch.autograd.grad(h_c.square().sum(), [x])
    torch.testing.assert_close(out_c, out)
    torch.testing.assert_close(h_c, h)
    torch.testing.assert_close(g_c, g_eager)


def test_sliced_rnn_accepts_packed_sequence() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(6)
    model = parrnn.SlicedRNN(3, 5, slices=2, levels=2, cell="gru")
    x = torch.randn(11, 3, 3)
    lengths = torch.tensor([11, 4, 7])
    out, h = model(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out_ref, h_ref = model(x, lengths=lengths)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(out, out_ref)
    with pytest.raises(ValueError, match="PackedSequence"):
        model(pack_padded_sequence(x, lengths, enforce_sorted=False), lengths=lengths)


def _compat_cell(hidden: int, backend: str) -> torch.nn.Module:
    cell = compat.SRUCell(hidden, hidden, highway_bias=-2.0)
    cell.backend = backend
    return cell


# every layer kind follows the one mixed-precision policy (parrnn._validation.keeps_float32)
AUTOCAST_LAYERS = {
    "SRUCell": lambda hidden, backend: SRUCell(hidden, hidden, backend=backend),
    "SRUppCell": lambda hidden, backend: parrnn.SRUppCell(hidden, hidden, 8, backend=backend),
    "compat.SRUCell": _compat_cell,
}


@pytest.mark.parametrize("layer", AUTOCAST_LAYERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["sequential", "reference"])
def test_autocast_parameter_gradients_do_not_overflow(backend: str, dtype: torch.dtype, layer: str) -> None:
    """weight_c, bias and c0 stay float32 under autocast: their gradients (sums over L*N steps, scaled like a
    GradScaler loss) exceed float16's 65504 yet come back finite, float32 and close to the float32 run's."""
    if backend == "sequential":
        _cpu_backend_or_skip()
    torch.manual_seed(0)
    length, batch, hidden = (1000, 16, 16) if backend == "sequential" else (200, 16, 16)
    cell = AUTOCAST_LAYERS[layer](hidden, backend)
    x = torch.randn(length, batch, hidden)
    c0 = torch.randn(batch, hidden, requires_grad=True)

    def run(autocast: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cell.zero_grad()
        c0.grad = None
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            h, c_n = cell(x, c0)[:2]
            loss = 4096.0 * (h.float().sum() + c_n.float().sum())
        loss.backward()
        return {"c0": c0.grad.clone(), **{n: p.grad.clone() for n, p in cell.named_parameters()}}, c_n

    want, c_want = run(False)
    got, c_n = run(True)
    assert c_n.dtype == torch.float32  # the state dtype (c0's), not the 16-bit activations'
    torch.testing.assert_close(c_n, c_want, rtol=0, atol=6e-2)
    assert want["bias"].abs().max() > 65504  # the float32 gradient would overflow float16
    rtol = 2e-3 if dtype == torch.float16 else 2e-2
    for name in ("weight_c", "bias", "c0"):  # (the projection weight's gradient is autocast's 16-bit matmul)
        g = got[name]
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        assert ((g - want[name]).norm() / want[name].norm()).item() < rtol, name

"""parrnn.ops.gru_rows.fused_cpu: the many-rows CPU GRU equals torch.nn.GRU (values and gradients, float64
gradcheck) for
every layout, direction, depth and bias setting, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from parrnn.ops import registry
from parrnn.ops.gru_rows.fused_cpu import fast_gru_applies, gru_rows, step_kernels


@pytest.fixture(params=["kernels", "torch-ops"], autouse=True)
def steps_impl(request, monkeypatch) -> str:
    """Every test runs with the fused C++ step kernels and with the torch-ops fallback."""
    if request.param == "torch-ops":
        monkeypatch.setenv("PARRNN_GRU_KERNELS", "0")
        assert step_kernels(torch.float32) is None
    else:
        monkeypatch.delenv("PARRNN_GRU_KERNELS", raising=False)
        if step_kernels(torch.float32) is None:
            pytest.skip("the C++ CPU library does not build here")
    return request.param


def _rows_reference(rnn: nn.GRU, x4: Tensor) -> tuple[Tensor, Tensor]:
    """nn.GRU over the rows of ``x4`` ``(S, L, B, F)``: outputs ``(S, L, B, dirs*H)``, finals ``(S*B, dirs*H)``."""
    num_slices, steps, batch, feat = x4.shape
    rows = x4.permute(1, 0, 2, 3).reshape(steps, num_slices * batch, feat)
    out, h_n = rnn(rows)
    dirs = 2 if rnn.bidirectional else 1
    finals = torch.cat(list(h_n[-dirs:]), dim=1)
    return out.view(steps, num_slices, batch, -1).permute(1, 0, 2, 3), finals


def _gru(feat: int, hidden: int, dtype: torch.dtype, **kwargs) -> nn.GRU:
    torch.manual_seed(0)
    rnn = nn.GRU(feat, hidden, **kwargs).to(dtype)
    with torch.no_grad():  # non-trivial biases (nn.GRU starts them small and symmetric)
        for name, p in rnn.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-1, 1)
    return rnn


CASES = [  # (S, L, B, layers, bidirectional, bias)
    (1, 5, 7, 1, False, True),
    (3, 4, 2, 1, False, True),
    (3, 4, 2, 2, True, True),
    (2, 1, 3, 1, True, True),  # one step
    (4, 6, 1, 2, False, False),
    (1, 3, 5, 3, True, False),
]


@pytest.mark.parametrize(("slices", "steps", "batch", "layers", "bidirectional", "bias"), CASES)
def test_values_and_gradients_match_nn_gru(slices, steps, batch, layers, bidirectional, bias) -> None:
    rnn = _gru(3, 4, torch.float64, num_layers=layers, bidirectional=bidirectional, bias=bias)
    x4 = torch.randn(slices, steps, batch, 3, dtype=torch.float64, requires_grad=True)
    out, finals = gru_rows(rnn, x4, need_output=True)
    want_out, want_finals = _rows_reference(rnn, x4)
    torch.testing.assert_close(out, want_out, atol=1e-12, rtol=0)
    torch.testing.assert_close(finals, want_finals, atol=1e-12, rtol=0)

    weights = torch.randn_like(out)
    params = list(rnn.parameters())
    loss = (out * weights).sum() + finals.square().sum()
    got = torch.autograd.grad(loss, [x4, *params])
    want_loss = (want_out * weights).sum() + want_finals.square().sum()
    want = torch.autograd.grad(want_loss, [x4, *params])
    for g, w, name in zip(got, want, ["x", *[n for n, _ in rnn.named_parameters()]], strict=True):
        torch.testing.assert_close(g, w, atol=1e-11, rtol=0, msg=f"gradient of {name}")


def test_sequence_order_view_and_float32() -> None:
    """A contiguous (S*L, B, F) sequence viewed as (S, L, B, F) (SlicedRNN's full-slice case), float32."""
    rnn = _gru(5, 8, torch.float32, num_layers=2)
    seq = torch.randn(6 * 4, 3, 5, requires_grad=True)
    x4 = seq.view(6, 4, 3, 5)
    out, finals = gru_rows(rnn, x4, need_output=True)
    want_out, want_finals = _rows_reference(rnn, x4)
    torch.testing.assert_close(out, want_out, atol=2e-6, rtol=0)
    torch.testing.assert_close(finals, want_finals, atol=2e-6, rtol=0)
    finals.sum().backward()
    grad_fast = seq.grad.clone()
    seq.grad = None
    want_finals.sum().backward()
    torch.testing.assert_close(grad_fast, seq.grad, atol=2e-6, rtol=0)


@pytest.mark.parametrize("block_steps", [1, 2])
@pytest.mark.parametrize("layout", ["sequence", "rows"])
def test_input_projection_in_blocks_of_steps(monkeypatch, block_steps, layout) -> None:
    """Long inputs get their input projection a block of steps at a time (a partial last block, read in reverse
    by the backward direction; copied when the block is not contiguous time-major): same values and gradients."""
    import parrnn.ops.gru_rows.fused_cpu as module

    slices, steps, batch, feat, hidden = (3, 5, 2, 3, 4) if layout == "sequence" else (1, 5, 6, 3, 4)
    monkeypatch.setattr(module, "BLOCK_ELEMENTS", block_steps * slices * batch * 3 * hidden)
    rnn = _gru(feat, hidden, torch.float64, num_layers=2, bidirectional=True)
    if layout == "sequence":  # (S*L, B, F) viewed as (S, L, B, F): blocks of steps are copied
        x4 = torch.randn(slices * steps, batch, feat, dtype=torch.float64).view(slices, steps, batch, feat)
    else:  # rows (L, R, F): time-major blocks are read in place
        x4 = torch.randn(steps, batch, feat, dtype=torch.float64).unsqueeze(0)
    x4.requires_grad_()
    out, finals = gru_rows(rnn, x4, need_output=True)
    want_out, want_finals = _rows_reference(rnn, x4)
    torch.testing.assert_close(out, want_out, atol=1e-12, rtol=0)
    torch.testing.assert_close(finals, want_finals, atol=1e-12, rtol=0)
    got = torch.autograd.grad(out.sum() + finals.square().sum(), [x4, *rnn.parameters()])
    want = torch.autograd.grad(want_out.sum() + want_finals.square().sum(), [x4, *rnn.parameters()])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-11, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(gru_rows(rnn, x4, need_output=False)[1], want_finals, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradcheck_float64(bidirectional) -> None:
    rnn = _gru(2, 3, torch.float64, num_layers=2, bidirectional=bidirectional)
    names = [n for n, _ in rnn.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in rnn.parameters())
    x4 = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x4: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        with torch.nn.utils.stateless._reparametrize_module(rnn, dict(zip(names, params, strict=True))):
            out, finals = gru_rows(rnn, x4, need_output=True)
        return out, finals

    assert torch.autograd.gradcheck(fn, (x4, *params), eps=1e-6, atol=1e-7)


def test_inference_without_outputs_matches() -> None:
    """Under no_grad with need_output=False only two steps of state are kept: same final states."""
    rnn = _gru(3, 4, torch.float32, num_layers=2, bidirectional=True)
    x4 = torch.randn(3, 9, 2, 3)
    with torch.no_grad():
        out, finals = gru_rows(rnn, x4, need_output=False)
        want = _rows_reference(rnn, x4)[1]
    assert out is None
    torch.testing.assert_close(finals, want, atol=2e-6, rtol=0)


def test_applies_only_where_it_is_exact() -> None:
    x = torch.randn(4, 2, 3)
    assert fast_gru_applies(nn.GRU(3, 4), x)
    assert fast_gru_applies(nn.GRU(3, 4, num_layers=2, dropout=0.5).eval(), x)
    assert not fast_gru_applies(nn.GRU(3, 4, num_layers=2, dropout=0.5), x)  # dropout active in training
    assert not fast_gru_applies(nn.GRU(3, 4, batch_first=True), x)
    assert not fast_gru_applies(nn.LSTM(3, 4), x)
    assert not fast_gru_applies(nn.GRU(3, 4), x.double())  # dtype differs from the weights
    assert not fast_gru_applies(nn.GRU(3, 4).bfloat16(), x.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fast_gru_applies(nn.GRU(3, 4), x)


def test_saved_activations_are_checked_against_in_place_changes() -> None:
    rnn = _gru(3, 4, torch.float32)
    out, _ = gru_rows(rnn, torch.randn(1, 3, 2, 3, requires_grad=True), need_output=True)
    loss = out.sum()
    out.mul_(2)  # modifies the saved outputs
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_input_without_grad_gets_none_and_weights_still_learn() -> None:
    rnn = _gru(3, 4, torch.float64)
    x4 = torch.randn(2, 3, 2, 3, dtype=torch.float64)  # e.g. raw pixels: no gradient wanted
    out, finals = gru_rows(rnn, x4, need_output=True)
    finals.sum().backward()
    want_out, want_finals = _rows_reference(rnn, x4)
    got = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad()
    want_finals.sum().backward()
    for g, p in zip(got, rnn.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-12, rtol=0)
    assert x4.grad is None


def test_second_order_gradients_raise() -> None:
    rnn = _gru(3, 4, torch.float64)
    x4 = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    _, finals = gru_rows(rnn, x4, need_output=False)
    (grad,) = torch.autograd.grad(finals.sum(), x4, create_graph=True)
    with pytest.raises(registry.DoubleBackwardError, match="torch.nn.GRU"):
        grad.sum().backward()


def test_float_step_tanh_accuracy_and_special_values(steps_impl) -> None:
    """The C++ float step's tanh (a rational approximation): within 4e-7 of tanh, NaN stays NaN, +-inf gives +-1.
    With a zero state and z = sigmoid(-100) = 0 the step's new state is exactly tanh(W_in x + b_in)."""
    if steps_impl != "kernels":
        pytest.skip("the C++ step's own tanh")
    forward = step_kernels(torch.float32)[0]
    grid = torch.linspace(-12, 12, 240001, dtype=torch.float64)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e-30, -3e-4, 7.9, -8.5, 9.0, 88.0])
    values = torch.cat([grid, special.double()]).float()
    hidden = values.numel()
    gx = torch.zeros(1, 3 * hidden)
    gx[0, hidden:2 * hidden] = -100.0  # z = 0: h' = n
    gx[0, 2 * hidden:] = values
    zeros = torch.zeros(3 * hidden)
    gh, new, h = torch.empty(1, 3 * hidden), torch.empty(1, hidden), torch.empty(1, hidden)
    forward(1, 1, hidden, gx.data_ptr(), 3 * hidden, zeros.data_ptr(), gh.data_ptr(), zeros.data_ptr(),
            new.data_ptr(), None, h.data_ptr(), 1)
    want = torch.tanh(values.double())
    finite = values.isfinite()
    assert (h[0, finite].double() - want[finite]).abs().max() < 4e-7
    torch.testing.assert_close(h[0, ~finite].double(), want[~finite], equal_nan=True, atol=0, rtol=0)
    torch.testing.assert_close(h, new, equal_nan=True, atol=0, rtol=0)

"""SlicedRNN: equivalence with a per-sequence loop reference, levels=0 == the base RNN, padding and batch
invariance, gradients, every cell, bidirectional, batch_first, odd T, and errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.utils.parametrize
import torch.nn.utils.prune
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import parrnn
from parrnn import SlicedRNN

CELLS = ["gru", "lstm", "sru"]


@pytest.fixture(autouse=True)
def _quiet_sru_fallback():
    # parrnn.SRU warns once when its fused CPU backend is unavailable; irrelevant here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*backend is unavailable.*", category=RuntimeWarning)
        yield


def _run_one(rnn: nn.Module, seq: Tensor) -> Tensor:
    """``rnn`` over one unpadded sequence ``(L, F)`` -> outputs ``(L, H_out)``."""
    return rnn(seq.unsqueeze(1))[0].squeeze(1)


def _summary(out: Tensor, bidirectional: bool) -> Tensor:
    if not bidirectional:
        return out[-1]
    half = out.shape[1] // 2
    return torch.cat([out[-1, :half], out[0, half:]])


def reference(model: SlicedRNN, x: Tensor, lengths: list[int]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The definition, one sequence and one slice at a time: ``x`` time-major ``(T, N, H_in)``."""
    length, batch = x.shape[:2]
    n, k = model.slices, model.levels
    m = math.ceil(length / n**k)
    level_sizes = [length] + [n ** (k - j + 1) for j in range(1, k + 1)]
    outputs = [x.new_zeros(size, batch, model.output_size) for size in level_sizes]
    hs = []
    for i in range(batch):
        seq, slice_len = x[: lengths[i], i], m
        for level, rnn in enumerate(model.rnns):  # (the top level's sequence fits in one slice)
            pieces = [seq[s : s + slice_len] for s in range(0, seq.shape[0], slice_len)]
            assert level < k or len(pieces) == 1
            outs = [_run_one(rnn, piece) for piece in pieces]
            level_out = torch.cat(outs)
            outputs[level][: level_out.shape[0], i] = level_out
            seq, slice_len = torch.stack([_summary(o, model.bidirectional) for o in outs]), n
        hs.append(seq[0])
    return outputs[-1], torch.stack(hs), outputs


def _model(cell="gru", input_size=3, hidden=4, dtype=torch.float64, **kwargs) -> SlicedRNN:
    torch.manual_seed(0)
    return SlicedRNN(input_size, hidden, cell=cell, **kwargs).to(dtype)


def _close(a: Tensor, b: Tensor, atol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    ("slices", "levels", "length", "lengths"),
    [
        (2, 2, 8, None),  # no padding at all
        (2, 2, 7, [7, 3, 1]),  # odd T, a partial slice, empty slices at every level
        (3, 1, 13, [13, 10, 4]),  # T not a multiple of slices**levels
        (2, 3, 9, [9, 8, 2]),
    ],
)
def test_matches_per_slice_reference(cell, bidirectional, slices, levels, length, lengths) -> None:
    model = _model(cell, slices=slices, levels=levels, bidirectional=bidirectional)
    x = torch.randn(length, 3, 3, dtype=torch.float64)
    out, h, all_levels = model(x, lengths=lengths, return_all_levels=True)
    ref_out, ref_h, ref_levels = reference(model, x, lengths or [length] * 3)
    _close(h, ref_h)
    _close(out, ref_out)
    assert len(all_levels) == levels + 1
    for got, want in zip(all_levels, ref_levels, strict=True):
        _close(got, want)
    out2, h2 = model(x, lengths=lengths)
    _close(out2, out, atol=0)
    _close(h2, h, atol=0)


def test_manual_two_level_computation() -> None:
    """slices=2, levels=2, T=8, one sequence: written out by hand."""
    model = _model("gru", slices=2, levels=2)
    x = torch.randn(8, 1, 3, dtype=torch.float64)
    base, mid, top = model.rnns
    level0 = [base(x[2 * s : 2 * s + 2])[0][-1] for s in range(4)]  # 4 minimal slices of 2 steps
    level1 = [mid(torch.stack(level0[2 * s : 2 * s + 2]))[0][-1] for s in range(2)]
    top_out, top_h = top(torch.stack(level1))
    out, h = model(x)
    _close(out, top_out)
    _close(h, top_h[0])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_levels0_is_the_base_rnn(cell, bidirectional) -> None:
    model = _model(cell, levels=0, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(11, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([11, 6, 1])
    out, h = model(x)
    base_out, state = model.base(x)
    exact = 1e-14 if cell == "gru" else 0  # CPU GRUs run parrnn.ops.gru_rows.fused_cpu: same math, other rounding
    _close(out, base_out, atol=exact)
    if cell == "sru":  # SRU returns cell states; its final hidden state is the output at the last step
        want_h = _summary_rows(base_out, torch.full((3,), 11), bidirectional)
    else:
        h_n = state[0] if cell == "lstm" else state
        want_h = torch.cat(list(h_n[-model.num_directions :]), dim=1)  # last layer, [fwd | bwd]
    _close(h, want_h, atol=exact)

    out, h = model(x, lengths=lengths)
    if cell == "sru":
        base_out = model.base(x, lengths=lengths)[0]
        want_h = _summary_rows(base_out, lengths, bidirectional)
    else:
        packed_out, state = model.base(pack_padded_sequence(x, lengths, enforce_sorted=False))
        base_out = pad_packed_sequence(packed_out, total_length=11)[0]
        h_n = state[0] if cell == "lstm" else state
        want_h = torch.cat(list(h_n[-model.num_directions :]), dim=1)
    _close(out, base_out)
    _close(h, want_h)


def _summary_rows(out: Tensor, lengths: Tensor, bidirectional: bool) -> Tensor:
    return torch.stack([_summary(out[: int(n), i], bidirectional) for i, n in enumerate(lengths)])


def test_single_slice_equals_base_on_that_slice_alone() -> None:
    model = _model("gru", slices=4, levels=1, bidirectional=True)
    x = torch.randn(12, 2, 3, dtype=torch.float64)  # m = 3
    _, h, (level0, level1) = model(x, return_all_levels=True)
    for s in range(4):
        _close(level0[3 * s : 3 * s + 3], model.base(x[3 * s : 3 * s + 3])[0])
    # a sequence that fits in the first minimal slice is the base over its steps, then one top-level step
    _, h_short, (level0, level1) = model(x, lengths=[12, 2], return_all_levels=True)
    alone = model.base(x[:2, 1:])[0]
    _close(level0[:2, 1], alone[:, 0])
    _close(level0[2:, 1], torch.zeros_like(level0[2:, 1]), atol=0)
    summary = _summary(alone[:, 0], True)
    _close(level1[:1, 1], model.rnns[1](summary.view(1, 1, -1))[0][:, 0])
    _close(level1[1:, 1], torch.zeros_like(level1[1:, 1]), atol=0)
    _close(h_short[0], h[0])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_padding_values_and_batch_mates_do_not_matter(cell, bidirectional) -> None:
    model = _model(cell, slices=2, levels=2, bidirectional=bidirectional, dtype=torch.float32)
    x = torch.randn(10, 4, 3)
    lengths = [10, 7, 3, 1]
    out, h = model(x, lengths=lengths)
    garbage = x.clone()
    for i, n in enumerate(lengths):
        garbage[n:, i] = float("nan") if i % 2 else 1e6
    out_g, h_g = model(garbage, lengths=lengths)
    _close(out_g, out, atol=1e-6)
    _close(h_g, h, atol=1e-6)
    for i, n in enumerate(lengths):  # alone, and in a batch of different mates, at the same T
        alone_out, alone_h = model(garbage[:, i : i + 1], lengths=[n])
        _close(alone_out[:, 0], out[:, i], atol=1e-6)
        _close(alone_h[0], h[i], atol=1e-6)
        mates = torch.cat([torch.randn(10, 2, 3), garbage[:, i : i + 1]], dim=1)
        mates_h = model(mates, lengths=[10, 5, n])[1]
        _close(mates_h[2], h[i], atol=1e-6)


def test_nan_padding_keeps_gradients_finite() -> None:
    model = _model("gru", slices=2, levels=2, bidirectional=True, dtype=torch.float32)
    x = torch.randn(9, 2, 3)
    x[5:, 1] = float("nan")
    x.requires_grad_()
    _, h = model(x, lengths=[9, 5])
    h.sum().backward()
    assert torch.isfinite(x.grad[:5]).all() and torch.isfinite(x.grad[:, 0]).all()
    assert (x.grad[5:, 1] == 0).all()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_reach_every_level(cell) -> None:
    model = _model(cell, slices=2, levels=3, bidirectional=True, dtype=torch.float32)
    x = torch.randn(17, 3, 3, requires_grad=True)
    out, h = model(x, lengths=[17, 9, 2])
    (h.square().sum() + out.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for level, rnn in enumerate(model.rnns):
        for name, p in rnn.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"level {level} {name} got no gradient"


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gradcheck_float64(cell) -> None:
    model = _model(cell, input_size=2, hidden=2, slices=2, levels=2, bidirectional=True)
    x = torch.randn(7, 2, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in model.named_parameters())
    lengths = torch.tensor([7, 3])

    def fn(x, *params):
        return torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,), {"lengths": lengths})

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


def test_gradcheck_float64_sru() -> None:
    model = _model("sru", input_size=2, hidden=2, slices=2, levels=1, bidirectional=True, backend="reference")
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x, lengths=[5, 3]), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_callable_cell_matches_builtin(bidirectional) -> None:
    def factory(input_size: int, hidden_size: int) -> nn.Module:
        return nn.GRU(input_size, hidden_size, bidirectional=bidirectional)

    builtin = _model("gru", slices=2, levels=2, bidirectional=bidirectional)
    custom = SlicedRNN(3, 4, slices=2, levels=2, cell=factory, bidirectional=bidirectional).double()
    assert custom.cell == "custom"
    custom.load_state_dict(builtin.state_dict())
    x = torch.randn(10, 3, 3, dtype=torch.float64)
    for lengths in (None, [10, 6, 1]):  # bidirectional + lengths: equal-length rows are run in groups
        for got, want in zip(custom(x, lengths=lengths), builtin(x, lengths=lengths), strict=True):
            _close(got, want)


def test_callable_cell_gets_cell_kwargs_and_may_return_a_plain_module() -> None:
    class Causal(nn.Module):  # a minimal causal "RNN": cumulative mean of a projection
        def __init__(self, input_size: int, hidden_size: int, scale: float) -> None:
            super().__init__()
            self.proj = nn.Linear(input_size, hidden_size)
            self.scale = scale

        def forward(self, x: Tensor) -> tuple[Tensor, None]:
            steps = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).view(-1, 1, 1)
            return self.scale * self.proj(x).cumsum(0) / steps, None

    model = SlicedRNN(3, 5, slices=2, levels=1, cell=Causal, scale=2.0)
    assert model.rnns[1].scale == 2.0
    x = torch.randn(6, 2, 3)
    out, h = model(x, lengths=[6, 2])
    ref_out, ref_h, _ = reference(model, x, [6, 2])
    _close(out, ref_out, atol=1e-6)
    _close(h, ref_h, atol=1e-6)


def test_lstm_proj_size() -> None:
    model = _model("lstm", slices=2, levels=1, bidirectional=True, proj_size=2)
    assert model.output_size == 4
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, h = model(x, lengths=[6, 3])
    assert out.shape == (2, 2, 4) and h.shape == (2, 4)
    _close(h, reference(model, x, [6, 3])[1])


@pytest.mark.parametrize("cell", CELLS)
def test_batch_first(cell) -> None:
    model = _model(cell, slices=2, levels=2, bidirectional=True)
    model_bf = _model(cell, slices=2, levels=2, bidirectional=True, batch_first=True)
    model_bf.load_state_dict(model.state_dict())
    x = torch.randn(9, 3, 3, dtype=torch.float64)
    out, h, levels = model(x, lengths=[9, 4, 2], return_all_levels=True)
    out_bf, h_bf, levels_bf = model_bf(x.transpose(0, 1), lengths=[9, 4, 2], return_all_levels=True)
    _close(out_bf, out.transpose(0, 1), atol=0)
    _close(h_bf, h, atol=0)
    for a, b in zip(levels_bf, levels, strict=True):
        _close(a, b.transpose(0, 1), atol=0)


def test_shapes_and_defaults() -> None:
    model = SlicedRNN(16, 32)  # slices=8, levels=2, gru
    out, h = model(torch.randn(100, 3, 16), lengths=torch.tensor([100, 37, 5]))
    assert out.shape == (8, 3, 32) and h.shape == (3, 32)
    assert model.padded_length(100) == 128 and model.padded_length(128) == 128
    assert len(model.rnns) == 3 and model.base is model.rnns[0]
    assert "slices=8, levels=2, cell='gru'" in repr(model)
    assert parrnn.SlicedRNN is SlicedRNN and "SlicedRNN" in parrnn.__all__


def test_level_counts_for_short_sequences() -> None:
    """Empty slices are dropped: a length-1 sequence has one valid step at every level."""
    model = _model("gru", slices=2, levels=2)
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    _, _, levels = model(x, lengths=[8, 1], return_all_levels=True)
    assert [int((lv[:, 1].abs().sum(-1) > 0).sum()) for lv in levels] == [1, 1, 1]
    assert [int((lv[:, 0].abs().sum(-1) > 0).sum()) for lv in levels] == [8, 4, 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"slices": 1}, ValueError, "slices must be >= 2"),
        ({"slices": 2.0}, TypeError, "slices must be an int"),
        ({"levels": -1}, ValueError, "levels must be >= 0"),
        ({"hidden_size": 0}, ValueError, "hidden_size must be >= 1"),
        ({"cell": "rnn"}, ValueError, "cell must be one of"),
        ({"cell": 3}, TypeError, "cell must be one of"),
        ({"cell": lambda i, h: "not a module"}, TypeError, "must return an nn.Module"),
        ({"cell": lambda i, h: nn.GRU(i, h), "num_layers": 2}, ValueError, "num_layers applies"),
        ({"batch_first": True, "bidirectional": True, "dropout": 0.0, "num_layers": 1}, None, None),
        ({"bias": True, "batch_first": False}, None, None),
    ],
)
def test_constructor_errors(kwargs, error, match) -> None:
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    if error is None:
        SlicedRNN(**args)
        return
    with pytest.raises(error, match=match):
        SlicedRNN(**args)


def test_forward_errors() -> None:
    model = SlicedRNN(3, 4, slices=2, levels=1)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="3-D"):
        model(torch.randn(5, 3))
    with pytest.raises(ValueError, match="Expected 3, got 4"):
        model(torch.randn(5, 2, 4))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(5, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        model(x, lengths=torch.tensor([5, 4, 3]))
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        model(x, lengths=torch.tensor([[5, 4]]))
    with pytest.raises(TypeError, match="integer dtype"):
        model(x, lengths=torch.tensor([5.0, 4.0]))
    with pytest.raises(ValueError, match="\\[1, 5\\]"):
        model(x, lengths=[5, 0])
    with pytest.raises(ValueError, match="\\[1, 5\\]"):
        model(x, lengths=[6, 1])
    with pytest.raises(TypeError, match="lengths must be a 1-D integer tensor"):
        model(x, lengths=[None, 2])
    with pytest.raises(ValueError, match="no initial state"):
        model(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="suffix"):
        model(x, mask=torch.tensor([[True, False], [False, False], [False, False], [False, False], [False, False]]))
    with pytest.raises(NotImplementedError, match="no step"):
        model.step(x[0])
    bad = SlicedRNN(3, 4, slices=2, levels=1, cell=lambda i, h: nn.GRU(i, h + 1))
    with pytest.raises(ValueError, match="must return output of shape"):
        bad(x)
    bi = SlicedRNN(3, 4, slices=2, levels=1, cell=lambda i, h: nn.GRU(i, h), bidirectional=True)
    with pytest.raises(ValueError, match=r"\(L, N, 8\)"):
        bi(x)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gru_fast_path_matches_nn_gru(bidirectional, num_layers) -> None:
    """A CPU nn.GRU level runs parrnn.ops.gru_rows (fused steps) with and without autograd: the values of nn.GRU
    itself over every slice (the per-sequence reference calls the nn.GRU module)."""
    model = _model("gru", input_size=5, hidden=6, slices=3, levels=2, num_layers=num_layers,
                   bidirectional=bidirectional, dtype=torch.float32)
    x = torch.randn(18, 4, 5)
    lengths = [18, 18, 18, 18]
    ref_out, ref_h, ref_levels = reference(model, x, lengths)
    out, h, levels = model(x, return_all_levels=True)
    with torch.no_grad():
        out_fast, h_fast, levels_fast = model(x, return_all_levels=True)
        out_fast2, h_fast2 = model(x)
    for got in (out, out_fast, out_fast2):
        _close(got, ref_out, atol=1e-5)
    for got in (h, h_fast, h_fast2):
        _close(got, ref_h, atol=1e-5)
    for a, b, c in zip(levels_fast, levels, ref_levels, strict=True):
        _close(a, c, atol=1e-5)
        _close(b, c, atol=1e-5)
    model_nobias = SlicedRNN(5, 6, slices=3, levels=1, bias=False, bidirectional=bidirectional)
    ref_out, ref_h, _ = reference(model_nobias, x[:9], [9] * 4)
    with torch.no_grad():
        fast = model_nobias(x[:9])
    _close(fast[0], ref_out, atol=1e-5)
    _close(fast[1], ref_h, atol=1e-5)


def _gru_calls(model: SlicedRNN, x: Tensor, lengths=None) -> tuple[Tensor, int]:
    calls: list[int] = []
    handle = model.base.register_forward_hook(lambda mod, args, out: calls.append(1))
    out = model(x, lengths=lengths)[1]
    handle.remove()
    return out, len(calls)


@pytest.mark.parametrize("lengths", [None, [12, 5, 1]], ids=["full", "partial"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_gru_hooks_and_pruning_are_respected(grad: bool, lengths) -> None:
    """Hooks on the nn.GRU of a level fire (the fused path steps aside for a module with hooks), pruning's
    masked weight and a write to weight_orig reach the output, and a parametrization is used."""
    model = _model("gru", input_size=3, hidden=4, slices=2, levels=1, dtype=torch.float32)
    x = torch.randn(12, 3, 3)
    with torch.set_grad_enabled(grad):
        _, calls = _gru_calls(model, x, lengths)
        assert calls == 1
        torch.nn.utils.prune.l1_unstructured(model.base, "weight_hh_l0", 0.5)
        with torch.no_grad():
            model.base.weight_hh_l0_orig.mul_(-2.0)
        pruned = model(x, lengths=lengths)[1]
        plain = _model("gru", input_size=3, hidden=4, slices=2, levels=1, dtype=torch.float32)
        plain.load_state_dict({k.replace("_orig", ""): v for k, v in model.state_dict().items()
                               if not k.endswith("_mask")})
        with torch.no_grad():
            plain.base.weight_hh_l0.copy_(model.base.weight_hh_l0)  # orig * mask
        _close(pruned, plain(x, lengths=lengths)[1], atol=1e-6)
    torch.nn.utils.parametrize.register_parametrization(plain.base, "weight_ih_l0", _Halve())
    halved = _model("gru", input_size=3, hidden=4, slices=2, levels=1, dtype=torch.float32)
    halved.load_state_dict({k.replace("parametrizations.", "").replace(".original", ""): v
                            for k, v in plain.state_dict().items()})
    with torch.no_grad():
        halved.base.weight_ih_l0.mul_(0.5)
        _close(plain(x, lengths=lengths)[1], halved(x, lengths=lengths)[1], atol=1e-6)


def test_gru_global_hooks_are_respected() -> None:
    model = _model("gru", input_size=3, hidden=4, slices=2, levels=1, dtype=torch.float32)
    calls: list[str] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: calls.append(type(mod).__name__))
    try:
        model(torch.randn(8, 2, 3))
    finally:
        handle.remove()
    assert calls.count("GRU") == 2  # both levels' nn.GRU ran as modules


def test_gru_pruning_trains() -> None:
    """Three SGD steps of a pruned sliced GRU (no 'backward through the graph a second time')."""
    model = _model("gru", input_size=3, hidden=4, slices=2, levels=1, dtype=torch.float32)
    torch.nn.utils.prune.l1_unstructured(model.base, "weight_ih_l0", 0.5)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    x = torch.randn(8, 2, 3)
    for _ in range(3):
        opt.zero_grad()
        model(x)[1].square().sum().backward()
        opt.step()
    assert model.base.weight_ih_l0_orig.grad is not None


class _Halve(nn.Module):
    def forward(self, w: Tensor) -> Tensor:
        return w * 0.5


@pytest.mark.parametrize("cell", ["gru", "sru", "mingru"])
def test_packed_mask_and_state_protocol(cell) -> None:
    """A PackedSequence, a suffix mask and lengths give the same result; the old positional lengths still work
    with a DeprecationWarning; init_state has the summary's shape."""
    model = _model(cell, slices=2, levels=1)
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5])
    out, h = model(x, lengths=lengths)
    mask = torch.arange(7).unsqueeze(1) >= lengths.unsqueeze(0)
    for got in (model(x, mask=mask), model(pack_padded_sequence(x, lengths, enforce_sorted=False)),
                model(x, None, lengths)):
        _close(got[0], out, atol=0)
        _close(got[1], h, atol=0)
    with pytest.warns(DeprecationWarning, match="pass lengths=... by keyword"):
        old = model(x, lengths)
    _close(old[1], h, atol=0)
    state = model.init_state(3)
    assert state.shape == h.shape and state.dtype == h.dtype and not state.any()


@pytest.mark.parametrize("cell", CELLS)
def test_total_length_equals_zero_padding(cell) -> None:
    """total_length cuts the input as if zero-padded to that length: same result as padding it by hand."""
    model = _model(cell, slices=2, levels=2)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = [6, 4, 1]
    padded = torch.cat([x, x.new_zeros(5, 3, 3)])
    out, h, levels = model(x, lengths=lengths, total_length=11, return_all_levels=True)
    want_out, want_h, want_levels = model(padded, lengths=lengths, return_all_levels=True)
    _close(out, want_out)
    _close(h, want_h)
    assert levels[0].shape == (11, 3, model.output_size)
    for got, want in zip(levels, want_levels, strict=True):
        _close(got, want)
    same, _ = model(x, lengths=lengths, total_length=6)
    _close(same, model(x, lengths=lengths)[0], atol=0)
    with pytest.raises(ValueError, match="total_length \\(5\\) must be at least"):
        model(x, lengths=lengths, total_length=5)
    with pytest.raises(ValueError, match="total_length"):
        model(x, lengths=lengths, total_length=0)


def test_sliced_gru_training_matches_nn_gru_cells() -> None:
    """The fast GRU path (fused steps, hand-written backward) gives nn.GRU's values and gradients in float32."""
    model = _model("gru", input_size=5, hidden=6, slices=3, levels=2, num_layers=2, dtype=torch.float32)
    x = torch.randn(25, 4, 5, requires_grad=True)
    lengths = [25, 17, 9, 1]
    out, h = model(x, lengths=lengths)
    (out.sum() + h.square().sum()).backward()
    got = [x.grad.clone(), *[p.grad.clone() for p in model.parameters()]]
    ref_out, ref_h, _ = reference(model, x, lengths)
    model.zero_grad()
    x.grad = None
    (ref_out.sum() + ref_h.square().sum()).backward()
    want = [x.grad, *[p.grad for p in model.parameters()]]
    _close(out, ref_out, atol=2e-6)
    _close(h, ref_h, atol=2e-6)
    for g, w in zip(got, want, strict=True):
        _close(g, w, atol=2e-5)

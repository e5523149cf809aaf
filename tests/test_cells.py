"""QRNN, MinGRU, MinLSTM and HGRN: values and gradients against their equations as a per-step loop
(each cell's reference step, parrnn.cells.reference_forward), float64 gradcheck, lengths and padding (NaN in
padding leaks nothing), bidirectional layers, state in/out, step() == forward, PackedSequence, batch_first,
SlicedRNN names, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import parrnn
from parrnn.cells import reference_forward

D, H = 3, 4
#: one entry per configuration: (class, options); every option of every cell appears at least once
CASES = {
    "qrnn-fo": (parrnn.QRNN, {}),
    "qrnn-f-window2": (parrnn.QRNN, {"pooling": "f", "window": 2}),
    "qrnn-ifo-window2": (parrnn.QRNN, {"pooling": "ifo", "window": 2}),
    "mingru": (parrnn.MinGRU, {}),
    "mingru-g-proj": (parrnn.MinGRU, {"activation": "g", "output_projection_size": 5}),
    "minlstm": (parrnn.MinLSTM, {"bias": False}),
    "minlstm-g-proj": (parrnn.MinLSTM, {"activation": "g", "output_projection_size": 2}),
    "hgrn": (parrnn.HGRN, {}),
    "hgrn-no-bound": (parrnn.HGRN, {"lower_bound": False}),
}
#: the four cells in their default configuration
DEFAULTS = ["qrnn-fo", "mingru", "minlstm", "hgrn"]


def make(name: str, num_layers: int = 2, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    cls, options = CASES[name]
    model = cls(D, H, num_layers, **options, **extra).double()
    if isinstance(model, parrnn.HGRN) and model.lower_bounds is not None:
        with torch.no_grad():
            model.lower_bounds.normal_()  # distinct bounds per layer and unit
    return model


def random_state(model, batch: int):
    h = torch.randn(model.num_layers * model.num_directions, batch, H, dtype=torch.float64)
    if model.input_state_size:
        return h, torch.randn(model.num_layers, batch, model.input_state_size, dtype=torch.float64)
    return h


def params_grads(model, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True)


def flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_the_equations(name: str, bidirectional: bool) -> None:
    model = make(name, bidirectional=bidirectional)
    x = torch.randn(5, 2, D, dtype=torch.float64)
    hx = random_state(model, 2)
    out, h_n = model(x, hx)
    ref_out, ref_h_n = reference_forward(model, x, hx)
    torch.testing.assert_close(out, ref_out)
    for got, want in zip(flat(h_n), flat(ref_h_n), strict=True):
        torch.testing.assert_close(got, want)
    weights = torch.randn_like(out)
    grads = params_grads(model, (out * weights).sum() + flat(h_n)[0].sum())
    ref = params_grads(model, (ref_out * weights).sum() + flat(ref_h_n)[0].sum())
    for got, want in zip(grads, ref, strict=True):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", DEFAULTS + ["qrnn-ifo-window2", "mingru-g-proj"])
def test_gradcheck_float64(name: str) -> None:
    model = make(name, bidirectional=True)
    x = torch.randn(3, 2, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, h0):
        hx = (h0, torch.zeros(2, 2, model.input_state_size, dtype=torch.float64)) if model.input_state_size else h0
        out, h_n = model(x, hx, lengths)
        return out, flat(h_n)[0]

    assert torch.autograd.gradcheck(f, (x, h0))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("name", list(CASES))
def test_lengths_equal_each_sequence_alone_and_nan_padding_leaks_nothing(name: str, bidirectional: bool) -> None:
    model = make(name, bidirectional=bidirectional)
    lengths = [5, 2, 4]
    x = torch.randn(5, 3, D, dtype=torch.float64, requires_grad=True)
    hx = random_state(model, 3)
    with torch.no_grad():
        for n, length in enumerate(lengths):
            x[length:, n] = float("nan")
    out, h_n = model(x, hx, lengths)
    for n, length in enumerate(lengths):
        hx_n = tuple(s[:, n:n + 1] for s in flat(hx))
        alone, alone_h = model(x[:length, n:n + 1], hx_n if len(hx_n) == 2 else hx_n[0])
        torch.testing.assert_close(out[:length, n:n + 1], alone)
        assert not out[length:, n].any(), "padded outputs are 0"
        for got, want in zip(flat(h_n), flat(alone_h), strict=True):
            torch.testing.assert_close(got[:, n:n + 1], want)
    (out.sum() + flat(h_n)[0].sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(x.grad).all()
    assert not x.grad[2:, 1].any()


@pytest.mark.parametrize("name", list(CASES))
def test_step_equals_forward_and_chunks_stream(name: str) -> None:
    model = make(name, num_layers=3)
    x = torch.randn(7, 2, D, dtype=torch.float64)
    hx = random_state(model, 2)
    out, h_n = model(x, hx)
    state, steps = hx, []
    for t in range(7):
        y, state = model.step(x[t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps), out)
    first, mid = model(x[:3], hx)
    second, end = model(x[3:], mid)
    torch.testing.assert_close(torch.cat([first, second]), out)
    for a, b, c in zip(flat(state), flat(h_n), flat(end), strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c, b)


@pytest.mark.parametrize("name", DEFAULTS + ["qrnn-f-window2"])
def test_batch_first_and_packed_sequence(name: str) -> None:
    model = make(name, bidirectional=True)
    lengths = torch.tensor([3, 5, 1])
    x = torch.randn(5, 3, D, dtype=torch.float64)
    hx = random_state(model, 3)
    out, h_n = model(x, hx, lengths)
    model.batch_first = True
    out_bf, h_bf = model(x.transpose(0, 1), hx, lengths)
    torch.testing.assert_close(out_bf.transpose(0, 1), out)
    model.batch_first = False
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_p, h_p = model(packed, hx)
    padded, got_lengths = pad_packed_sequence(out_p)
    assert got_lengths.tolist() == lengths.tolist()
    torch.testing.assert_close(padded, out)
    for a, b, c in zip(flat(h_n), flat(h_bf), flat(h_p), strict=True):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)
    mask = torch.arange(5).unsqueeze(1) >= lengths.unsqueeze(0)
    out_m, h_m = model(x, hx, mask=mask)
    torch.testing.assert_close(out_m, out, rtol=0, atol=0)
    for a, b in zip(flat(h_n), flat(h_m), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("name", DEFAULTS + ["qrnn-f-window2"])
def test_packed_output_keeps_the_input_row_order(name: str, enforce_sorted: bool) -> None:
    """Issue 29's reproduction: tied lengths [3]*8 + [2]*16 + [1]*8, N=32: out.data has the input's rows (and its
    sorted_indices, None included), so a loss on out.data equals the one on the padded output packed like the
    input."""
    model = make(name)
    lengths = torch.tensor([3] * 8 + [2] * 16 + [1] * 8)
    x = torch.randn(3, 32, D, dtype=torch.float64)
    if not enforce_sorted:
        perm = torch.randperm(32)
        x, lengths = x[:, perm], lengths[perm]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, state = model(packed)
    assert _same(out.sorted_indices, packed.sorted_indices)
    assert _same(out.unsorted_indices, packed.unsorted_indices)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    padded, ref_state = model(x, lengths=lengths)
    # the padded output gathered row by row in the input's packing order
    order = torch.arange(32) if packed.sorted_indices is None else packed.sorted_indices
    steps = torch.cat([torch.full((int(n),), t) for t, n in enumerate(packed.batch_sizes)])
    seqs = torch.cat([order[:int(n)] for n in packed.batch_sizes])
    torch.testing.assert_close(out.data, padded[steps, seqs])
    assert float(out.data.square().sum()) == pytest.approx(float(padded.square().sum()))
    torch.testing.assert_close(out.data.cumsum(0), padded[steps, seqs].cumsum(0))  # order-sensitive
    for a, b in zip(flat(state), flat(ref_state), strict=True):
        torch.testing.assert_close(a, b)


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def test_deprecated_spellings_warn_and_work() -> None:
    model = make("qrnn-f-window2")
    x = torch.randn(4, 2, D, dtype=torch.float64)
    hx = random_state(model, 2)
    expected = model(x, hx)
    with pytest.warns(DeprecationWarning, match="write state= instead"):
        got = model(x, hx=hx)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="write state= instead"):
        model.step(x[0], hx=hx)
    with pytest.warns(DeprecationWarning, match="write output_projection_size= instead"):
        old = parrnn.MinGRU(D, H, proj_size=2)
    assert old.output_projection_size == 2 and old(x.float())[0].shape[-1] == 2
    with pytest.warns(DeprecationWarning, match="read output_projection_size"):
        assert old.proj_size == 2


@pytest.mark.parametrize("name", DEFAULTS + ["qrnn-f-window2"])
def test_init_state_is_the_zero_state(name: str) -> None:
    model = make(name)
    x = torch.randn(4, 3, D, dtype=torch.float64)
    state = model.init_state(3)
    _, returned = model(x)
    for a, b in zip(flat(state), flat(returned), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype and not a.any()
    torch.testing.assert_close(model(x, state)[0], model(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", DEFAULTS)
def test_backends_agree(name: str) -> None:
    available = [b for b in ("sequential", "scan")
                 if parrnn.ops.linear_recurrence.op.backend_availability(b, "cpu", torch.float32)[0]]
    if not available:
        pytest.skip("no fused linear_recurrence backend built here")
    model = make(name, bidirectional=True, backend="reference").float()
    x = torch.randn(6, 3, D)
    lengths = torch.tensor([6, 2, 4])
    ref_out, ref_h = model(x, lengths=lengths)
    ref_grads = params_grads(model, ref_out.square().sum())
    for backend in available:
        model.backend = backend
        out, h_n = model(x, lengths=lengths)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(flat(h_n)[0], flat(ref_h)[0])
        for got, want in zip(params_grads(model, out.square().sum()), ref_grads, strict=True):
            # float32 sums over every step in another order: rounding reaches ~1e-5 (HGRN's norm and projection)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", DEFAULTS)
def test_half_storage_is_close_to_float32(name: str, dtype: torch.dtype) -> None:
    model = make(name).float()
    x, lengths = torch.randn(6, 2, D), [6, 3]
    expected, expected_state = model(x, lengths=lengths)
    half = copy.deepcopy(model).to(dtype)
    out, state = half(x.to(dtype), lengths=lengths)
    assert out.dtype == dtype and flat(state)[0].dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)
    torch.testing.assert_close(flat(state)[0].float(), flat(expected_state)[0], atol=0.05, rtol=0.05)
    out.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in half.parameters() if p.grad is not None)


@pytest.mark.parametrize("cls", [parrnn.QRNN, parrnn.MinGRU, parrnn.MinLSTM, parrnn.HGRN], ids=lambda c: c.__name__)
def test_autocast_keeps_float32_parameters_gradients_and_state(cls) -> None:
    """Under fp16 autocast the products run in 16 bits, but the float32 bias promotes the projections: the
    recurrence, its output and state, and the bias gradient (a sum over L * N rows, which overflows in 16 bits)
    stay float32 and finite. (Weight gradients are fp16 products, as for any layer under autocast.)"""
    torch.manual_seed(0)
    model = cls(D, H, 2)  # with biases (a layer without one keeps 16-bit projections, as autocast makes them)
    x = torch.randn(2048, 8, D)
    with torch.autocast("cpu", dtype=torch.float16):
        out, state = model(x)
    assert out.dtype == torch.float32 and flat(state)[0].dtype == torch.float32
    (out.float().sum() * 64).backward()
    for layer in model.layers:
        assert layer.bias.grad.dtype == torch.float32 and torch.isfinite(layer.bias.grad).all()


@pytest.mark.parametrize("name", DEFAULTS)
def test_dropout_between_layers_only_in_training(name: str) -> None:
    model = make(name, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, D, dtype=torch.float64)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    torch.manual_seed(1)
    assert not torch.allclose(model(x)[0], model.eval()(x)[0])


def test_qrnn_zoneout_keeps_states_while_training_and_uses_its_expectation_in_eval() -> None:
    torch.manual_seed(0)
    model = parrnn.QRNN(D, H, pooling="f", zoneout=0.999).double()
    x = torch.randn(6, 2, D, dtype=torch.float64)
    out, _ = model.train()(x)
    assert (out == 0).float().mean() > 0.9, "nearly every unit keeps its zero state"
    plain = parrnn.QRNN(D, H, pooling="f").double()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(model.eval()(x)[0], plain(x)[0])
    assert parrnn.QRNN(D, H).zoneout == 0.0


def test_hgrn_lower_bounds_grow_with_depth_from_zero() -> None:
    model = parrnn.HGRN(D, H, num_layers=4)
    floors = torch.stack(model.floors())
    assert not floors[0].any()
    assert (floors[1:] >= floors[:-1]).all() and (floors < 1).all()
    torch.testing.assert_close(floors[:, 0], torch.tensor([0.0, 0.25, 0.5, 0.75]))


@pytest.mark.parametrize("cell", ["qrnn", "mingru", "minlstm", "hgrn"])
def test_sliced_rnn_takes_the_cells_by_name(cell: str) -> None:
    torch.manual_seed(0)
    model = parrnn.SlicedRNN(D, H, slices=2, levels=1, cell=cell, bidirectional=True).double()
    assert type(model.base).__name__.lower() == cell
    x = torch.randn(8, 3, D, dtype=torch.float64)
    out, last = model(x, lengths=[8, 3, 5])
    assert out.shape == (2, 3, 2 * H) and last.shape == (3, 2 * H)
    alone, _ = model(x[:3, 1:2], total_length=8)
    torch.testing.assert_close(out[:, 1:2], alone)


# ---- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DEFAULTS)
def test_bad_inputs_name_the_argument(name: str) -> None:
    model = make(name)
    x = torch.randn(4, 2, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"input.size\(-1\) must be equal to input_size. Expected 3, got 5"):
        model(torch.randn(4, 2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="input must be 3-D"):
        model(torch.randn(4, D, dtype=torch.float64))
    with pytest.raises(TypeError, match="input dtype must match"):
        model(x.float())
    with pytest.raises(ValueError, match=r"state must have shape \(2, 2, 4\)"):
        model(x, torch.zeros(1, 2, H, dtype=torch.float64))
    with pytest.raises(TypeError, match="state must be a tensor"):
        model(x, (torch.zeros(2, 2, H, dtype=torch.float64),) * 2)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        model(x, lengths=[5, 1])
    with pytest.raises(ValueError, match=r"step\(\)"):
        model.step(x)
    with pytest.raises(ValueError, match="bidirectional"):
        make(name, bidirectional=True).step(x[0])
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        type(model)(D, H, 0)
    with pytest.raises(ValueError, match="dropout must be in"):
        type(model)(D, H, dropout=1.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        type(model)(D, H, backend="cuda-fast")


def test_cell_options_are_checked() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        parrnn.QRNN(D, H, pooling="o")
    with pytest.raises(ValueError, match="window must be one of"):
        parrnn.QRNN(D, H, window=3)
    with pytest.raises(TypeError, match="window must be int"):
        parrnn.QRNN(D, H, window=2.0)
    with pytest.raises(ValueError, match="suffix"):
        parrnn.QRNN(D, H)(torch.randn(3, 1, D), mask=torch.tensor([[True], [False], [False]]))
    with pytest.raises(ValueError, match="lengths must hold values"):
        parrnn.MinGRU(D, H)(torch.randn(3, 2, D), lengths=torch.tensor([3, 2], device="meta"))
    with pytest.raises(TypeError, match="lengths must be a 1-D integer tensor"):
        parrnn.MinGRU(D, H)(torch.randn(3, 2, D), lengths=[None, 2])
    with pytest.raises(ValueError, match="zoneout must be in"):
        parrnn.QRNN(D, H, zoneout=1.5)
    with pytest.raises(TypeError, match=r"state must be a pair \(h, x\)"):
        parrnn.QRNN(D, H, window=2)(torch.randn(2, 1, D), torch.zeros(1, 1, H))
    with pytest.raises(ValueError, match=r"state\[1\] must have shape \(1, 1, 3\)"):
        parrnn.QRNN(D, H, window=2)(torch.randn(2, 1, D), (torch.zeros(1, 1, H), torch.zeros(1, 1, H)))
    with pytest.raises(ValueError, match="activation must be one of"):
        parrnn.MinGRU(D, H, activation="relu")
    with pytest.raises(ValueError, match="output_projection_size must be >= 0"):
        parrnn.MinLSTM(D, H, output_projection_size=-1)
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        parrnn.HGRN(D, 4.0)

"""The SRU layer: options, padding, dtypes, dropout, errors, and equivalence with the ``sru`` 2.6 package."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import parrnn
from parrnn import SRU, SRUCell

BACKENDS = ["reference", "sequential"]

OPTION_SETS = [
    {},
    {"version": "v1"},
    {"bidirectional": True},
    {"layer_norm": True},
    {"layer_norm": True, "normalize_after": True},
    {"rescale": False},
    {"projection_size": 2},
    {"use_tanh": True},
    {"has_skip_term": False},
    {"input_size": 5},
    {"input_size": 5, "bidirectional": True, "version": "v1"},
]


def _make(options: dict, backend: str, dtype=torch.float64, hidden: int = 3, layers: int = 2) -> SRU:
    options = dict(options)
    input_size = options.pop("input_size", 2 * hidden if options.get("bidirectional") else hidden)
    return SRU(input_size, hidden, layers, backend=backend, **options).to(dtype)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    ok, why = parrnn.available_backends()[f"sru {request.param}"]
    if not ok:
        pytest.skip(f"backend {request.param} unavailable: {why}")
    return request.param


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_gradcheck_every_option(options: dict, backend: str) -> None:
    torch.manual_seed(0)
    model = _make(options, backend)
    x = torch.randn(5, 2, model.input_size, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, model.layers[0].output_size, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])

    def fn(x, c0, *params):
        out, c_n = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x, c0, lengths))
        return out, c_n

    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in model.named_parameters())
    assert torch.autograd.gradcheck(fn, (x, c0, *params), eps=1e-6, atol=1e-5)


def test_gradcheck_dropout_masks_fixed_by_seed(backend: str) -> None:
    model = _make({"dropout": 0.3, "rnn_dropout": 0.2}, backend).train()
    x = torch.randn(4, 3, model.input_size, dtype=torch.float64, requires_grad=True)

    def fn(x):
        torch.manual_seed(7)  # the same dropout masks on every evaluation
        return model(x)[0]

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_cpu_backend_matches_reference_layer() -> None:
    if not parrnn.available_backends()["sru sequential"][0]:
        pytest.skip("cpu backend unavailable")
    torch.manual_seed(1)
    ref = SRU(6, 8, 3, bidirectional=True, layer_norm=True, backend="reference")
    fast = SRU(6, 8, 3, bidirectional=True, layer_norm=True, backend="sequential")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(17, 4, 6, requires_grad=True)
    lengths = torch.tensor([17, 1, 9, 12])
    out_r, c_r = ref(x, lengths=lengths)
    out_f, c_f = fast(x, lengths=lengths)
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_f, c_r, rtol=1e-5, atol=1e-5)
    g_r = torch.autograd.grad((out_r.square().sum() + c_r.sum()), [x, *ref.parameters()])
    g_f = torch.autograd.grad((out_f.square().sum() + c_f.sum()), [x, *fast.parameters()])
    for a, b in zip(g_f, g_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_sequence(bidirectional: bool) -> None:
    torch.manual_seed(2)
    model = SRU(4, 5, 2, bidirectional=bidirectional).double()
    x = torch.randn(8, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([8, 5, 2])
    out, c_n = model(x, lengths=lengths)
    x_noisy = x.clone()
    x_noisy[5:, 1] = 1e3  # padding values must not matter
    x_noisy[2:, 2] = -7.0
    out2, c_n2 = model(x_noisy, lengths=lengths)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(c_n, c_n2)
    for n, length in enumerate(lengths.tolist()):
        alone, c_alone = model(x[:length, n : n + 1])
        torch.testing.assert_close(out[:length, n : n + 1], alone)
        assert out[length:, n].abs().max() == 0 if length < 8 else True
        torch.testing.assert_close(c_n[:, n : n + 1], c_alone)


def test_mask_equals_lengths_and_batch_first() -> None:
    torch.manual_seed(3)
    model = SRU(4, 4, 2)
    x = torch.randn(6, 2, 4)
    lengths = torch.tensor([6, 3])
    mask = torch.arange(6).unsqueeze(1) >= lengths.unsqueeze(0)
    out_l, c_l = model(x, lengths=lengths)
    out_m, c_m = model(x, mask=mask)
    torch.testing.assert_close(out_l, out_m)
    torch.testing.assert_close(c_l, c_m)
    model.batch_first = True
    out_b, c_b = model(x.transpose(0, 1), mask=mask.t())
    torch.testing.assert_close(out_b.transpose(0, 1), out_l)
    torch.testing.assert_close(c_b, c_l)


def test_packed_sequence_round_trip() -> None:
    torch.manual_seed(4)
    model = SRU(3, 4, 2, bidirectional=True)
    x = torch.randn(7, 3, 3)
    lengths = torch.tensor([4, 7, 2])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_packed, c_packed = model(packed)
    assert isinstance(out_packed, torch.nn.utils.rnn.PackedSequence)
    out_pad, out_lengths = pad_packed_sequence(out_packed)
    out_ref, c_ref = model(x, lengths=lengths)
    assert out_lengths.tolist() == lengths.tolist()
    torch.testing.assert_close(out_pad, out_ref)
    torch.testing.assert_close(c_packed, c_ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad", [False, True])
def test_dtypes_with_and_without_grad(dtype: torch.dtype, grad: bool) -> None:
    torch.manual_seed(5)
    model32 = SRU(8, 8, 2, bidirectional=False)
    model = SRU(8, 8, 2).to(dtype)
    model.load_state_dict(model32.state_dict())
    x = torch.randn(10, 3, 8)
    with torch.set_grad_enabled(grad):
        out, c_n = model(x.to(dtype).requires_grad_(grad))
        if grad:
            out.float().sum().backward()
    assert out.dtype == dtype and c_n.dtype == dtype
    expected, _ = model32(x)
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    if grad:
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_dropout_train_eval_and_seed() -> None:
    model = SRU(6, 6, 2, dropout=0.5, rnn_dropout=0.3)
    x = torch.randn(5, 4, 6)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    torch.manual_seed(0)
    a = model(x)[0]
    torch.manual_seed(0)
    b = model(x)[0]
    c = model(x)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    model.eval()
    assert not torch.allclose(a, model(x)[0])


def test_cell_contract() -> None:
    cell = SRUCell(4, 3, bidirectional=True, batch_first=True)
    out, c_n = cell(torch.randn(2, 5, 4), state=torch.zeros(2, 6), lengths=[5, 2])
    assert out.shape == (2, 5, 6) and c_n.shape == (2, 6)
    assert out[1, 2:].abs().max() == 0


def test_v1_has_no_peephole() -> None:
    model = SRU(4, 4, 1, version="v1")
    assert model.layers[0].weight_c is None
    assert "weight_c" not in "".join(model.state_dict())


BAD_INPUTS = [
    (lambda m: m(torch.randn(5, 4)), ValueError, "3-D"),
    (lambda m: m(torch.randn(5, 2, 3)), ValueError, "Expected 4, got 3"),
    (lambda m: m([[1.0]]), TypeError, "torch.Tensor"),
    (lambda m: m(torch.ones(5, 2, 4, dtype=torch.long)), TypeError, "floating"),
    (lambda m: m(torch.randn(5, 2, 4, dtype=torch.float64)), TypeError, "Expected torch.float32"),
    (lambda m: m(torch.randn(0, 2, 4)), ValueError, "sequence length 0"),
    (lambda m: m(torch.randn(5, 0, 4)), ValueError, "empty batch"),
    (lambda m: m(torch.randn(5, 2, 4), torch.zeros(2, 4)), ValueError, "state must have shape (2, 2, 6)"),
    (lambda m: m(torch.randn(5, 2, 4), torch.zeros(2, 2, 6, dtype=torch.float64)), TypeError, "state dtype"),
    (lambda m: m(torch.randn(5, 2, 4), torch.zeros(2, 2, 6), c0=torch.zeros(2, 2, 6)), TypeError, "not both"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=torch.tensor([5])), ValueError, "lengths must have shape (2,)"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=torch.tensor([5.0, 1.0])), TypeError, "integer dtype"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=torch.tensor([6, 1])), ValueError, "lengths must lie in [1, 5]"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=torch.tensor([0, 1])), ValueError, "got min 0"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=[None, 2]), TypeError, "lengths must be a 1-D integer tensor"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=torch.tensor([5, 2], device="meta")), ValueError,
     "lengths must hold values"),
    (lambda m: m(torch.randn(5, 2, 4), mask=torch.zeros(2, 5)), ValueError, "mask must have shape (L, N)"),
    (lambda m: m(torch.randn(5, 2, 4), lengths=[5, 5], mask=torch.zeros(5, 2)), ValueError, "not both"),
]


@pytest.mark.parametrize("call,exc,message", BAD_INPUTS)
def test_bad_input_is_named(call, exc, message: str) -> None:
    model = SRU(4, 3, 2, bidirectional=True)
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        call(model)


@pytest.mark.parametrize("kwargs,message", [
    ({"version": "v3"}, "version must be one of"),
    ({"backend": "tpu"}, "backend must be one of"),
    ({"dropout": 1.0}, "dropout must be in"),
    ({"projection_size": 8}, "projection_size must be smaller"),
    ({"num_layers": 0}, "num_layers must be >= 1"),
])
def test_bad_constructor_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SRU(4, 3, **kwargs)


def test_old_backend_words_are_deprecated_aliases_of_sequential() -> None:
    with pytest.warns(DeprecationWarning, match="write backend='sequential'"):
        model = SRU(4, 4, 1, backend="cuda")
    x = torch.randn(3, 1, 4)
    with pytest.warns(DeprecationWarning):
        got = model(x)[0]
    model.backend = "reference"
    torch.testing.assert_close(got, model(x)[0])


def test_available_backends_reports_reasons() -> None:
    report = parrnn.available_backends()  # every op's backends: "<op> <backend>"
    assert {"sru reference", "sru sequential", "sru scan", "linear_recurrence sequential"} <= set(report)
    assert report["sru reference"][0]
    assert all(isinstance(ok, bool) and isinstance(why, str) and why for ok, why in report.values())


# ---- equivalence with the reference package ------------------------------------------------------------------

SRU26_CONFIGS = [
    {},
    {"bidirectional": True},
    {"num_layers": 3},
    {"v1": True},
    {"layer_norm": True},
    {"layer_norm": True, "normalize_after": True},
    {"projection_size": 6, "input_size": 24},
    {"projection_size": 8, "input_size": 4},  # sru drops the projection on layer 0 (8 >= input_size)
    {"projection_size": 6, "input_size": 10, "num_layers": 3, "bidirectional": True},
    {"rescale": True, "highway_bias": -2.0},
    {"rescale": False},
    {"input_size": 10},
    {"input_size": 10, "bidirectional": True, "rescale": True},
    {"use_tanh": True, "v1": True, "bidirectional": True},
    {"has_skip_term": False},
]


@pytest.fixture(scope="module")
def sru26():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("sru")


@pytest.mark.parametrize("config", SRU26_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_from_sru_matches_sru26(sru26, config: dict, backend: str) -> None:
    torch.manual_seed(6)
    config = dict(config)
    input_size = config.pop("input_size", 16)
    hidden = 8 if config.get("bidirectional") else 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sru26.SRU(input_size, hidden, num_layers=config.pop("num_layers", 2), **config).eval()
    model = SRU.from_sru(ref, backend=backend).eval()
    x = torch.randn(23, 5, input_size)
    mask = torch.zeros(23, 5, dtype=torch.bool)
    mask[15:, 1] = True
    mask[3:, 4] = True
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mask_pad in (None, mask):
            expected_out, expected_c = ref(x, mask_pad=mask_pad)
            out, c_n = model(x, mask_pad=mask_pad)
            torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(c_n, expected_c, rtol=1e-5, atol=1e-5)


def test_sru26_state_dict_loads_into_fresh_layer(sru26) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sru26.SRU(12, 6, num_layers=2, bidirectional=True, rescale=True, highway_bias=-2.0).eval()
    model = SRU(12, 6, 2, bidirectional=True, highway_bias=-2.0).eval()
    model.load_sru_state_dict(ref.state_dict())
    x = torch.randn(9, 2, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref(x)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="rnn_lst.0.weight"):
        model.load_sru_state_dict({})


def test_from_sru_refuses_what_it_cannot_convert_exactly(sru26) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sru26.SRU(6, 6, num_layers=2, v1=True)
        ref.rnn_lst[1].weight_c.data.fill_(0.1)  # sru would use it: parrnn's v1 has no peephole
        with pytest.raises(ValueError, match=r"rnn_lst\.1\.weight_c is not zero"):
            SRU.from_sru(ref)
        with pytest.raises(ValueError, match="proj_input_to_hidden_first"):
            SRU.from_sru(sru26.SRU(4, 6, proj_input_to_hidden_first=True))


def test_load_sru_state_dict_uses_the_stored_scale_x(sru26) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sru26.SRU(6, 6, num_layers=2, rescale=True, highway_bias=-2.0).double().eval()
        ref.rnn_lst[0].scale_x.fill_(2.5)
        model = SRU.from_sru(ref)
        x = torch.randn(4, 3, 6, dtype=torch.float64)
        torch.testing.assert_close(model(x), ref(x), rtol=1e-10, atol=1e-10)
    assert model.layers[0].scale_x == 2.5


def test_projection_size_per_layer() -> None:
    model = SRU(4, 16, 3, projection_size=[0, 8, 4])
    assert [layer.projection_size for layer in model.layers] == [0, 8, 4]
    assert model(torch.randn(3, 2, 4))[0].shape == (3, 2, 16)
    with pytest.raises(ValueError, match="one entry per layer"):
        SRU(4, 16, 3, projection_size=[0, 8])
    with pytest.raises(ValueError, match="projection_size must be smaller"):
        SRU(4, 16, 2, projection_size=8)  # an int must fit every layer


# ---- the layer protocol (docs/protocol.md) ---------------------------------------------------------------------

def test_each_layer_starts_from_its_own_state() -> None:
    """Layer i starts from state[i] (not state[0]) and returns its own final state: the stack equals its layers
    called one by one, and swapping two layers' initial states changes the result."""
    torch.manual_seed(0)
    model = SRU(4, 4, 3, backend="reference").double()
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    state = torch.randn(3, 2, 4, dtype=torch.float64)
    out, c_n = model(x, state)
    h, finals = x, []
    for layer, start in zip(model.layers, state, strict=True):
        h, c = layer(h, start)
        finals.append(c)
    torch.testing.assert_close(out, h, rtol=0, atol=0)
    torch.testing.assert_close(c_n, torch.stack(finals), rtol=0, atol=0)
    swapped, _ = model(x, state[[1, 0, 2]])
    assert not torch.allclose(swapped, out)


def test_deprecated_spellings_warn_and_work() -> None:
    torch.manual_seed(0)
    model = SRU(4, 4, 2)
    x = torch.randn(5, 2, 4)
    state = torch.randn(2, 2, 4)
    mask = torch.zeros(5, 2, dtype=torch.bool)
    mask[3:, 1] = True
    expected = model(x, state, mask=mask)
    with pytest.warns(DeprecationWarning, match="write state= instead"):
        got_c0 = model(x, c0=state, mask=mask)
    with pytest.warns(DeprecationWarning, match="write mask= instead"):
        got_mask = model(x, state, mask_pad=mask)
    for got in (got_c0, got_mask):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_num_layers_default_warns_of_the_change() -> None:
    with pytest.warns(FutureWarning, match="pass num_layers=2"):
        model = SRU(4, 4)
    assert model.num_layers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SRU(4, 4, 1).num_layers == 1
        assert SRU(4, 4, num_layers=2).num_layers == 2


@pytest.mark.parametrize("cls", [SRU, SRUCell])
def test_init_state_is_the_zero_state(cls) -> None:
    model = cls(4, 3, **({"num_layers": 2} if cls is SRU else {})).double()
    state = model.init_state(5)
    x = torch.randn(6, 5, 4, dtype=torch.float64)
    assert state.dtype == torch.float64 and state.shape == model(x)[1].shape
    assert not state.any()
    torch.testing.assert_close(model(x, state), model(x), rtol=0, atol=0)
    assert model.init_state(2, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
def test_packed_output_keeps_the_input_row_order(enforce_sorted: bool) -> None:
    """Tied lengths (issue 29's reproduction, N=32): out.data's rows are the input's and out has its
    sorted_indices (None included), as nn.LSTM's; the state is in the order of the sequences before packing."""
    torch.manual_seed(0)
    model = SRU(3, 4, 2, bidirectional=True)
    lengths = torch.tensor([3] * 8 + [2] * 16 + [1] * 8)
    x = torch.randn(3, 32, 3)
    if not enforce_sorted:
        perm = torch.randperm(32)
        x, lengths = x[:, perm], lengths[perm]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, c_n = model(packed)
    lstm_out, _ = torch.nn.LSTM(3, 4)(packed)
    for got in (out, lstm_out):
        assert torch.equal(got.batch_sizes, packed.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            want, have = getattr(packed, name), getattr(got, name)
            assert (want is None and have is None) or torch.equal(want, have)
    padded, c_ref = model(x, lengths=lengths)
    order = torch.arange(32) if packed.sorted_indices is None else packed.sorted_indices
    steps = torch.cat([torch.full((int(n),), t) for t, n in enumerate(packed.batch_sizes)])
    seqs = torch.cat([order[:int(n)] for n in packed.batch_sizes])
    torch.testing.assert_close(out.data, padded[steps, seqs])
    torch.testing.assert_close(c_n, c_ref)


def test_last_output_is_h_n() -> None:
    """parrnn.last_output gives each sequence's output at its last valid step (forward half) and at step 0
    (backward half), as nn.LSTM's h_n of the last layer."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, bidirectional=True)
    x = torch.randn(6, 3, 3)
    lengths = torch.tensor([6, 2, 4])
    out, (h_n, _) = lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
    expected = torch.cat([h_n[0], h_n[1]], dim=1)
    torch.testing.assert_close(parrnn.last_output(out, bidirectional=True), expected)
    padded, _ = pad_packed_sequence(out, batch_first=True)
    torch.testing.assert_close(parrnn.last_output(padded, lengths, batch_first=True, bidirectional=True), expected)
    uni = torch.nn.LSTM(3, 4)
    out, (h_n, _) = uni(x)
    torch.testing.assert_close(parrnn.last_output(out), h_n[0])
    with pytest.raises(ValueError, match="lengths must lie in"):
        parrnn.last_output(out, [7, 1, 1])


def test_compat_refuses_a_batch_first_mask() -> None:
    """parrnn.compat.sru keeps sru's time-first mask_pad (L, N) (also flat, as sru reads it); a batch-first (N, L)
    mask with L != N is a named error instead of a silently misread mask."""
    import parrnn.compat.sru as compat

    torch.manual_seed(0)
    model = compat.SRU(3, 4, 2)
    x = torch.randn(5, 2, 3)
    mask = torch.zeros(5, 2)
    mask[3:, 1] = 1
    expected = model(x, mask_pad=mask)[0]
    torch.testing.assert_close(model(x, mask_pad=mask.reshape(-1))[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(model(x, mask_pad=mask.unsqueeze(-1))[0], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"looks batch-first"):
        model(x, mask_pad=mask.t())
    with pytest.raises(ValueError, match=r"mask_pad must have shape \(L, N\) = \(5, 2\)"):
        model.rnn_lst[0](x, mask_pad=mask.t().contiguous())

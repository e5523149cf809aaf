"""`parrnn.compat.sru` against the real `sru` 2.6 package: same initial weights for the same seed, same outputs
and gradients, state_dicts interchangeable both ways, `sru`'s constructor order, masks and return shapes."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import parrnn
import parrnn.compat.sru as compat

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sru = pytest.importorskip("sru")

# (input_size, hidden_size, num_layers, options); projection_size 8 is off on layer 0 of SRU(4, 16) (8 >= 4)
CONFIGS = [
    (6, 6, 1, {}),
    (5, 4, 2, {"bidirectional": True}),
    (4, 16, 2, {"projection_size": 8}),
    (12, 8, 3, {"projection_size": 5, "bidirectional": True}),
    (6, 6, 2, {"v1": True}),
    (5, 3, 3, {"v1": True, "bidirectional": True, "use_tanh": True}),
    (6, 6, 2, {"layer_norm": True}),
    (5, 6, 2, {"layer_norm": True, "normalize_after": True}),
    (6, 6, 2, {"has_skip_term": False}),
    (5, 6, 2, {"has_skip_term": False, "bidirectional": True}),
    (6, 6, 2, {"rescale": True, "highway_bias": -2.0}),
    (5, 6, 2, {"rescale": True, "highway_bias": -1.0, "bidirectional": True}),
    (6, 6, 2, {"nn_rnn_compatible_return": True, "bidirectional": True}),
    (5, 6, 2, {"proj_input_to_hidden_first": True}),
    (6, 6, 2, {"weight_c_init": 0.5}),
]


def _ids(config) -> str:
    i, h, n, options = config
    return f"{i}-{h}-{n}-" + (",".join(f"{k}={v}" for k, v in options.items()) or "default")


def _pair(input_size: int, hidden: int, layers: int, options: dict, seed: int = 0, dtype=torch.float64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        ref = sru.SRU(input_size, hidden, layers, **options).to(dtype)
        torch.manual_seed(seed)
        ours = compat.SRU(input_size, hidden, layers, **options).to(dtype)
    return ref, ours


def _run(model, x, c0, mask):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model(x, c0, mask)


def _grads(model, inputs) -> dict[str, torch.Tensor]:
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    grads.update({f"input{i}": t.grad for i, t in enumerate(inputs)})
    return grads


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_same_init_outputs_and_gradients_as_sru26(config) -> None:
    input_size, hidden, layers, options = config
    ref, ours = _pair(input_size, hidden, layers, options)
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert list(our_state) == list(ref_state)
    for key in ref_state:  # same seed, same initial weights (and sru's layout)
        torch.testing.assert_close(our_state[key], ref_state[key], rtol=0, atol=0, msg=key)

    torch.manual_seed(1)
    x = torch.randn(7, 3, input_size, dtype=torch.float64)
    c0 = torch.randn(layers, 3, ours.output_size, dtype=torch.float64)
    mask = torch.zeros(7, 3, dtype=torch.uint8)
    mask[4:, 1] = 1
    for c0_, mask_ in ((None, None), (c0, mask)):
        xs = [x.clone().requires_grad_() for _ in range(2)]
        cs = [None if c0_ is None else c0_.clone().requires_grad_() for _ in range(2)]
        results = []
        for model, xi, ci in zip((ref, ours), xs, cs, strict=True):
            model.zero_grad()
            out, c_n = _run(model, xi, ci, mask_)
            (out.sin().sum() + c_n.cos().sum()).backward()
            results.append((out, c_n, _grads(model, [t for t in (xi, ci) if t is not None])))
        (ref_out, ref_c, ref_grads), (out, c_n, grads) = results
        torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(c_n, ref_c, rtol=1e-10, atol=1e-10)
        assert grads.keys() == ref_grads.keys()
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("config", CONFIGS[:6], ids=_ids)
def test_state_dicts_load_both_ways_float32(config) -> None:
    input_size, hidden, layers, options = config
    ref, _ = _pair(input_size, hidden, layers, options, seed=3, dtype=torch.float32)
    _, ours = _pair(input_size, hidden, layers, options, seed=4, dtype=torch.float32)
    x = torch.randn(9, 2, input_size)
    ours.load_state_dict(ref.state_dict())  # sru -> parrnn
    with torch.no_grad():
        torch.testing.assert_close(_run(ours, x, None, None), _run(ref, x, None, None), rtol=1e-5, atol=1e-5)
    torch.manual_seed(5)
    ours.reset_parameters()
    ref.load_state_dict(ours.state_dict())  # parrnn -> sru
    with torch.no_grad():
        torch.testing.assert_close(_run(ref, x, None, None), _run(ours, x, None, None), rtol=1e-5, atol=1e-5)


def test_loaded_scale_x_buffer_is_used() -> None:
    ref, ours = _pair(5, 5, 1, {"rescale": True, "highway_bias": -2.0})
    state = ref.state_dict()
    state["rnn_lst.0.scale_x"] = torch.tensor([3.0], dtype=torch.float64)
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(_run(ours, x, None, None), _run(ref, x, None, None), rtol=1e-10, atol=1e-10)


def test_v1_with_nonzero_weight_c_behaves_as_sru() -> None:
    ref, ours = _pair(5, 5, 2, {"v1": True})
    state = ref.state_dict()
    state["rnn_lst.1.weight_c"] = torch.randn(10, dtype=torch.float64)
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(_run(ours, x, None, None), _run(ref, x, None, None), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cell_on_one_step_input(bidirectional: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        ref = sru.SRUCell(4, 3, bidirectional=bidirectional, highway_bias=-1.0).double()
        torch.manual_seed(0)
        ours = compat.SRUCell(4, 3, bidirectional=bidirectional, highway_bias=-1.0).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    c0 = torch.randn(5, ours.output_size, dtype=torch.float64)
    mask = torch.tensor([0, 1, 0, 0, 1])
    for args in ((x,), (x, c0), (x, c0, mask)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ref(*args)
        got = ours(*args)
        assert got[0].shape == expected[0].shape  # (1, N, dirs * H), as sru returns it
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_positional_constructor_and_defaults_are_sru26s() -> None:
    ours, ref = compat.SRU(5, 4, 2, 0.1), sru.SRU(5, 4, 2, 0.1)
    for name in ("num_layers", "dropout", "projection_size", "bidirectional", "nn_rnn_compatible_return"):
        assert getattr(ours, name) == getattr(ref, name), name
    for ours_cell, ref_cell in zip(ours.rnn_lst, ref.rnn_lst, strict=True):
        for name in ("dropout", "highway_bias", "rescale", "v1", "num_matrices", "projection_size",
                     "activation_type", "has_skip_term"):
            assert getattr(ours_cell, name) == getattr(ref_cell, name), name
    cell, ref_cell = compat.SRUCell(4, 4, 0.0, 0.0, True, 2), sru.SRUCell(4, 4, 0.0, 0.0, True, 2)
    assert (cell.bidirectional, cell.projection_size, cell.rescale) == (True, 2, True)
    assert (ref_cell.bidirectional, ref_cell.projection_size) == (True, 2)
    assert compat.__version__ == sru.__version__


def test_packed_sequence_input() -> None:
    ref, ours = _pair(4, 4, 2, {"bidirectional": True})
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_out, expected_c = ref(packed)
    out, c_n = ours(packed)
    torch.testing.assert_close(out.data, expected_out.data, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c_n, expected_c, rtol=1e-10, atol=1e-10)


def test_training_dropout_draws_sru26s_masks() -> None:
    ref, ours = _pair(6, 6, 2, {"dropout": 0.3, "rnn_dropout": 0.2})
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    torch.manual_seed(9)
    expected = _run(ref.train(), x, None, None)
    torch.manual_seed(9)
    torch.testing.assert_close(_run(ours.train(), x, None, None), expected, rtol=1e-10, atol=1e-10)


def test_what_parrnn_cannot_do_raises() -> None:
    with pytest.raises(NotImplementedError, match="custom_m"):
        compat.SRU(4, 4, custom_m=torch.nn.Linear(4, 12))
    with pytest.raises(NotImplementedError, match="custom_m"):
        compat.SRUCell(4, 4, custom_m=torch.nn.Linear(4, 12))
    with pytest.raises(ValueError, match="mask_pad"):
        compat.SRU(4, 4)(torch.randn(3, 2, 4), mask_pad=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="input_size"):
        compat.SRU(4, 4)(torch.randn(3, 2, 5))


def test_parrnn_from_sru_accepts_a_compat_model() -> None:
    torch.manual_seed(0)
    ours = compat.SRU(4, 16, 2, projection_size=8, bidirectional=True, rescale=True, highway_bias=-1.0).double()
    native = parrnn.SRU.from_sru(ours)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(native(x), ours(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("model", [compat.SRU(4, 4, 2), compat.SRUCell(4, 4)], ids=["SRU", "SRUCell"])
def test_bad_input_is_named(model) -> None:
    """Issue 21: a float64 input on a float32 model raised "expected m1 and m2 to have the same dtype", a list
    mask_pad an AttributeError."""
    x = torch.randn(3, 2, 4)
    with pytest.raises(TypeError, match="input dtype must match the layer's parameters. Expected torch.float32, "
                                        "got torch.float64"):
        model(x.double())
    with pytest.raises(TypeError, match="mask_pad must be a torch.Tensor .* got list"):
        model(x, None, [[0, 0], [0, 0], [0, 1]])


def test_float64_c0_with_float32_input_as_in_sru26() -> None:
    """sru 2.6 takes a float64 c0 beside float32 input (output float32, c_n float64); so does the compat SRU."""
    ref, ours = _pair(5, 5, 2, {}, dtype=torch.float32)
    x = torch.randn(6, 3, 5)
    c0 = torch.randn(2, 3, 5, dtype=torch.float64)
    expected_out, expected_c = _run(ref, x, c0, None)
    out, c_n = _run(ours, x, c0, None)
    assert (out.dtype, c_n.dtype) == (expected_out.dtype, expected_c.dtype) == (torch.float32, torch.float64)
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_n, expected_c, rtol=1e-5, atol=1e-5)


def test_writes_to_scale_x_and_v1_weight_c_are_used_at_the_next_call() -> None:
    """The compat classes cached scale_x and the v1 peephole rule as Python values, refreshed only by
    reset_parameters / load_state_dict: an in-place write was ignored. Both are read at every call now."""
    for options, write in (({"rescale": True, "highway_bias": -2.0}, lambda cell: cell.scale_x.fill_(3.0)),
                           ({"v1": True}, lambda cell: cell.weight_c.normal_())):
        ref, ours = _pair(5, 5, 2, options)
        x = torch.randn(4, 2, 5, dtype=torch.float64)
        _run(ours, x, None, None)  # a first call before the write
        torch.manual_seed(3)
        with torch.no_grad():
            write(ref.rnn_lst[1])
        torch.manual_seed(3)
        with torch.no_grad():
            write(ours.rnn_lst[1])
        torch.testing.assert_close(_run(ours, x, None, None), _run(ref, x, None, None), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3], CONFIGS[4]], ids=_ids)
def test_optimizer_state_moves_from_sru_unchanged(config) -> None:
    """An Adam state trained on `sru.SRU` continues on the compat model as on `sru.SRU` (same layout, same order)."""
    input_size, hidden, layers, options = config
    ref, ours = _pair(input_size, hidden, layers, options, seed=7)
    x = torch.randn(6, 3, input_size, dtype=torch.float64)
    opt_ref = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt_ref.zero_grad()
        _run(ref, x, None, None)[0].square().sum().backward()
        opt_ref.step()
    ours.load_state_dict(ref.state_dict())
    opt_ours = torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    opt_ours.load_state_dict(copy.deepcopy(opt_ref.state_dict()))  # not shared: each steps its own moments
    for model, opt in ((ref, opt_ref), (ours, opt_ours)):
        opt.zero_grad()
        _run(model, x, None, None)[0].square().sum().backward()
        opt.step()
    for (name, p_ref), (_, p_ours) in zip(ref.state_dict().items(), ours.state_dict().items(), strict=True):
        torch.testing.assert_close(p_ours, p_ref, rtol=1e-9, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_compat_cell_is_parrnn_cell_with_sru_layout() -> None:
    """One SRU cell: the compat cell is a `parrnn.SRUCell` and adds no forward of its own, only the layout."""
    cell = compat.SRUCell(5, 4, bidirectional=True)
    assert isinstance(cell, parrnn.SRUCell)
    assert "run" not in compat.SRUCell.__dict__ and "project" not in compat.SRUCell.__dict__
    assert cell.weight.shape == (5, 4 * 2 * 4) and cell.bias.shape == (16,) and cell.weight_c.shape == (16,)

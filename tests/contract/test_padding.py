"""Padding: NaN/inf on padded steps (given by ``lengths``, ``mask`` or packing) reach no output and no gradient, on
every CPU backend; a PackedSequence comes back as a PackedSequence with the input's indices and row order (as
`torch.nn.LSTM`'s), equal to running the padded input with its lengths."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .registry import BY_NAME, I, L, N, call, layers, set_backend

LENGTHS = [L, 4, 2]


def _backend_params() -> list:
    return [pytest.param(la.name, b, id=f"{la.name}-{b}") for la in layers() for b in la.backends]


def _run(layer, model, x, how: str):
    """``(output, state)`` with the padding given as ``how`` (``lengths``, ``mask`` or a ``PackedSequence`` of
    ``x``, whose output comes back padded to ``L``)."""
    if how == "lengths":
        return call(layer, model, x, lengths=LENGTHS)
    if how == "packed":
        out, state = call(layer, model, pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False))
        if isinstance(out, PackedSequence):
            out = pad_packed_sequence(out, total_length=L)[0]
        return out, state
    mask = torch.arange(L).unsqueeze(1) >= torch.tensor(LENGTHS).unsqueeze(0)  # (L, N), True on padding
    return call(layer, model, x, mask=mask)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("how", ["lengths", "mask", "packed"])
@pytest.mark.parametrize(("name", "backend"), _backend_params())
def test_nan_and_inf_on_padded_steps_reach_no_output_and_no_gradient(name: str, backend: str, how: str,
                                                                    mode: str) -> None:
    layer = BY_NAME[name]
    model = layer.make().train(mode == "train")
    set_backend(model, backend)
    clean = torch.randn(L, N, I)
    dirty = clean.clone()
    for n, length in enumerate(LENGTHS):
        dirty[length:, n] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, 0.0])[:I]
    results = []
    for x in (clean, dirty):
        x = x.clone().requires_grad_(mode == "train")
        model.zero_grad()
        with torch.set_grad_enabled(mode == "train"):
            out, state = _run(layer, model, x, how)
            if mode == "train":
                (out.square().sum() + sum(t.square().sum() for t in _tensors(state))).backward()
        grads = [x.grad] + [p.grad for p in model.parameters()] if mode == "train" else []
        results.append(([out, *_tensors(state)], grads))
    (values, grads), (dirty_values, dirty_grads) = results
    for got, want in zip(dirty_values, values, strict=True):
        assert torch.isfinite(got).all(), "a padded step's NaN/inf reached the output or state"
        torch.testing.assert_close(got, want)
    for got, want in zip(dirty_grads, grads, strict=True):
        if want is None:
            assert got is None
            continue
        assert torch.isfinite(got).all(), "a padded step's NaN/inf reached a gradient"
        torch.testing.assert_close(got, want)
    if mode == "train":
        pad = torch.arange(L).unsqueeze(1) >= torch.tensor(LENGTHS).unsqueeze(0)
        assert (dirty_grads[0][pad] == 0).all(), "padded inputs get a zero gradient"


def _tensors(state) -> list[torch.Tensor]:
    from .registry import all_tensors

    return list(all_tensors(state))


#: the issue's reproduction: tied lengths, so a re-sort of the rows changes their order
PACKED_LENGTHS = [3] * 8 + [2] * 16 + [1] * 8


def _packed_input(sorted_input: bool) -> tuple[torch.Tensor, torch.Tensor, PackedSequence]:
    torch.manual_seed(3)
    lengths = torch.tensor(PACKED_LENGTHS)
    if not sorted_input:
        lengths = lengths[torch.randperm(len(PACKED_LENGTHS))]
    x = torch.randn(3, len(PACKED_LENGTHS), I)
    return x, lengths, pack_padded_sequence(x, lengths, enforce_sorted=sorted_input)


def _same_indices(got: torch.Tensor | None, want: torch.Tensor | None) -> bool:
    return (got is None) == (want is None) and (got is None or torch.equal(got, want))


def _sru_package_output(model, packed: PackedSequence) -> PackedSequence | None:
    """What `sru` 2.6 itself returns for this packed input (the compat layers' pinned behaviour)."""
    sru = pytest.importorskip("sru", reason="the sru package pins parrnn.compat's behaviour")
    reference = sru.SRU(model.input_size, model.hidden_size, model.num_layers)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        return reference(packed)[0]


@pytest.mark.parametrize("sorted_input", [True, False], ids=["enforce_sorted", "unsorted"])
@pytest.mark.parametrize("name", [la.name for la in layers()])
def test_packed_sequence_out_keeps_the_input_indices_and_row_order(name: str, sorted_input: bool) -> None:
    layer = BY_NAME[name]
    model = layer.make().eval()
    x, lengths, packed = _packed_input(sorted_input)
    with torch.no_grad():
        out, state = call(layer, model, packed)
        padded_out, padded_state = call(layer, model, x, lengths=lengths)
    if layer.family == "sliced":  # the top level's outputs: per sequence, not per step (documented)
        torch.testing.assert_close(out, padded_out)
        torch.testing.assert_close(state, padded_state)
        return
    assert isinstance(out, PackedSequence)
    if layer.family == "compat":  # sru 2.6 re-sorts the rows (enforce_sorted=False): pinned, not fixed
        expected = _sru_package_output(model, packed)
        torch.testing.assert_close(out.data, expected.data)
        for got, want in ((out.sorted_indices, expected.sorted_indices),
                          (out.unsorted_indices, expected.unsorted_indices)):
            assert _same_indices(got, want), (got, want)
        return
    for got, want in ((out.sorted_indices, packed.sorted_indices), (out.unsorted_indices, packed.unsorted_indices)):
        assert _same_indices(got, want), f"nn.LSTM returns the input's indices: got {got}, input's {want}"
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    expected = pack_padded_sequence(padded_out, lengths, enforce_sorted=sorted_input)
    torch.testing.assert_close(out.data, expected.data)  # the same rows in the same order as the input's
    torch.testing.assert_close(out.data.square().sum(), expected.data.square().sum())
    unpacked, unpacked_lengths = pad_packed_sequence(out)
    torch.testing.assert_close(unpacked, padded_out)
    assert torch.equal(unpacked_lengths, lengths)
    for got, want in zip(_tensors(state), _tensors(padded_state), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", [la.name for la in layers()])
def test_packed_sequence_gradients_equal_the_padded_input_with_lengths(name: str) -> None:
    layer = BY_NAME[name]
    model = layer.make()
    x, lengths, _ = _packed_input(False)
    x = x.requires_grad_()
    out, _ = call(layer, model, pack_padded_sequence(x, lengths, enforce_sorted=False))
    data = out.data if isinstance(out, PackedSequence) else out
    (grad_packed,) = torch.autograd.grad(data.square().sum(), x)
    padded_out, _ = call(layer, model, x, lengths=lengths)
    if isinstance(out, PackedSequence):
        padded_out = pack_padded_sequence(padded_out, lengths, enforce_sorted=False).data
    (grad_padded,) = torch.autograd.grad(padded_out.square().sum(), x)
    torch.testing.assert_close(grad_packed, grad_padded)

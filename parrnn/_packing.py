"""Sequences in and out of every layer: `torch.nn.utils.rnn.PackedSequence` in, `PackedSequence` out, as
`torch.nn.LSTM` does it, and `last_output` (each sequence's output at its last valid step).

Every layer runs a packed input the same way: unpack it to a padded tensor in the order of the sequences before
packing (so an initial state and the returned state are in that order, as ``nn.LSTM``'s ``h_0``/``h_n``), run the
padded input with its lengths, and pack the output again with the input's ``batch_sizes``, ``sorted_indices`` and
``unsorted_indices``: row ``i`` of ``output.data`` then belongs to the same sequence and step as row ``i`` of
``input.data``, also when lengths tie (repacking with ``enforce_sorted=False`` would sort the ties its own way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from parrnn import _validation as check


def unpack(input: PackedSequence, batch_first: bool) -> tuple[Tensor, Tensor]:
    """``(padded, lengths)``: ``padded`` ``(L, N, *)`` (``(N, L, *)`` with ``batch_first``) in the order of the
    sequences before packing, ``lengths`` ``(N,)`` int64 on the CPU in the same order."""
    return pad_packed_sequence(input, batch_first=batch_first)


def repack(output: Tensor, like: PackedSequence, lengths: Tensor, batch_first: bool) -> PackedSequence:
    """Pack ``output`` ``(L, N, *)`` (``(N, L, *)`` with ``batch_first``; sequences in their original order, as
    `unpack` gave them) with the ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices`` of ``like``, the
    packed input: ``result.data`` has the rows of ``like.data`` (same sequence and step at every row)."""
    dim = 0 if batch_first else 1
    order = like.sorted_indices
    if order is not None:
        output = output.index_select(dim, order.to(output.device))
        lengths = lengths.index_select(0, order.to(lengths.device))
    packed = pack_padded_sequence(output, lengths.cpu(), batch_first=batch_first, enforce_sorted=True)
    return PackedSequence(packed.data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def refuse_padding_arguments(*given: tuple[str, Any]) -> None:
    """A packed sequence carries its own lengths: any ``(name, value)`` of ``given`` (``lengths``, ``mask``, ...)
    whose value is not ``None`` is a ValueError naming it."""
    for name, value in given:
        if value is not None:
            raise ValueError(f"a PackedSequence carries its own lengths; do not pass {name}")


def run_packed(run: Callable[[Tensor, Tensor], tuple[Any, ...]], input: PackedSequence, batch_first: bool,
               *given: tuple[str, Any]) -> tuple[Any, ...]:
    """``run(padded, lengths)`` on the unpacked ``input``, its first result (the output) packed back like the input
    (`repack`); the other results (the state, ...) are returned as they are. ``given``: ``(name, value)`` pairs of
    padding arguments the caller also received (``lengths``, ``mask``): a packed sequence carries its own, so any
    that is not ``None`` is an error naming it."""
    refuse_padding_arguments(*given)
    padded, lengths = unpack(input, batch_first)
    result = run(padded, lengths)
    return (repack(result[0], input, lengths, batch_first), *result[1:])


def last_output(output: Tensor | PackedSequence, lengths: Tensor | Sequence[int] | None = None, *,
                batch_first: bool = False, bidirectional: bool = False) -> Tensor:
    """Each sequence's output at its last valid step, ``(N, H_out)``: what `torch.nn.LSTM`'s ``h_n[-1]`` holds,
    without indexing by ``lengths - 1``.

    Args:
        output: a layer's output ``(L, N, H_out)`` (``(N, L, H_out)`` with ``batch_first``), or a
            ``PackedSequence`` (its own lengths are used; the result is in the order of the sequences before
            packing, like ``h_n``).
        lengths: ``(N,)`` integers in ``[1, L]`` (tensor or list); ``None``: every sequence has ``L`` steps.
        batch_first: ``output`` is batch-major.
        bidirectional: ``output``'s features are ``[forward | backward]`` halves (a bidirectional layer's): the
            forward half is taken at the last valid step and the backward half at step 0, where the reverse
            direction ends (as ``h_n`` holds both directions' final states).

    Returns:
        ``(N, H_out)``.
    """
    if isinstance(output, PackedSequence):
        refuse_padding_arguments(("lengths", lengths))
        output, lengths = unpack(output, batch_first)
    if not isinstance(output, Tensor):
        raise TypeError(f"output must be a torch.Tensor or a PackedSequence, got {type(output).__name__}")
    if output.dim() != 3 or 0 in output.shape[:2]:
        layout = "(N, L, H_out)" if batch_first else "(L, N, H_out)"
        raise ValueError(f"output must be 3-D {layout} with L, N >= 1, got shape {tuple(output.shape)}")
    x = output.transpose(0, 1) if batch_first else output  # (L, N, H_out)
    if bidirectional and x.size(-1) % 2:
        raise ValueError(f"a bidirectional output has an even number of features ([forward | backward]), got "
                         f"{x.size(-1)}")
    counts = None if lengths is None else check.lengths_to_tensor(lengths, x.size(1), x.size(0), x.device)
    return gather_last(x, counts, bidirectional)


def gather_last(x: Tensor, counts: Tensor | None, bidirectional: bool) -> Tensor:
    """`last_output` of time-major ``x`` ``(L, N, F)`` with validated ``counts`` ``(N,)`` int64 in ``[1, L]``
    (``None``: ``L``), without checks (for the layers' inner loops): ``(N, F)``."""
    last = x[-1] if counts is None else x.gather(0, (counts - 1).view(1, -1, 1).expand(1, -1, x.size(-1)))[0]
    if not bidirectional:
        return last
    half = x.size(-1) // 2
    return torch.cat([last[:, :half], x[0, :, half:]], dim=1)

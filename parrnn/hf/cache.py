"""`ParrnnCache`: the recurrent state of every block, carried through `generate` as transformers' ``Cache``.

A recurrent model's cache is its state: one entry per block, of a fixed size for every cell but SRU++ with
attention (whose layers keep keys and values, ``proj_size`` wide). `generate` only needs to hand the cache from
one forward to the next, reorder it for beam search (`reorder_cache`) and ask how many positions it has seen
(`get_seq_length`); it cannot be cropped (a recurrence cannot forget its last tokens), so assisted decoding is
refused, as for Mamba (``_is_stateful``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import Cache

from parrnn.hf.mixers import State, map_state, state_tensors


class ParrnnStateLayer:
    """The state of one block: what its recurrent layer returned (see `parrnn.hf.mixers.map_state`)."""

    is_compileable = False
    is_sliding = False
    supports_early_init = False
    is_croppable = False

    def __init__(self) -> None:
        self.state: State | None = None

    def __repr__(self) -> str:
        shapes = [tuple(t.shape) for t in state_tensors(self.state)]
        return f"ParrnnStateLayer({shapes})"

    @property
    def batch_size(self) -> int:
        tensors = state_tensors(self.state)
        if not tensors:
            return -1
        return tensors[0].size(1) if tensors[0].dim() > 1 else tensors[0].size(0)

    def reset(self) -> None:
        self.state = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.state = map_state(self.state, lambda t, dim: t.index_select(dim, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        self.state = map_state(self.state, lambda t, dim: t.index_select(dim, indices.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state = map_state(self.state, lambda t, dim: t.repeat_interleave(repeats, dim=dim))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError("a recurrent state cannot be cropped (it does not keep its past tokens)")

    def offload(self) -> None:
        self.state = map_state(self.state, lambda t, dim: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:  # the state stays where the model runs
        pass

    def get_max_length(self) -> int:
        return -1

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in state_tensors(self.state))


class ParrnnCache(Cache):
    """The decoding state of a [ParrnnForCausalLM][parrnn.hf.ParrnnForCausalLM]: ``layers[i].state`` is block
    ``i``'s recurrent state, and `get_seq_length` the positions consumed (padding included).

    Args:
        num_layers: blocks of the model (``config.num_layers``).
    """

    def __init__(self, num_layers: int, **kwargs: Any) -> None:
        super().__init__(layers=[ParrnnStateLayer() for _ in range(num_layers)])
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return query_length + self.seen_tokens, 0

    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = None) -> bool:
        return self.seen_tokens > 0

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError("a recurrent state cannot be cropped (it does not keep its past tokens)")

    def activate_past_recording(self) -> None:
        raise NotImplementedError("a recurrent state cannot record its past for a rollback (assisted decoding)")

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def states(self) -> list[State | None]:
        """Block by block, the recurrent state (None before the first forward)."""
        return [layer.state for layer in self.layers]

    def nbytes(self) -> int:
        """Bytes held by the states of every block."""
        return sum(layer.nbytes() for layer in self.layers)

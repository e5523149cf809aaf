"""One parrnn layer per block, behind the two calls a language model needs: the parallel `forward` over a chunk of
tokens (prefill, training) and `step` (one token, decoding). Everything here is time-major: ``x`` ``(L, N, H)``.

The layer is the cell's own module with ``num_layers=1`` (``parrnn.SRU``, ``parrnn.SRUpp``, ``parrnn.MinGRU``, ...),
so its parameters, kernels and ``step`` are the library's; this file only adapts the calls. States are what the
layer returns (a tensor ``(1, N, H)``, a tuple of such tensors, or an ``SRUppState``); `map_state` applies a
per-tensor function along each tensor's batch dimension (beam search reordering, memory accounting).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import parrnn
from parrnn.cells import cell_names, get_cell
from parrnn.hf.configuration import available_cells
from parrnn.srupp import SRUppState

State = Any  # a tensor, a tuple of tensors or an SRUppState, as the layer returns it

#: options the model sets itself (the block stacks layers and owns the layout)
RESERVED_OPTIONS = ("input_size", "hidden_size", "num_layers", "batch_first", "bidirectional", "backend")


def layer_class(cell: str) -> type[nn.Module]:
    """The parrnn layer class behind a ``cell`` word: SRU, SRU++ or a registered cell's (`parrnn.cells`)."""
    if cell == "sru":
        return parrnn.SRU
    if cell == "srupp":
        return parrnn.SRUpp
    if cell not in cell_names():
        raise ValueError(f"cell must be one of {available_cells()}, got {cell!r}")
    return get_cell(cell).cls


def _check_options(cell: str, cls: type[nn.Module], options: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Named errors for cell_options the layer's constructor does not take or that the model sets itself."""
    reserved = sorted(set(options) & set(RESERVED_OPTIONS))
    if reserved:
        raise ValueError(f"cell_options must not set {reserved}: the model sets them (hidden_size and num_layers "
                         "are config fields; blocks are causal and time-major)")
    params = inspect.signature(cls.__init__).parameters
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
    accepted = (accepted - set(RESERVED_OPTIONS)) | set(extra)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"cell_options {unknown} are not options of {cls.__name__} (cell={cell!r}); accepted: "
                         f"{sorted(accepted)}")


class Mixer(nn.Module):
    """The recurrent sub-layer of block ``index``: ``layer`` is the parrnn module (one layer, time-major)."""

    #: True where the state grows with every token (SRU++ attention keeps keys and values)
    grows = False

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def reset_parameters(self) -> None:
        self.layer.reset_parameters()

    def forward(self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
                ) -> tuple[Tensor, State]:
        """``x`` ``(L, N, H)``, the state after earlier tokens (None: zeros), ``lengths`` ``(N,)`` (steps
        ``t >= lengths[n]`` are padding at the end) -> ``(y (L, N, H), state after each row's last valid step)``."""
        y, new = self.layer(x, state, lengths)
        return y, new

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One token ``x`` ``(N, H)`` -> ``(y (N, H), state)``, through the layer's own ``step``."""
        return self.layer.step(x, state)


class SRUppMixer(Mixer):
    """``parrnn.SRUpp`` with one layer. The prefill runs the parallel causal forward, then caches the prompt's
    keys and values through ``init_state(memory=...)`` (the layer's input is the block's ``x``); decoding steps
    append one key and value per token. Without attention the state is the cell state alone."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__(layer)
        self.has_attention = bool(layer.layers[0].has_attention)
        self.grows = self.has_attention

    def forward(self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
                ) -> tuple[Tensor, State]:
        batch, length = x.size(1), x.size(0)
        if state is not None and self.has_attention:  # continue from cached keys: one step per token
            outputs = []
            for t in range(length):
                y_t, new = self.step(x[t], state)
                if lengths is not None:  # rows whose chunk ended keep their state
                    new = select_rows(lengths > t, new, state)
                state = new
                outputs.append(y_t)
            return torch.stack(outputs), state
        c0 = None if state is None else state.c
        out = self.layer(x, c0, lengths, attn_mask="causal") if self.has_attention else self.layer(x, c0, lengths)
        y, final = out[0], out[1]
        c_n = final.c if isinstance(final, SRUppState) else final
        pad = None
        if lengths is not None:
            pad = torch.arange(length, device=x.device).unsqueeze(1) >= lengths.to(x.device).unsqueeze(0)
        memory = [x] if self.has_attention else None
        new = self.layer.init_state(batch, c0=c_n, memory=memory, memory_mask_pad=pad if memory else None, like=x)
        return y, new

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        if state is None:
            state = self.layer.init_state(x.size(0), like=x)
        return self.layer.step(x, state)


class _BlockHGRN(parrnn.HGRN):
    """A one-layer ``parrnn.HGRN`` whose decay floor (HGRN's lower bound) is given by the model for this call:
    the model holds ``lower_bounds`` ``(num_layers, H)`` for all blocks, so the floor rises with depth as in a
    multi-layer HGRN (and in fla's HGRN LM)."""

    floor: Tensor | None = None

    def floors(self) -> list[Tensor | None]:
        return [self.floor]


class HGRNMixer(Mixer):
    """``parrnn.HGRN`` with one layer and the floor of its block (`ParrnnModel.floors`)."""

    def forward(self, x: Tensor, state: State | None = None, lengths: Tensor | None = None,
                floor: Tensor | None = None) -> tuple[Tensor, State]:
        self.layer.floor = floor
        try:
            return super().forward(x, state, lengths)
        finally:
            self.layer.floor = None

    def step(self, x: Tensor, state: State | None, floor: Tensor | None = None) -> tuple[Tensor, State]:
        self.layer.floor = floor
        try:
            return super().step(x, state)
        finally:
            self.layer.floor = None


def uses_lower_bounds(cell: str, options: dict[str, Any]) -> bool:
    """Whether the model holds HGRN's lower bounds (``cell="hgrn"`` with ``lower_bound`` on, the default)."""
    return cell == "hgrn" and bool(options.get("lower_bound", True))


def build_mixer(cell: str, hidden_size: int, options: dict[str, Any], *, backend: str, index: int,
                num_layers: int) -> Mixer:
    """The recurrent sub-layer of block ``index`` (of ``num_layers``) for ``cell`` with ``cell_options``."""
    cls = layer_class(cell)
    options = dict(options)
    if cell == "srupp":
        _check_options(cell, cls, options, extra=("proj_size",))
        proj_size = int(options.pop("proj_size", max(1, hidden_size // 4)))
        every = int(options.pop("attention_every_n_layers", 1))
        last = int(options.pop("attention_last_n_layers", -1))
        attention = (num_layers - index <= last) if last != -1 else (index + 1) % every == 0
        layer = cls(hidden_size, hidden_size, proj_size, num_layers=1, backend=backend,
                    attention_last_n_layers=-1 if attention else 0, **options)
        return SRUppMixer(layer)
    _check_options(cell, cls, options)
    if cell == "hgrn":  # the floor comes from the model's lower bounds (or none without them)
        options.pop("lower_bound", None)
        return HGRNMixer(_BlockHGRN(hidden_size, hidden_size, num_layers=1, backend=backend, lower_bound=False,
                                    **options))
    layer = cls(hidden_size, hidden_size, num_layers=1, backend=backend, **options)
    return Mixer(layer)


# ---- states ---------------------------------------------------------------------------------------------------

def map_state(state: State, fn: Callable[[Tensor, int], Tensor]) -> State:
    """``fn(tensor, batch_dim)`` on every tensor of a layer's state: layer-first tensors ``(layers, N, ...)`` (and
    tuples of them) have the batch at dim 1; an ``SRUppState``'s keys, values and key padding at dim 0."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state, 1)
    if isinstance(state, SRUppState):
        return SRUppState(
            c=fn(state.c, 1),
            keys=[None if k is None else fn(k, 0) for k in state.keys],
            values=[None if v is None else fn(v, 0) for v in state.values],
            key_padding=None if state.key_padding is None else fn(state.key_padding, 0))
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(s, fn) for s in state)
    raise TypeError(f"unsupported state type {type(state).__name__}")


def state_tensors(state: State) -> list[Tensor]:
    """Every tensor of a state."""
    found: list[Tensor] = []

    def visit(t: Tensor, dim: int) -> Tensor:
        found.append(t)
        return t

    map_state(state, visit)
    return found


def select_rows(keep: Tensor, new: State, old: State) -> State:
    """Per row (``keep`` ``(N,)`` bool): ``new``'s state where True, ``old``'s where False; same structure and
    shapes (an SRU++ state keeps the new key and value, marked as padding where the row is not kept)."""
    if isinstance(new, SRUppState):
        c = torch.where(keep.view(1, -1, 1), new.c, old.c)
        length = new.keys[0].size(2) if new.keys and new.keys[0] is not None else 0
        padding = new.key_padding
        if length:
            if padding is None:
                padding = torch.zeros(keep.numel(), length, dtype=torch.bool, device=keep.device)
            padding = padding.clone()
            padding[:, -1] |= ~keep
        return SRUppState(c=c, keys=new.keys, values=new.values, key_padding=padding)
    olds = iter(state_tensors(old))

    def choose(t: Tensor, dim: int) -> Tensor:
        shape = [1] * t.dim()
        shape[dim] = -1
        return torch.where(keep.view(shape), t, next(olds))

    return map_state(new, choose)

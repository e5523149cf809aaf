r"""The cell registry: every diagonal-recurrence cell of parrnn, by name, with its equations.

A cell is one file (``parrnn/<cell>.py``) that ends with `register_cell`: its class, its *reference step* (the
cell's equations for one token of one direction of one layer, written from the paper and the parameters'
documented layout, sharing no code with the fast path) and, where the directions are mixed after the recurrence,
its *reference readout*. Everything that lists cells reads this registry: [SlicedRNN][parrnn.SlicedRNN]'s
``cell="<name>"``, ``parrnn-bench``'s model names, the accuracy tasks' encoders and the tests, which compare each
cell with `reference_forward` (its reference step looped over time). See docs/cells.md, "Adding a cell".

The cells' files are imported by ``import parrnn``, so the registry is complete once ``parrnn`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: ``reference_step(model, layer, direction, x_t, h, carry) -> (y_t, h, carry)``: one token of one direction of
#: layer ``layer`` of ``model``. ``x_t`` ``(N, F)`` is the layer's input (the reverse direction sees the sequence
#: reversed), ``h`` ``(N, H)`` the direction's state, ``carry`` what the cell keeps of earlier inputs (``None``
#: before the first token when the state carries nothing; else the layer's ``carry_size`` features of the
#: model's state, as `DiagonalLayer.carry` defines them). ``y_t`` ``(N, H)`` is the direction's output before the
#: readout.
ReferenceStep = Callable[[nn.Module, int, int, Tensor, Tensor, "Tensor | None"], tuple[Tensor, Tensor, Any]]
#: ``reference_readout(model, layer, y) -> output``: the layer's output from every direction's ``y`` ``(L, N,
#: dirs * H)`` (directions concatenated); the identity when a cell registers none.
ReferenceReadout = Callable[[nn.Module, int, Tensor], Tensor]


@dataclass(frozen=True)
class Cell:
    """A registered cell (see `register_cell`)."""

    name: str
    cls: type[nn.Module]
    reference_step: ReferenceStep
    reference_readout: ReferenceReadout | None = None
    #: whether ``bidirectional=True`` is supported
    bidirectional: bool = True
    #: the keyword whose value, when given and non-zero, is the output's features per direction (MinGRU's
    #: ``output_projection_size``, RG-LRU's ``output_size``); else they are ``H``
    output_size_keyword: str | None = None
    #: keyword arguments `build` adds, from ``(input_size, hidden_size)``, so that the output has ``dirs * H``
    #: features (RG-LRU's output defaults to ``input_size``)
    build_defaults: Callable[[int, int], dict[str, Any]] | None = None

    def build(self, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs: Any) -> nn.Module:
        """The cell with `torch.nn.GRU`'s shapes, as SlicedRNN, the benchmark and the tasks use it:
        ``cls(input_size, hidden_size, num_layers, **kwargs)`` with output ``(L, N, dirs * hidden_size)`` unless
        ``kwargs`` sets `output_size_keyword`."""
        if self.build_defaults is not None:
            kwargs = {**self.build_defaults(input_size, hidden_size), **kwargs}
        return self.cls(input_size, hidden_size, num_layers, **kwargs)

    def output_features(self, hidden_size: int, kwargs: dict[str, Any]) -> int:
        """Features per direction of `build`'s output for these ``kwargs``."""
        size = None
        if self.output_size_keyword is not None:
            size = kwargs.get(self.output_size_keyword) or kwargs.get("proj_size")  # (proj_size: MinGRU's old name)
        return int(size or hidden_size)


_REGISTRY: dict[str, Cell] = {}


def register_cell(name: str, cls: type[nn.Module], *, reference_step: ReferenceStep,
                  reference_readout: ReferenceReadout | None = None, bidirectional: bool = True,
                  output_size_keyword: str | None = None,
                  build_defaults: Callable[[int, int], dict[str, Any]] | None = None) -> Cell:
    """Register ``cls`` under ``name`` (lower case; what ``SlicedRNN(cell=name)``, ``parrnn-bench --models``
    and the tasks' ``--model`` accept). ``cls(input_size, hidden_size, num_layers, **options)`` must follow the
    layer protocol (docs/usage.md). Registering a taken name with another class raises ``ValueError``;
    registering the same again (a module reloaded) replaces the entry."""
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"name must be a non-empty lower-case string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    if not callable(reference_step):
        raise TypeError(f"reference_step must be callable, got {type(reference_step).__name__}")
    old = _REGISTRY.get(name)
    if old is not None and old.cls.__qualname__ != cls.__qualname__:
        raise ValueError(f"cell name {name!r} is already registered for {old.cls.__qualname__}")
    cell = Cell(name, cls, reference_step, reference_readout, bool(bidirectional), output_size_keyword,
                build_defaults)
    _REGISTRY[name] = cell
    return cell


def get_cell(name: str) -> Cell:
    """The registered cell ``name``; ``KeyError`` naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no cell named {name!r}; registered: {', '.join(cell_names())}") from None


def cell_names() -> tuple[str, ...]:
    """Names of the registered cells, in registration order."""
    return tuple(_REGISTRY)


# ---- the reference: every cell's equations as one loop --------------------------------------------------------

def reference_projection(layer: nn.Module, x: Tensor, direction: int) -> Tensor:
    """``x W + b`` of one direction from `DiagonalLayer`'s documented layout: ``weight`` ``(F, blocks * dirs *
    H)`` with column blocks (block, direction, unit), ``bias`` on the first blocks. ``x`` ``(N, F)`` ->
    ``(N, blocks, H)``."""
    dirs, hidden = layer.num_directions, layer.hidden_size
    weight = layer.weight.view(layer.input_size, layer.blocks, dirs, hidden)[:, :, direction]
    u = torch.einsum("nd,dbh->nbh", x, weight)
    if layer.bias is not None:
        bias = layer.bias.view(-1, dirs, hidden)[:, direction]
        u = u + F.pad(bias, (0, 0, 0, layer.blocks - bias.size(0)))
    return u


def reference_forward(model: nn.Module, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """A registered cell's stack over ``x`` ``(L, N, H_in)`` (time-major, every sequence of full length) from its
    reference step and readout, one token at a time: ``(output, state)`` as the model returns them."""
    cell = next((c for c in _REGISTRY.values() if type(model) is c.cls), None)
    if cell is None:
        raise TypeError(f"{type(model).__name__} is not a registered cell ({', '.join(cell_names())})")
    dirs, hidden = model.num_directions, model.hidden_size
    h0, carried = state if isinstance(state, tuple) else (state, None)
    finals, carries = [], []
    for index, layer in enumerate(model.layers):
        outs = []
        for d in range(dirs):
            h = x.new_zeros(x.size(1), hidden) if h0 is None else h0[index * dirs + d]
            carry = None if carried is None or d else carried[index, :, :layer.carry_size]
            seq = x if d == 0 else x.flip(0)
            ys = []
            for t in range(seq.size(0)):
                y, h, carry = cell.reference_step(model, index, d, seq[t], h, carry)
                ys.append(y)
            y = torch.stack(ys)
            outs.append(y if d == 0 else y.flip(0))
            finals.append(h)
            if d == 0:
                carries.append(carry)
        y = torch.cat(outs, -1)
        x = y if cell.reference_readout is None else cell.reference_readout(model, index, y)
    h_n = torch.stack(finals)
    width = model.input_state_size
    if not width:
        return x, h_n
    return x, (h_n, torch.stack([F.pad(c, (0, width - c.size(-1))) for c in carries]))


__all__ = ["Cell", "cell_names", "get_cell", "reference_forward", "reference_projection", "register_cell"]

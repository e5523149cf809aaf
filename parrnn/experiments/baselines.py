"""The baselines parrnn is compared with, shared by the benchmarks (`parrnn.experiments.bench`) and the accuracy
tasks (`parrnn.experiments.tasks`): the causal Transformer of the same width and depth, SRU++'s attention sizes,
and ``nn.LSTMCell`` looped over time (the fastest ``nn.LSTM`` configuration for one streaming step on some CPUs).
``torch.nn.LSTM`` / ``torch.nn.GRU`` themselves are used as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def attention_sizes(hidden: int) -> tuple[int, int]:
    """``(proj_size, num_heads)`` used for SRU++ of width ``hidden``: P = H/4 (as in Lei 2021), heads of width 64
    (one head when P is not a multiple of 64)."""
    proj = max(1, hidden // 4)
    return proj, (proj // 64 if proj % 64 == 0 else 1)


class CausalTransformer(nn.Module):
    """The Transformer baseline: (input projection,) ``num_layers`` pre-norm causal ``nn.TransformerEncoderLayer``
    of width ``hidden``, heads of width 64 (one head below), feed-forward ``4 * hidden``; time-major
    ``(L, N, input_size)`` -> ``(L, N, hidden)``, step t sees steps <= t only."""

    def __init__(self, input_size: int, hidden: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = hidden // 64 if hidden % 64 == 0 else 1
        self.input = nn.Linear(input_size, hidden) if input_size != hidden else nn.Identity()
        layer = nn.TransformerEncoderLayer(hidden, self.num_heads, 4 * hidden, dropout=dropout, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(0), device=x.device, dtype=x.dtype)
        return self.encoder(self.input(x), mask=mask, is_causal=True)


class LSTMCells(nn.Module):
    """``layers`` ``nn.LSTMCell`` looped over time: ``forward(x (L, N, D), (h0, c0) | None)`` returns
    ``(output (L, N, H), (h_n, c_n))`` with ``h_n``, ``c_n`` ``(layers, N, H)``, like ``nn.LSTM``."""

    def __init__(self, input_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.cells = nn.ModuleList(nn.LSTMCell(input_size if i == 0 else hidden, hidden) for i in range(layers))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h = [None] * len(self.cells) if state is None else list(state[0].unbind(0))
        c = [None] * len(self.cells) if state is None else list(state[1].unbind(0))
        outputs = []
        for x_t in x.unbind(0):
            for i, cell in enumerate(self.cells):
                h[i], c[i] = cell(x_t, None if h[i] is None else (h[i], c[i]))
                x_t = h[i]
            outputs.append(x_t)
        return torch.stack(outputs), (torch.stack(h), torch.stack(c))

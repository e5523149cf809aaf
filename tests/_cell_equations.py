"""The cells' equations as a plain per-step loop over one direction at a time, written from the papers and the
parameters' documented layout only (no code shared with parrnn's layers): what the cell tests compare against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import parrnn


def _blocks(layer, x: Tensor, direction: int) -> Tensor:
    """Pre-activations ``(N, blocks, H)`` of one direction from the documented weight layout."""
    d_in, dirs, hidden = layer.input_size, layer.num_directions, layer.hidden_size
    weight = layer.weight.view(d_in, layer.blocks, dirs, hidden)[:, :, direction]
    u = torch.einsum("nd,dbh->nbh", x, weight)
    if layer.bias is not None:
        bias = layer.bias.view(-1, dirs, hidden)[:, direction]
        u = u + F.pad(bias, (0, 0, 0, layer.blocks - bias.size(0)))
    return u


def _direction(model, index: int, layer, x: Tensor, h: Tensor, prev: Tensor | None, direction: int
               ) -> tuple[Tensor, Tensor, Tensor | None]:
    """One layer, one direction over ``x`` ``(L, N, F)`` (already in processing order): states ``(L, N, H)``,
    the final state, and the output gates of QRNN/HGRN ``(L, N, H)`` (or None)."""
    states, gates = [], []
    for t in range(x.size(0)):
        u = _blocks(layer, x[t], direction)
        if isinstance(model, parrnn.QRNN):
            g = model.layers[index].gates
            if model.window == 2:
                before = x[t - 1] if t else (prev if prev is not None else torch.zeros_like(x[0]))
                u = u[:, :g] + _blocks(layer, before, direction)[:, g:]
            z, f = torch.tanh(u[:, 0]), torch.sigmoid(u[:, 1])
            h = f * h + (torch.sigmoid(u[:, 3]) if model.pooling == "ifo" else 1 - f) * z
            gates.append(torch.sigmoid(u[:, 2]) if model.pooling != "f" else None)
        elif isinstance(model, parrnn.HGRN):
            bound = torch.zeros(())
            if model.lower_bounds is not None:
                p = torch.softmax(model.lower_bounds, 0)
                bound = (p.cumsum(0) - p[0])[index].view(model.num_directions, -1)[direction]
            lam = bound + (1 - bound) * torch.sigmoid(u[:, 1])
            h = lam * h + (1 - lam) * F.silu(u[:, 0])
            gates.append(F.silu(u[:, 2]))
        else:
            candidate = parrnn.mingru.g(u[:, 0]) if model.activation == "g" else u[:, 0]
            if isinstance(model, parrnn.MinLSTM):
                f, i = torch.sigmoid(u[:, 1]), torch.sigmoid(u[:, 2])
                h = f / (f + i) * h + i / (f + i) * candidate
            else:
                z = torch.sigmoid(u[:, 1])
                h = (1 - z) * h + z * candidate
            gates.append(None)
        states.append(h)
    gate = None if gates[0] is None else torch.stack(gates)
    return torch.stack(states), h, gate


def run(model, x: Tensor, hx=None) -> tuple[Tensor, object]:
    """The stack over ``x`` ``(L, N, H_in)`` (every sequence of full length), time-major: ``(output, h_n)``."""
    dirs, hidden = model.num_directions, model.hidden_size
    h0, last = (hx if isinstance(hx, tuple) else (hx, None))
    finals, lasts = [], []
    for index, layer in enumerate(model.layers):
        outs, gates = [], []
        lasts.append(x[-1])
        for d in range(dirs):
            state = torch.zeros(x.size(1), hidden, dtype=x.dtype) if h0 is None else h0[index * dirs + d]
            prev = None if last is None or d else last[index, :, :layer.input_size]
            seq = x if d == 0 else x.flip(0)
            h, h_n, gate = _direction(model, index, layer, seq, state, prev, d)
            outs.append(h if d == 0 else h.flip(0))
            gates.append(None if gate is None else (gate if d == 0 else gate.flip(0)))
            finals.append(h_n)
        h = torch.cat(outs, -1)
        if isinstance(model, parrnn.HGRN):
            h = F.layer_norm(torch.cat(gates, -1) * h, (h.size(-1),), layer.norm.weight, layer.norm.bias)
            h = h @ layer.weight_out + layer.bias_out
        elif gates[0] is not None:
            h = torch.cat(gates, -1) * h
        elif getattr(layer, "weight_out", None) is not None:
            h = h @ layer.weight_out
        x = h
    h_n = torch.stack(finals)
    if isinstance(model, parrnn.QRNN) and model.window == 2:
        width = model.input_state_size
        return x, (h_n, torch.stack([F.pad(v, (0, width - v.size(-1))) for v in lasts]))
    return x, h_n

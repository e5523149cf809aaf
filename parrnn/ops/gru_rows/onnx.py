"""SlicedRNN's ``torch.nn.GRU`` levels written for ONNX export: one ``scan`` over time per layer and direction,
which exports as an ONNX ``Scan`` with a dynamic length (``torch.export`` would unroll ``nn.GRU``'s loop for the
example's length). Inference only; see `parrnn.ops.sru.onnx` for the SRU recurrence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan


def gru(rnn: nn.GRU, x: Tensor) -> Tensor:
    """``rnn`` (a time-major `torch.nn.GRU`, any layers and directions) over ``x`` ``(L, N, F)`` from a zero
    state, as one ``scan`` per layer and direction: the output ``(L, N, dirs * H)``, equal to ``rnn(x)[0]``
    in eval mode. ``torch.export`` unrolls ``nn.GRU``'s time loop for the example's length; this exports with
    a dynamic length."""
    dirs = 2 if rnn.bidirectional else 1
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_hh, b_hh = getattr(rnn, "weight_hh" + sfx).detach(), getattr(rnn, "bias_hh" + sfx, None)
            b_ih = getattr(rnn, "bias_ih" + sfx, None)
            gi = x.detach() @ getattr(rnn, "weight_ih" + sfx).detach().t()  # (L, N, 3H), all steps at once
            gi = gi if b_ih is None else gi + b_ih.detach()
            b_hh = None if b_hh is None else b_hh.detach()

            def step(h: Tensor, gi_t: Tensor, w_hh: Tensor = w_hh, b_hh: Tensor | None = b_hh) -> tuple[Tensor, Tensor]:
                gh = h @ w_hh.t() if b_hh is None else h @ w_hh.t() + b_hh
                i_r, i_z, i_n = gi_t.chunk(3, dim=-1)
                h_r, h_z, h_n = gh.chunk(3, dim=-1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h_new = n + (h - n) * z
                return h_new, h_new.clone()

            h0 = gi.new_zeros(gi.shape[1], rnn.hidden_size)
            _, out = scan(step, h0, gi.flip(0) if d else gi)
            outs.append(out.flip(0) if d else out)
        x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
    return x

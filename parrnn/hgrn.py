r"""HGRN (Qin, Yang and Zhong, 2023, "Hierarchically Gated Recurrent Neural Network for Sequence Modeling",
NeurIPS, arXiv:2311.04823), the real-valued layer.

Every gate depends only on the input and the forget gate of layer $k$ is bounded below by $\gamma^k$, which grows
with depth (a cumulative softmax over the layers of one learnable parameter): lower layers may forget fast, upper
layers keep long-term memory. The recurrence is run by `parrnn.ops.linear_recurrence`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parrnn._diagonal_rnn import DiagonalLayer, DiagonalRNN
from parrnn.cells import reference_projection, register_cell
from parrnn.ops import gemm


class HGRNLayer(DiagonalLayer):
    """One HGRN layer (see [HGRN][parrnn.HGRN]): projection blocks (candidate, forget, output gate), then
    ``LayerNorm`` and the output projection."""

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool = False,
                 bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bidirectional=bidirectional, blocks=3, bias=bias)
        self.norm = nn.LayerNorm(self.state_size)
        self.weight_out = nn.Parameter(torch.empty(self.state_size, self.state_size))
        self.bias_out = nn.Parameter(torch.empty(self.state_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        bound = 1.0 / self.state_size**0.5
        nn.init.uniform_(self.weight_out, -bound, bound)
        if self.bias_out is not None:
            nn.init.uniform_(self.bias_out, -bound, bound)
        self.norm.reset_parameters()

    def coefficients(self, x: Tensor, prev: Tensor | None, floor: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        candidate, forget, gate = self.project(x).unbind(2)
        forget = torch.sigmoid(forget)
        if floor is not None:
            forget = floor + (1 - floor) * forget
        return forget, (1 - forget) * F.silu(candidate), F.silu(gate)

    def readout(self, h: Tensor, extra: Tensor | None) -> Tensor:
        assert extra is not None
        length, batch, cols = h.shape
        y = self.norm(extra * h).reshape(length * batch, cols)
        y = gemm.matmul(y, self.weight_out)
        if self.bias_out is not None:
            y = y + self.bias_out
        return y.view(length, batch, cols)


class HGRN(DiagonalRNN):
    r"""HGRN (Qin et al., 2023, "Hierarchically Gated Recurrent Neural Network for Sequence Modeling"), real-valued:
    a gated linear recurrence per layer whose forget gate has a learned lower bound that increases with depth.

    For layer $k$ (counted from 0), step $t$ and unit (all projections are one matrix product for all steps):

    $$
    \begin{aligned}
    P &= \operatorname{softmax}(\Gamma, \text{dim}=0), \quad
        \gamma^k = \textstyle\sum_{j \le k} P_j - P_0 \quad (\gamma^0 = 0) \\
    \lambda_t &= \gamma^k + (1 - \gamma^k) \odot \sigma(W_f x_t + b_f) \\
    c_t &= \operatorname{SiLU}(W_c x_t + b_c) \\
    h_t &= \lambda_t \odot h_{t-1} + (1 - \lambda_t) \odot c_t \\
    g_t &= \operatorname{SiLU}(W_g x_t + b_g) \\
    o_t &= \operatorname{LayerNorm}(g_t \odot h_t)\, W_o + b_o
    \end{aligned}
    $$

    $\Gamma$ (``lower_bounds``, ``(num_layers, dirs * H)``, initialised to 0) is shared by the stack, so the
    bounds $0 = \gamma^0 \le \gamma^1 \le \dots < 1$ are learned jointly (the paper's cumulative softmax). This is
    the paper's token-mixing layer; its language model adds residual connections and GLU channel mixing around
    it, which are left to the user. The paper's main model is complex-valued; this is its real-valued variant
    (the paper's ablation and the official ``HgruRealV6`` layer, which normalises $h_t$ before the gate where
    the paper's equations gate first; parrnn follows the paper). A bidirectional layer normalises and projects
    both directions' states together.

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: features of the state per direction, ``H``.
        num_layers: stacked layers. Default: 1.
        bias: the projections have biases. Default: ``True``.
        batch_first: inputs and outputs are ``(N, L, *)`` instead of ``(L, N, *)``. Default: ``False``.
        dropout: dropout on the outputs of every layer but the last, as in `torch.nn.LSTM`. Default: 0.
        bidirectional: add a direction that runs backwards in time. Default: ``False``.
        lower_bound: use the learned lower bounds $\gamma^k$ (``False``: $\gamma^k = 0$ for every layer).
            Default: ``True``.
        backend: the `parrnn.ops.linear_recurrence` backend. Default: ``"auto"``.

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md)
        * **input**: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a
          `torch.nn.utils.rnn.PackedSequence`.
        * **state**: ``(num_layers * dirs, N, H)`` initial $h$; zeros if ``None``.
        * **lengths**: ``(N,)`` integer lengths in ``[1, L]``; padded steps never change a result (NaN
          included) and output 0.
        * **mask**: bool ``(L, N)`` (``(N, L)`` with ``batch_first``), True on padded steps (a suffix of
          each sequence); the alternative to **lengths**. The old keyword ``hx=`` still works (DeprecationWarning).

    Outputs: output, h_n
        * **output**: ``(L, N, dirs * H)`` (batch first with ``batch_first``; a ``PackedSequence`` for one).
        * **h_n**: ``(num_layers * dirs, N, H)``, $h$ after each sequence's last valid step (the reverse
          direction's after step 0).

    `step` ``(input (N, H_in), state) -> (output (N, dirs * H), h_n)`` runs one token and equals `forward` token by
    token (unidirectional stacks).

    Attributes:
        lower_bounds: ``(num_layers, dirs * H)``, $\Gamma$.
        layers[k].weight: ``(H_in or dirs * H, 3 * dirs * H)``, column blocks (candidate $c$, forget, gate $g$),
            each ordered (direction, unit); ``layers[k].bias`` ``(3 * dirs * H)``; ``torch.nn.Linear``'s init.
        layers[k].norm: ``nn.LayerNorm(dirs * H)``.
        layers[k].weight_out: ``(dirs * H, dirs * H)`` $W_o$; ``layers[k].bias_out`` ``(dirs * H)`` $b_o$.

    Examples:
        >>> rnn = HGRN(16, 32, num_layers=2)
        >>> output, h_n = rnn(torch.randn(50, 4, 16))
        >>> output.shape, h_n.shape
        (torch.Size([50, 4, 32]), torch.Size([2, 4, 32]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 lower_bound: bool = True, backend: str = "auto") -> None:
        def make_layer(size: int) -> DiagonalLayer:
            return HGRNLayer(size, hidden_size, bidirectional=bidirectional, bias=bias)

        super().__init__(input_size, hidden_size, num_layers, make_layer, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend)
        self.lower_bounds = (nn.Parameter(torch.zeros(num_layers, self.num_directions * hidden_size))
                             if lower_bound else None)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.lower_bounds is not None:
            nn.init.zeros_(self.lower_bounds)

    def floors(self) -> list[Tensor | None]:
        """$\\gamma^k$ for every layer (``None`` without ``lower_bound``)."""
        floors: list[Tensor | None] = [None for _ in range(self.num_layers)]
        lower_bounds = self.lower_bounds
        if lower_bounds is not None:
            p = torch.softmax(lower_bounds, dim=0)
            for k, floor in enumerate((p.cumsum(0) - p[0]).unbind(0)):
                floors[k] = floor
        return floors

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.lower_bounds is not None else ", lower_bound=False")


def reference_step(model: HGRN, index: int, direction: int, x_t: Tensor, h: Tensor, carry: Tensor | None
                   ) -> tuple[Tensor, Tensor, None]:
    r"""HGRN's equations for one token of one direction (the registry's reference step, `parrnn.cells`): the
    bound $\gamma^k$ from the cumulative softmax, the bounded forget gate, the state; returns ``(g_t * h_t, h_t,
    None)``."""
    layer = model.layers[index]
    u = reference_projection(layer, x_t, direction)
    bound = torch.zeros((), dtype=x_t.dtype)
    if model.lower_bounds is not None:
        p = torch.softmax(model.lower_bounds, 0)
        bound = (p.cumsum(0) - p[0])[index].view(model.num_directions, -1)[direction]
    forget = bound + (1 - bound) * torch.sigmoid(u[:, 1])
    h = forget * h + (1 - forget) * F.silu(u[:, 0])
    return F.silu(u[:, 2]) * h, h, None


def reference_readout(model: HGRN, index: int, y: Tensor) -> Tensor:
    """HGRN's output: ``LayerNorm(g * h) W_o + b_o`` over both directions together."""
    layer = model.layers[index]
    out = F.layer_norm(y, (y.size(-1),), layer.norm.weight, layer.norm.bias) @ layer.weight_out
    return out if layer.bias_out is None else out + layer.bias_out


register_cell("hgrn", HGRN, reference_step=reference_step, reference_readout=reference_readout)

__all__ = ["HGRN", "HGRNLayer"]

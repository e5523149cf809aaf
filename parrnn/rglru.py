r"""RG-LRU: the recurrent block of Griffin and Hawk (De et al., 2024, "Griffin: Mixing Gated Linear Recurrences with
Local Attention for Efficient Language Models", arXiv:2402.19427), as RecurrentGemma runs it.

Two branches from the input: a GeLU gate branch and a branch through a short causal depthwise convolution into the
real-gated linear recurrent unit, whose gates see only the convolution's output, so the recurrence
$h_t = a_t \odot h_{t-1} + b_t$ runs on the shared op `parrnn.ops.linear_recurrence`. The convolution's last inputs
are part of the state, so `step` and chunked calls continue a sequence exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parrnn import _validation as check
from parrnn._diagonal_rnn import DiagonalLayer, DiagonalRNN
from parrnn.cells import reference_projection, register_cell
from parrnn.ops import gemm

#: the recurrence's decay is ``a = exp(-C * r * softplus(a_param))`` (the paper's c = 8)
DECAY_SCALE = 8.0
#: the gradient of ``sqrt(1 - a^2)`` is clipped at this value (recurrentgemma's ``_MAX_SQRT_GRADIENT``)
MAX_SQRT_GRADIENT = 1000.0


def sqrt_bounded_gradient(v: Tensor, max_gradient: float = MAX_SQRT_GRADIENT) -> Tensor:
    """``sqrt(v)`` whose derivative ``1 / (2 sqrt(v))`` is capped at `MAX_SQRT_GRADIENT` (where ``v`` is below
    ``1 / (4 * max_gradient^2)``; recurrentgemma's ``SqrtBoundDerivative``, which keeps bfloat16 training free
    of NaN where ``a`` rounds to 1). Plain differentiable ops: ``torch.func``, forward-mode AD and double backward
    see the capped function."""
    floor = 1.0 / (4.0 * max_gradient * max_gradient)
    # g has the capped derivative everywhere; its value differs from sqrt(v) only below the floor
    g = torch.where(v >= floor, v.clamp(min=floor).sqrt(), math.sqrt(floor) + (v - floor) * max_gradient)
    return v.clamp(min=0).sqrt().detach() + (g - g.detach())


class RGLRULayer(DiagonalLayer):
    """One recurrent block (see [RGLRU][parrnn.RGLRU]). ``weight`` ``(input_size, 2 * H)`` holds the column blocks
    (recurrence branch ``W_x``, gate branch ``W_y``), ``bias`` ``(2 * H)`` theirs; the stack carries the last
    ``conv_width - 1`` convolution inputs and a "sequence started" flag (`carry`)."""

    def __init__(self, input_size: int, hidden_size: int, *, num_heads: int = 1, conv_width: int = 4,
                 output_size: int | None = None, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bidirectional=False, blocks=2, bias=bias)
        self.num_heads = num_heads
        self.conv_width = conv_width
        self.decay_scale = DECAY_SCALE
        self.out_features = input_size if output_size is None else output_size
        head = hidden_size // num_heads
        self.conv_weight = nn.Parameter(torch.empty(conv_width, hidden_size))
        self.conv_bias = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.gate_weight = nn.Parameter(torch.empty(2, num_heads, head, head))
        self.gate_bias = nn.Parameter(torch.empty(2, num_heads, head)) if bias else None
        self.a_param = nn.Parameter(torch.empty(hidden_size))
        self.weight_out = nn.Parameter(torch.empty(hidden_size, self.out_features))
        self.bias_out = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        return self.out_features

    @property
    def carry_size(self) -> int:
        return (self.conv_width - 1) * self.hidden_size + 1

    def reset_parameters(self) -> None:
        """The paper's (and recurrentgemma's) initialisation: input projections ``N(0, 1 / input_size)``,
        convolution ``N(0, 0.01 / conv_width)``, gates ``N(0, 1 / head width)``, output ``N(0, 1 / H)``, biases
        0, and ``a_param`` such that ``exp(-softplus(a_param))`` is ``r`` with ``r^2`` uniform in
        ``[0.9^2, 0.999^2]`` (uniform on that ring)."""
        nn.init.normal_(self.weight, std=math.sqrt(1.0 / self.input_size))
        nn.init.normal_(self.conv_weight, std=math.sqrt(0.01 / self.conv_width))
        nn.init.normal_(self.gate_weight, std=math.sqrt(self.num_heads / self.hidden_size))
        nn.init.normal_(self.weight_out, std=math.sqrt(1.0 / self.hidden_size))
        for bias in (self.bias, self.conv_bias, self.gate_bias, self.bias_out):
            if bias is not None:
                nn.init.zeros_(bias)
        with torch.no_grad():
            radius = self.a_param.uniform_(0.9**2 + 1e-8, 0.999**2 + 1e-8).log_().mul_(0.5)
            radius.neg_().exp_().sub_(1.0).log_()  # softplus^-1(-log r) = log(1 / r - 1)

    def _past(self, prev: Tensor | None, like: Tensor) -> Tensor:
        """The carried convolution inputs ``(conv_width - 1, N, H)``, oldest first (zeros without a state)."""
        width, batch = self.conv_width - 1, like.size(1)
        if prev is None:
            return like.new_zeros(width, batch, self.hidden_size)
        return prev[:, :-1].reshape(batch, width, self.hidden_size).transpose(0, 1).to(like.dtype)

    def _convolve(self, x: Tensor, prev: Tensor | None) -> Tensor:
        """The causal depthwise convolution of ``x`` ``(L, N, H)``: ``sum_j conv_weight[j] * x_{t - K + 1 + j}``
        (+ bias), the inputs before step 0 from ``prev``."""
        length = x.size(0)
        padded = torch.cat([self._past(prev, x), x], dim=0)
        out = padded[self.conv_width - 1:] * self.conv_weight[-1]
        for j in range(self.conv_width - 2, -1, -1):
            out = out + padded[j:j + length] * self.conv_weight[j]
        return out if self.conv_bias is None else out + self.conv_bias

    def coefficients(self, x: Tensor, prev: Tensor | None, floor: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        hidden = self.hidden_size
        branch, gate_branch = self.project(x).unbind(2)
        conv = self._convolve(branch, prev)
        length, batch = conv.shape[:2]
        gates = torch.einsum("lnhi,ghij->glnhj", conv.reshape(length, batch, self.num_heads, -1), self.gate_weight)
        if self.gate_bias is not None:
            gates = gates + self.gate_bias[:, None, None]
        gate_x, gate_a = torch.sigmoid(gates.reshape(2, length, batch, hidden)).unbind(0)
        log_a = -self.decay_scale * gate_a * F.softplus(self.a_param)
        a = torch.exp(log_a)
        multiplier = sqrt_bounded_gradient(1 - torch.exp(2 * log_a))
        # position 0 of a sequence (no state, or a zero one): recurrentgemma's reset, multiplier 1 and a = 0
        started = a.new_zeros(1, batch, 1) if prev is None else prev[:, -1:].unsqueeze(0).to(a.dtype)
        multiplier = torch.cat([started * multiplier[:1] + (1 - started), multiplier[1:]])
        a = torch.cat([started * a[:1], a[1:]])
        b = conv * gate_x * multiplier
        return a, b, torch.cat([F.gelu(gate_branch, approximate="tanh"), branch], dim=-1)

    def readout(self, h: Tensor, extra: Tensor | None) -> Tensor:
        assert extra is not None
        length, batch, hidden = h.shape
        y = (h * extra[..., :hidden]).reshape(length * batch, hidden)
        y = gemm.matmul(y, self.weight_out)
        if self.bias_out is not None:
            y = y + self.bias_out
        return y.view(length, batch, -1)

    def carry(self, x: Tensor, lengths: Tensor | None, prev: Tensor | None, extra: Tensor | None) -> Tensor:
        """The convolution inputs of each sequence's last ``conv_width - 1`` valid steps (oldest first, earlier
        ones from ``prev``), flattened, then 1 (the sequence has started): ``(N, carry_size)``."""
        assert extra is not None
        branch = extra[..., self.hidden_size:]
        width, length, batch = self.conv_width - 1, branch.size(0), branch.size(1)
        started = branch.new_ones(batch, 1)
        if width == 0:
            return started
        counts = torch.full((batch,), length, device=branch.device) if lengths is None else lengths
        # row p of `padded` is step p - width; the last `width` valid steps of sequence n are rows counts[n] + j
        padded = torch.cat([self._past(prev, branch), branch], dim=0)
        rows = counts.view(1, batch) + torch.arange(width, device=branch.device).view(width, 1)
        last = padded.gather(0, rows.view(width, batch, 1).expand(width, batch, self.hidden_size))
        return torch.cat([last.transpose(0, 1).reshape(batch, width * self.hidden_size), started], dim=1)


class RGLRU(DiagonalRNN):
    r"""RG-LRU (De et al., 2024, "Griffin"): Griffin's and Hawk's recurrent block, a real-gated linear recurrent
    unit behind a short causal convolution, gated by a GeLU branch, as recurrentgemma computes it.

    For every layer, step $t$ and unit ($\ast$ the causal depthwise convolution of width $K$ = ``conv_width``,
    $W_a$, $W_i$ block-diagonal with ``num_heads`` blocks):

    $$
    \begin{aligned}
    y_t &= \operatorname{GeLU}(W_y x_t + b_y), \qquad u_t = (w \ast (W_x x + b_x))_t + b_w \\
    r_t &= \sigma(W_a u_t + b_a), \quad i_t = \sigma(W_i u_t + b_i) \\
    a_t &= \exp(-8\, r_t \odot \operatorname{softplus}(\Lambda)) \\
    h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot u_t) \\
    o_t &= (h_t \odot y_t)\, W_o + b_o
    \end{aligned}
    $$

    At the first step of a sequence (recurrentgemma's ``segment_pos == 0``) the multiplier $\sqrt{1 - a_t^2}$
    is 1 and the previous state is dropped; the convolution sees zeros before it. A sequence starts when no
    state is given or the state is a zero one (`init_state`: its "started" flag is 0); a state returned by
    `forward` or `step` continues the sequence, so chunked calls and `step` equal one call. (Documents packed
    into one row, recurrentgemma's zeros inside ``segment_pos``, are not supported: give them as separate
    sequences with ``lengths``.) The gradient of $\sqrt{1 - a^2}$ is capped at 1000 as in recurrentgemma
    (`sqrt_bounded_gradient`). GeLU is the tanh approximation (JAX's, recurrentgemma's). This is the recurrent
    block alone: Griffin's residual blocks add RMSNorm, the MLP and the residual connections around it.
    Causal only (no ``bidirectional``).

    Args:
        input_size: features of the input, ``H_in`` (recurrentgemma's ``width``).
        hidden_size: features of the recurrence, ``H`` (``lru_width``); a multiple of ``num_heads``.
        num_layers: stacked blocks, each applied to the previous one's output. Default: 1.
        num_heads: diagonal blocks of the gates' weights. Default: 1.
        conv_width: the convolution's width ``K`` (``conv1d_temporal_width``). Default: 4.
        output_size: features of each block's output, ``H_out``. Default: ``input_size`` (recurrentgemma's).
        bias: every projection, the convolution and the gates have biases. Default: ``True``.
        batch_first: inputs and outputs are ``(N, L, *)`` instead of ``(L, N, *)``. Default: ``False``.
        dropout: dropout on the outputs of every layer but the last, as in `torch.nn.LSTM`. Default: 0.
        bidirectional: must be ``False`` (the block is causal).
        backend: the `parrnn.ops.linear_recurrence` backend. Default: ``"auto"``.

    Inputs: input, state, lengths, mask
        * **input**: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a
          `torch.nn.utils.rnn.PackedSequence`.
        * **state**: ``None`` (a new sequence) or the pair ``(h, x)`` that `forward`, `step` and `init_state`
          return: ``h`` ``(num_layers, N, H)``, ``x`` ``(num_layers, N, (K - 1) * H + 1)``, each layer's last
          ``K - 1`` convolution inputs (oldest first, ``x[..., :-1].view(num_layers, N, K - 1, H)``,
          recurrentgemma's ``conv1d_state``) and 1 once the sequence has started.
        * **lengths** / **mask**: padded steps never change a result (NaN included) and output 0.

    Outputs: output, state
        * **output**: ``(L, N, H_out)`` (batch first with ``batch_first``; a ``PackedSequence`` for one).
        * **state**: ``(h, x)`` after each sequence's last valid step.

    `step` ``(input (N, H_in), state) -> (output (N, H_out), state)`` runs one token and equals `forward` token by
    token.

    Attributes:
        layers[k].weight: ``(H_in or H_out, 2 * H)``, column blocks ($W_x$, $W_y$); ``layers[k].bias`` ``(2 * H)``.
        layers[k].conv_weight: ``(K, H)``, row ``K - 1`` multiplies the current step; ``conv_bias`` ``(H)``.
        layers[k].gate_weight: ``(2, num_heads, H / num_heads, H / num_heads)``, ($W_i$, $W_a$);
            ``gate_bias`` ``(2, num_heads, H / num_heads)``.
        layers[k].a_param: ``(H)``, $\Lambda$.
        layers[k].weight_out: ``(H, H_out)`` $W_o$; ``bias_out`` ``(H_out)``. All initialised as in the paper
            (`RGLRULayer.reset_parameters`).

    Examples:
        >>> rnn = RGLRU(16, 32, num_layers=2)
        >>> output, (h_n, conv_n) = rnn(torch.randn(50, 4, 16))
        >>> output.shape, h_n.shape, conv_n.shape
        (torch.Size([50, 4, 16]), torch.Size([2, 4, 32]), torch.Size([2, 4, 97]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, num_heads: int = 1,
                 conv_width: int = 4, output_size: int | None = None, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, backend: str = "auto") -> None:
        if bidirectional:
            raise ValueError("bidirectional=True is not supported by RGLRU: the block is causal (its convolution "
                             "reads past inputs only, as in recurrentgemma)")
        num_heads = check.check_positive_int(num_heads, "num_heads")
        conv_width = check.check_positive_int(conv_width, "conv_width")
        if output_size is not None:
            output_size = check.check_positive_int(output_size, "output_size")
        if check.check_positive_int(hidden_size, "hidden_size") % num_heads:
            raise ValueError(f"hidden_size must be a multiple of num_heads ({num_heads}), got {hidden_size}")

        def make_layer(size: int) -> DiagonalLayer:
            return RGLRULayer(size, hidden_size, num_heads=num_heads, conv_width=conv_width,
                              output_size=output_size, bias=bias)

        super().__init__(input_size, hidden_size, num_layers, make_layer, bidirectional=False, dropout=dropout,
                         batch_first=batch_first, backend=backend)
        self.num_heads, self.conv_width, self.bias = num_heads, conv_width, bool(bias)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.num_heads != 1:
            s += f", num_heads={self.num_heads}"
        if self.conv_width != 4:
            s += f", conv_width={self.conv_width}"
        if self.output_size != self.input_size:
            s += f", output_size={self.output_size}"
        return s + ("" if self.bias else ", bias=False")

    @classmethod
    def from_recurrentgemma(cls, *blocks: nn.Module, batch_first: bool = True, backend: str = "auto") -> RGLRU:
        """A stack with the weights of recurrentgemma's torch ``RecurrentBlock`` modules
        (``recurrentgemma.torch.modules.RecurrentBlock``), one per layer, each applied to the previous one's
        output: the same outputs as ``block(x, segment_pos=arange(L))`` for a new sequence, and as its decoding
        with a cache for `step`; batch first like recurrentgemma by default."""
        if not blocks:
            raise ValueError("give at least one recurrentgemma RecurrentBlock")
        first = blocks[0]
        new = cls(first.width, first.lru_width, len(blocks), num_heads=first.num_heads,
                  conv_width=first.conv1d_temporal_width, batch_first=batch_first, backend=backend)
        new.to(device=first.linear_x.weight.device, dtype=first.linear_x.weight.dtype)
        with torch.no_grad():
            for layer, block in zip(new.layers, blocks, strict=True):
                sizes = (block.width, block.lru_width, block.num_heads, block.conv1d_temporal_width)
                expected = (first.width, first.lru_width, first.num_heads, first.conv1d_temporal_width)
                if sizes != expected:
                    raise ValueError(f"the blocks must all have the first one's (width, lru_width, num_heads, "
                                     f"conv1d_temporal_width) = {expected}, got {sizes}")
                layer.weight.copy_(torch.cat([block.linear_x.weight, block.linear_y.weight]).t())
                layer.bias.copy_(torch.cat([block.linear_x.bias, block.linear_y.bias]))
                layer.conv_weight.copy_(block.conv_1d.w)
                layer.conv_bias.copy_(block.conv_1d.b)
                layer.gate_weight.copy_(torch.stack([block.rg_lru.input_gate.w, block.rg_lru.a_gate.w]))
                layer.gate_bias.copy_(torch.stack([block.rg_lru.input_gate.b, block.rg_lru.a_gate.b]))
                layer.a_param.copy_(block.rg_lru.a_param)
                layer.weight_out.copy_(block.linear_out.weight.t())
                layer.bias_out.copy_(block.linear_out.bias)
        return new


def reference_step(model: RGLRU, index: int, direction: int, x_t: Tensor, h: Tensor, carry: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """The RG-LRU block's equations for one token (the registry's reference step, `parrnn.cells`), as
    recurrentgemma's ``RecurrentBlock`` decodes one token with its cache: ``carry`` holds the last ``K - 1``
    convolution inputs and the "started" flag (a new sequence when ``None`` or 0). Returns ``(h_t * y_t, h_t,
    carry)``; `reference_readout` applies ``W_o``."""
    layer = model.layers[index]
    batch, hidden, width = x_t.size(0), layer.hidden_size, layer.conv_width
    u = reference_projection(layer, x_t, 0)  # (N, blocks (x branch, y branch), H)
    if carry is None:
        carry = x_t.new_zeros(batch, (width - 1) * hidden + 1)
    window = torch.cat([carry[:, :-1].view(batch, width - 1, hidden), u[:, :1]], dim=1)  # oldest first
    conv = (window * layer.conv_weight).sum(1)
    if layer.conv_bias is not None:
        conv = conv + layer.conv_bias
    blocks = conv.view(batch, layer.num_heads, -1)
    gate_x, gate_a = (torch.einsum("nhi,hij->nhj", blocks, layer.gate_weight[g]) for g in (0, 1))
    if layer.gate_bias is not None:
        gate_x, gate_a = gate_x + layer.gate_bias[0], gate_a + layer.gate_bias[1]
    gate_x, gate_a = torch.sigmoid(gate_x).reshape(batch, hidden), torch.sigmoid(gate_a).reshape(batch, hidden)
    a = torch.exp(-DECAY_SCALE * gate_a * F.softplus(layer.a_param))
    started = carry[:, -1:] != 0
    multiplier = torch.where(started, torch.sqrt(1 - a**2), torch.ones_like(a))
    h = torch.where(started, a * h, torch.zeros_like(h)) + multiplier * (gate_x * conv)
    y = h * F.gelu(u[:, 1], approximate="tanh")
    return y, h, torch.cat([window[:, 1:].reshape(batch, -1), torch.ones_like(carry[:, -1:])], dim=1)


def reference_readout(model: RGLRU, index: int, y: Tensor) -> Tensor:
    """The block's output ``(h * y) W_o + b_o``."""
    layer = model.layers[index]
    out = y @ layer.weight_out
    return out if layer.bias_out is None else out + layer.bias_out


register_cell("rglru", RGLRU, reference_step=reference_step, reference_readout=reference_readout,
              bidirectional=False, output_size_keyword="output_size",
              build_defaults=lambda input_size, hidden_size: {"output_size": hidden_size})

__all__ = ["RGLRU", "RGLRULayer", "sqrt_bounded_gradient"]

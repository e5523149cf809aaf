r"""Quasi-recurrent neural networks (Bradbury, Merity, Xiong and Socher, 2017, "Quasi-Recurrent Neural
Networks", ICLR, arXiv:1611.01576).

A QRNN layer computes its candidate and gates with a convolution over time of width 1 or 2 (one matrix product
for all steps) and pools them with an elementwise recurrence that `parrnn.ops.linear_recurrence` runs fused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrnn import _validation as check
from parrnn._diagonal_rnn import DiagonalLayer, DiagonalRNN
from parrnn._fused_gates import qrnn_coefficients, qrnn_gates
from parrnn.cells import reference_projection, register_cell
from parrnn.ops import registry

POOLINGS = ("f", "fo", "ifo")
WINDOWS = (1, 2)
_BLOCKS = {"f": 2, "fo": 3, "ifo": 4}  # (candidate z, forget f[, output o[, input i]])


class QRNNLayer(DiagonalLayer):
    """One QRNN layer (see [QRNN][parrnn.QRNN]). ``weight`` holds ``window`` groups of column blocks: the first
    multiplies ``x_t`` (and gets the bias), the second (window 2) ``x_{t-1}`` (``x_{t+1}`` for the reverse
    direction)."""

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool = False, bias: bool = True,
                 pooling: str = "fo", window: int = 1, zoneout: float = 0.0) -> None:
        self.gates = _BLOCKS[pooling]
        super().__init__(input_size, hidden_size, bidirectional=bidirectional, blocks=window * self.gates,
                         bias=bias, bias_blocks=self.gates)
        self.pooling, self.window, self.zoneout = pooling, window, zoneout
        self.uses_previous_input = window == 2
        self.reset_parameters()

    def _convolve(self, x: Tensor, prev: Tensor | None) -> Tensor:
        """Gate pre-activations ``(L, N, gates, dirs * H)``: ``x_t W_0 + x_{t-1} W_1`` (the reverse direction's
        columns read ``x_{t+1}``; outside the sequence the input is ``prev`` before step 0, else 0)."""
        u = self.project(x)
        if self.window == 1:
            return u
        now, before = u.split(self.gates, dim=2)
        hidden = self.hidden_size
        first = torch.zeros_like(before[:1]) if prev is None else self.project(prev.unsqueeze(0))[:, :, self.gates:]
        shifted = torch.cat([first, before[:-1]], dim=0)
        if self.num_directions == 2:  # reverse direction: the next step's input (0 after the last step)
            ahead = torch.cat([before[1:, ..., hidden:], torch.zeros_like(before[:1, ..., hidden:])], dim=0)
            shifted = torch.cat([shifted[..., :hidden], ahead], dim=-1)
        return now + shifted

    def coefficients(self, x: Tensor, prev: Tensor | None, floor: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        forget, b, output_gate = self._gates(self._convolve(x, prev))
        if self.zoneout > 0:
            # zoneout: a unit keeps its state (a = 1, b = 0) with probability p; its expectation at evaluation
            if self.training:
                keep = (torch.rand_like(forget) < self.zoneout).to(forget.dtype)
                forget = keep + (1 - keep) * forget
                b = (1 - keep) * b
            else:
                forget = self.zoneout + (1 - self.zoneout) * forget
                b = (1 - self.zoneout) * b
        return forget, b, output_gate

    def _gates(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(a, b, output gate)`` from the pre-activations ``u`` ``(L, N, gates, dirs * H)``."""
        if not torch.jit.is_scripting():  # noqa: SIM102 (alone, so TorchScript skips the block)
            if registry.hand_written_ok((u,)):  # eager (no tracer, torch.func transform or dual tensor)
                return qrnn_gates(u, self.pooling)  # eager: the hand-written backward (parrnn._fused_gates)
        return qrnn_coefficients(u, self.pooling)

    def readout(self, h: Tensor, extra: Tensor | None) -> Tensor:
        return h if extra is None else extra * h


class QRNN(DiagonalRNN):
    r"""QRNN (Bradbury et al., 2017, "Quasi-Recurrent Neural Networks"): a masked convolution over time computes
    every step's candidate and gates at once, and an elementwise "pooling" recurrence mixes them.

    For every layer, step $t$ and unit, with $\ast$ the causal convolution of width $k$ (``window``):
    $Z = \tanh(W_z \ast X)$, $F = \sigma(W_f \ast X)$, $O = \sigma(W_o \ast X)$, $I = \sigma(W_i \ast X)$, that is
    $W \ast X$ at step $t$ is $W^{(0)} x_t + b$ ($k = 1$) or $W^{(0)} x_t + W^{(1)} x_{t-1} + b$ ($k = 2$), and

    $$
    \begin{aligned}
    \text{f-pooling:}\quad & h_t = f_t \odot h_{t-1} + (1 - f_t) \odot z_t \\
    \text{fo-pooling:}\quad & c_t = f_t \odot c_{t-1} + (1 - f_t) \odot z_t, \quad h_t = o_t \odot c_t \\
    \text{ifo-pooling:}\quad & c_t = f_t \odot c_{t-1} + i_t \odot z_t, \quad h_t = o_t \odot c_t
    \end{aligned}
    $$

    The state is $c_t$ ($h_t$ for f-pooling). With ``window=2`` the input before step 0 is the last input of the
    previous chunk when the state carries it (``state = (c, x)``), else 0, so a long sequence can be streamed in
    chunks or with `step`; the reverse direction of a bidirectional layer reads $x_{t+1}$ instead of
    $x_{t-1}$ (0 after each sequence's last valid step). Zoneout (the paper's regulariser,
    $F = 1 - \text{dropout}(1 - F)$) keeps each unit's state with probability ``zoneout`` while training
    ($f = 1$, no input) and uses its expectation in evaluation; off by default.

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: features of the state per direction, ``H``.
        num_layers: stacked layers. Default: 1.
        bias: the convolution has a bias. Default: ``True``.
        batch_first: inputs and outputs are ``(N, L, *)`` instead of ``(L, N, *)``. Default: ``False``.
        dropout: dropout on the outputs of every layer but the last, as in `torch.nn.LSTM`. Default: 0.
        bidirectional: add a direction that runs backwards in time. Default: ``False``.
        pooling: ``"f"``, ``"fo"`` or ``"ifo"``. Default: ``"fo"``.
        window: convolution width, 1 or 2. Default: 1.
        zoneout: probability of keeping a unit's state at a step (training only). Default: 0.
        backend: the `parrnn.ops.linear_recurrence` backend. Default: ``"auto"``.

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md)
        * **input**: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a
          `torch.nn.utils.rnn.PackedSequence`.
        * **state**: ``window=1``: ``(num_layers * dirs, N, H)`` initial $c$; ``window=2``: a pair ``(c, x)`` with
          ``x`` ``(num_layers, N, max(H_in, dirs * H))``, each layer's input before step 0 (first features;
          zero-padded). Zeros if ``None``.
        * **lengths**: ``(N,)`` integer lengths in ``[1, L]``; padded steps never change a result (NaN
          included) and output 0.
        * **mask**: bool ``(L, N)`` (``(N, L)`` with ``batch_first``), True on padded steps (a suffix of
          each sequence); the alternative to **lengths**. The old keyword ``hx=`` still works (DeprecationWarning).

    Outputs: output, h_n
        * **output**: ``(L, N, dirs * H)`` (batch first with ``batch_first``; a ``PackedSequence`` for one).
        * **h_n**: the final state, as **state**: $c$ after each sequence's last valid step (the reverse
          direction's after step 0) and, with ``window=2``, each layer's last valid input.

    `step` ``(input (N, H_in), state) -> (output (N, dirs * H), h_n)`` runs one token and equals `forward` token by
    token (unidirectional stacks).

    Attributes:
        layers[k].weight: ``(H_in or dirs * H, window * G * dirs * H)``, ``G`` = 2, 3, 4 gates for f, fo, ifo
            pooling; column blocks (tap, gate z/f/o/i, direction, unit), tap 0 reads $x_t$, tap 1 $x_{t-1}$.
            ``torch.nn.Linear``'s init.
        layers[k].bias: ``(G * dirs * H)``, blocks (gate, direction, unit).

    Examples:
        >>> rnn = QRNN(16, 32, num_layers=2, window=2)
        >>> output, (c_n, x_n) = rnn(torch.randn(50, 4, 16))
        >>> output.shape, c_n.shape, x_n.shape
        (torch.Size([50, 4, 32]), torch.Size([2, 4, 32]), torch.Size([2, 4, 32]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 pooling: str = "fo", window: int = 1, zoneout: float = 0.0, backend: str = "auto") -> None:
        check.check_choice(pooling, POOLINGS, "pooling")
        check.check_choice(window, WINDOWS, "window")  # an int: 2.0 is a TypeError naming window
        zoneout = check.check_probability(zoneout, "zoneout")

        def make_layer(size: int) -> DiagonalLayer:
            return QRNNLayer(size, hidden_size, bidirectional=bidirectional, bias=bias, pooling=pooling,
                             window=window, zoneout=zoneout)

        super().__init__(input_size, hidden_size, num_layers, make_layer, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend)
        self.pooling, self.window, self.zoneout = pooling, window, zoneout

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", pooling={self.pooling!r}, window={self.window}"
        return s + (f", zoneout={self.zoneout}" if self.zoneout else "")


def reference_step(model: QRNN, index: int, direction: int, x_t: Tensor, h: Tensor, carry: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """QRNN's equations for one token of one direction (the registry's reference step, `parrnn.cells`): the
    convolution taps from the documented weight layout, the gates, the pooling; ``carry`` is the input before
    ``x_t`` (window 2; zeros when ``None``). Returns ``(o_t * c_t or h_t, c_t, x_t)``."""
    layer = model.layers[index]
    gates = layer.gates
    u = reference_projection(layer, x_t, direction)
    if model.window == 2:
        before = torch.zeros_like(x_t) if carry is None else carry
        u = u[:, :gates] + reference_projection(layer, before, direction)[:, gates:]
    z, f = torch.tanh(u[:, 0]), torch.sigmoid(u[:, 1])
    h = f * h + (torch.sigmoid(u[:, 3]) if model.pooling == "ifo" else 1 - f) * z
    y = h if model.pooling == "f" else torch.sigmoid(u[:, 2]) * h
    return y, h, x_t


register_cell("qrnn", QRNN, reference_step=reference_step)

__all__ = ["POOLINGS", "QRNN", "QRNNLayer"]

r"""minGRU and minLSTM (Feng et al., 2024, "Were RNNs All We Needed?", arXiv:2410.01201).

Both drop the previous state from every gate, so a layer is the linear recurrence
$h_t = a_t \odot h_{t-1} + b_t$ that `parrnn.ops.linear_recurrence` runs fused. The paper trains them in a
"parallel mode" in log space (a ``logcumsumexp`` scan, Heinsen 2023) because its scan is written with cumulative
sums and products; the fused op multiplies step by step, so parrnn runs the paper's equations directly, without
logarithms (``docs/cells.md`` compares the accuracy of both forms against float64).
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import Tensor, nn

from parrnn import _validation as check
from parrnn._diagonal_rnn import DiagonalLayer, DiagonalRNN
from parrnn._fused_gates import MinGRUGates, MinLSTMGates, min_lstm_forget_share
from parrnn.cells import reference_projection, register_cell
from parrnn.ops import gemm, registry

ACTIVATIONS = ("identity", "g")


def g(x: Tensor) -> Tensor:
    r"""The paper's candidate activation $g(x) = x + 0.5$ for $x \ge 0$, $\sigma(x)$ otherwise (continuous,
    positive, linear growth), which keeps every state positive as its log-space scan needs."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class _MinLayer(DiagonalLayer):
    """A minGRU/minLSTM layer: ``blocks`` projections (candidate first, then the gates), the candidate's
    activation, and the optional output projection of the reference code (``to_out``)."""

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool, bias: bool, blocks: int,
                 activation: str, output_projection_size: int) -> None:
        super().__init__(input_size, hidden_size, bidirectional=bidirectional, blocks=blocks, bias=bias)
        self.activation = activation
        self.output_projection_size = output_projection_size
        self.weight_out = (nn.Parameter(torch.empty(self.state_size, self.num_directions * output_projection_size))
                           if output_projection_size else None)
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        size = self.output_projection_size
        return self.num_directions * size if size else self.state_size

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.weight_out is not None:
            bound = 1.0 / self.state_size**0.5
            nn.init.uniform_(self.weight_out, -bound, bound)

    def candidate(self, u: Tensor) -> Tensor:
        return g(u) if self.activation == "g" else u

    def readout(self, h: Tensor, extra: Tensor | None) -> Tensor:
        if self.weight_out is None:
            return h
        length, batch, cols = h.shape
        return gemm.matmul(h.reshape(length * batch, cols), self.weight_out).view(length, batch, -1)


class MinGRULayer(_MinLayer):
    """One minGRU layer (see [MinGRU][parrnn.MinGRU]); projection blocks (candidate, update gate)."""

    BLOCKS = 2
    #: the ``minGRU-pytorch`` module's projection with the same rows (candidate, gate)
    REFERENCE_PROJECTION = "to_hidden_and_gate"

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool = False, bias: bool = True,
                 activation: str = "identity", output_projection_size: int = 0) -> None:
        super().__init__(input_size, hidden_size, bidirectional=bidirectional, bias=bias, blocks=self.BLOCKS,
                         activation=activation, output_projection_size=output_projection_size)

    def coefficients(self, x: Tensor, prev: Tensor | None, floor: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        u = self.project(x)
        # eager only: a compiler fuses the plain ops itself (and dynamo cannot trace the strided out= writes);
        # TorchScript cannot save a Python autograd function; torch.func and forward-mode AD need plain ops
        if not torch.jit.is_scripting():  # noqa: SIM102 (alone, so TorchScript skips the block)
            if self.activation == "identity" and registry.hand_written_ok((u,)):
                a, b = MinGRUGates.apply(u)
                return a, b, None
        candidate, gate = u.unbind(2)  # (unbind: its backward is one stack, not a copy per slice)
        z = torch.sigmoid(gate)
        return 1 - z, z * self.candidate(candidate), None


class MinLSTMLayer(MinGRULayer):
    """One minLSTM layer (see [MinLSTM][parrnn.MinLSTM]); projection blocks (candidate, forget, input)."""

    BLOCKS = 3
    REFERENCE_PROJECTION = "to_hidden_and_f_i_gate"

    def coefficients(self, x: Tensor, prev: Tensor | None, floor: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        u = self.project(x)
        if not torch.jit.is_scripting():  # noqa: SIM102 (alone, so TorchScript skips the block)
            if self.activation == "identity" and registry.hand_written_ok((u,)):
                a, b = MinLSTMGates.apply(u)  # eager: the hand-written backward (parrnn._fused_gates)
                return a, b, None
        candidate, forget, input_gate = u.unbind(2)
        forget = min_lstm_forget_share(forget, input_gate)
        return forget, (1 - forget) * self.candidate(candidate), None


class MinGRU(DiagonalRNN):
    r"""minGRU (Feng et al., 2024, "Were RNNs All We Needed?"): a GRU whose gate and candidate see only
    the input, so training is one fused linear recurrence instead of a sequential loop.

    For every layer, step $t$ and unit (all steps' projections are one matrix product):

    $$
    \begin{aligned}
    z_t &= \sigma(W_z x_t + b_z) \\
    \tilde h_t &= g(W_h x_t + b_h) \\
    h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t
    \end{aligned}
    $$

    with $g$ the identity or the paper's $g(x) = x + 0.5$ ($x \ge 0$), $\sigma(x)$ ($x < 0$). The layer's output is
    $h_t$, or $h_t W_{out}$ with ``output_projection_size``. The paper's parallel mode computes the same values in
    log space; parrnn runs them linearly and fused. ``MinGRU.from_mingru_pytorch`` converts a ``minGRU-pytorch`` module
    (``minGRU(dim, expansion_factor)`` is ``MinGRU(dim, int(dim * expansion_factor), bias=False,
    activation="g", output_projection_size=dim if it projects else 0, batch_first=True)``).

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: features of the state per direction, ``H``.
        num_layers: stacked layers. Default: 1.
        bias: the projections have biases (the paper's ``Linear``; ``minGRU-pytorch`` has none). Default: ``True``.
        batch_first: inputs and outputs are ``(N, L, *)`` instead of ``(L, N, *)``. Default: ``False``.
        dropout: dropout on the outputs of every layer but the last, as in `torch.nn.LSTM`. Default: 0.
        bidirectional: add a direction that runs backwards in time. Default: ``False``.
        activation: ``"identity"`` (the paper's equations) or ``"g"`` (its appendix's positive activation
            [parrnn.mingru.g][] of the candidate, which the log-space form needs). Default: ``"identity"``.
        output_projection_size: if > 0, each layer's output is ``h W_out`` with ``W_out``
            ``(dirs * H, dirs * output_projection_size)`` (the reference code's ``to_out`` after an
            ``expansion_factor``). Default: 0. (Its old name ``proj_size`` still works, with a DeprecationWarning:
            "proj" names other things in parrnn -- SRU's low-rank ``projection_size``, SRU++'s attention width.)
        backend: the `parrnn.ops.linear_recurrence` backend (``"auto"``, ``"reference"``, ``"sequential"``,
            ``"scan"``). Default: ``"auto"``.

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md)
        * **input**: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a
          `torch.nn.utils.rnn.PackedSequence`.
        * **state**: ``(num_layers * dirs, N, H)`` initial state (the state itself, as `step` and ``h_n`` carry
          it); zeros if ``None``.
        * **lengths**: ``(N,)`` integer lengths in ``[1, L]``; steps ``t >= lengths[n]`` are padding: they never
          change a result (NaN included) and their output is 0.
        * **mask**: bool ``(L, N)`` (``(N, L)`` with ``batch_first``), True on padded steps (a suffix of
          each sequence); the alternative to **lengths**. The old keyword ``hx=`` still works (DeprecationWarning).

    Outputs: output, h_n
        * **output**: ``(L, N, H_out)`` (batch first with ``batch_first``; a ``PackedSequence`` for one),
          ``H_out = dirs * (output_projection_size or H)``.
        * **h_n**: ``(num_layers * dirs, N, H)``, the state after each sequence's last valid step (the reverse
          direction's after step 0), layers and directions ordered as in `torch.nn.LSTM`.

    `step` ``(input (N, H_in), state) -> (output (N, H_out), h_n)`` runs one token and equals `forward` token by
    token (unidirectional stacks).

    Attributes:
        layers[k].weight: ``(H_in or H_out, 2 * dirs * H)``, column blocks (candidate, gate), each ordered
            (direction, unit); ``layers[k].bias`` ``(2 * dirs * H)``. Initialised
            $\mathcal{U}(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})$ like `torch.nn.Linear`.
        layers[k].weight_out: ``(dirs * H, dirs * output_projection_size)`` or ``None``.

    Examples:
        >>> rnn = MinGRU(16, 32, num_layers=2)
        >>> output, h_n = rnn(torch.randn(50, 4, 16))
        >>> output.shape, h_n.shape
        (torch.Size([50, 4, 32]), torch.Size([2, 4, 32]))
    """

    layer_class: type[MinGRULayer] = MinGRULayer

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 activation: str = "identity", output_projection_size: int | None = None, backend: str = "auto",
                 proj_size: int | None = None) -> None:
        check.check_choice(activation, ACTIVATIONS, "activation")
        size = check.renamed(output_projection_size, proj_size, "output_projection_size", "proj_size")
        name = "proj_size" if proj_size is not None else "output_projection_size"
        size = check.check_positive_int(0 if size is None else size, name, minimum=0)
        self_class = type(self)

        def make_layer(layer_input: int) -> DiagonalLayer:
            return self_class.layer_class(layer_input, hidden_size, bidirectional=bidirectional, bias=bias,
                                          activation=activation, output_projection_size=size)

        super().__init__(input_size, hidden_size, num_layers, make_layer, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend)
        self.activation, self.output_projection_size, self.bias = activation, size, bool(bias)

    __jit_unused_properties__ = ["proj_size"]  # noqa: RUF012 (TorchScript reads this class attribute)

    @property
    def proj_size(self) -> int:
        """Deprecated name of `output_projection_size`."""
        if not sys._getframe(1).f_globals.get("__name__", "").startswith("torch."):  # (TorchScript lists attributes)
            warnings.warn("MinGRU.proj_size is deprecated; read output_projection_size instead", DeprecationWarning,
                          stacklevel=2)
        return self.output_projection_size

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.activation != "identity":
            s += f", activation={self.activation!r}"
        if self.output_projection_size:
            s += f", output_projection_size={self.output_projection_size}"
        return s + ("" if self.bias else ", bias=False")

    @classmethod
    def from_mingru_pytorch(cls, *modules: nn.Module, batch_first: bool = True, backend: str = "auto"):
        """A stack with the weights of ``minGRU-pytorch`` layers (``minGRU_pytorch.minGRU``, or ``minLSTM`` for
        [MinLSTM][parrnn.MinLSTM]), one per layer, each applied to the previous one's output (no norms or
        residuals in between): the same outputs, batch first like the reference by default."""
        if not modules:
            raise ValueError("give at least one minGRU-pytorch module")
        projections = [getattr(module, cls.layer_class.REFERENCE_PROJECTION) for module in modules]
        first = projections[0]
        inner, dim = first.weight.size(0) // cls.layer_class.BLOCKS, first.weight.size(1)
        projects = isinstance(modules[0].to_out, nn.Linear)
        new = cls(dim, inner, len(modules), bias=False, batch_first=batch_first, activation="g",
                  output_projection_size=dim if projects else 0, backend=backend)
        new.to(device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            for layer, module, projection in zip(new.layers, modules, projections, strict=True):
                weight = projection.weight
                if tuple(weight.t().shape) != tuple(layer.weight.shape):
                    raise ValueError(f"minGRU-pytorch layers must all have dim {dim} and inner size {inner}; "
                                     f"got a projection of shape {tuple(weight.shape)}")
                layer.weight.copy_(weight.t())  # rows (candidate, gate[s]) -> column blocks in that order
                if layer.weight_out is not None:
                    layer.weight_out.copy_(module.to_out.weight.t())
        return new


class MinLSTM(MinGRU):
    r"""minLSTM (Feng et al., 2024, "Were RNNs All We Needed?"): an LSTM whose gates and candidate see
    only the input, with the forget and input gates normalised to sum to 1; one fused linear recurrence.

    For every layer, step $t$ and unit:

    $$
    \begin{aligned}
    f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i) \\
    f'_t &= \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
    \tilde h_t &= g(W_h x_t + b_h) \\
    h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t
    \end{aligned}
    $$

    ($f'_t = \sigma(-d_t)$, $i'_t = 1 - f'_t$ with $d_t = \log i_t - \log f_t$, computed without logarithms of
    0). $g$, ``output_projection_size`` and the rest as in [MinGRU][parrnn.MinGRU];
    ``MinLSTM.from_mingru_pytorch`` converts ``minGRU_pytorch.minLSTM`` modules.

    Arguments (``input_size``, ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``, ``dropout``,
    ``bidirectional``, ``activation``, ``output_projection_size``, ``backend``) are as in [MinGRU][parrnn.MinGRU].

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md)
        As in [MinGRU][parrnn.MinGRU]: **input** ``(L, N, H_in)`` (batch first with ``batch_first``) or a
        ``PackedSequence``, **state** ``(num_layers * dirs, N, H)``, **lengths** ``(N,)``, **mask**.

    Outputs: output, h_n
        **output** ``(L, N, dirs * (output_projection_size or H))``, **h_n** ``(num_layers * dirs, N, H)``; `step` as in
        [MinGRU][parrnn.MinGRU].

    Attributes:
        layers[k].weight: ``(H_in or H_out, 3 * dirs * H)``, column blocks (candidate, forget, input), each
            ordered (direction, unit); ``layers[k].bias`` ``(3 * dirs * H)``; ``torch.nn.Linear``'s init.
        layers[k].weight_out: ``(dirs * H, dirs * output_projection_size)`` or ``None``.
    """

    layer_class = MinLSTMLayer


def reference_step(model: MinGRU, index: int, direction: int, x_t: Tensor, h: Tensor, carry: Tensor | None
                   ) -> tuple[Tensor, Tensor, None]:
    """minGRU's or minLSTM's equations for one token of one direction (the registry's reference step,
    `parrnn.cells`), with the paper's normalised gates $f / (f + i)$, $i / (f + i)$ for minLSTM: ``(h, h, None)``."""
    u = reference_projection(model.layers[index], x_t, direction)
    candidate = g(u[:, 0]) if model.activation == "g" else u[:, 0]
    if isinstance(model, MinLSTM):
        f, i = torch.sigmoid(u[:, 1]), torch.sigmoid(u[:, 2])
        h = f / (f + i) * h + i / (f + i) * candidate
    else:
        z = torch.sigmoid(u[:, 1])
        h = (1 - z) * h + z * candidate
    return h, h, None


def reference_readout(model: MinGRU, index: int, y: Tensor) -> Tensor:
    """The output projection ``h W_out`` when the model has one."""
    weight_out = model.layers[index].weight_out
    return y if weight_out is None else y @ weight_out


for _name, _cls in (("mingru", MinGRU), ("minlstm", MinLSTM)):
    register_cell(_name, _cls, reference_step=reference_step, reference_readout=reference_readout,
                  output_size_keyword="output_projection_size")

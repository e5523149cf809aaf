r"""The `torch.nn.LSTM` contract for cells whose recurrence is diagonal and linear in the state.

QRNN, minGRU, minLSTM and HGRN compute every gate from the input alone, so each of their layers is

$$ h_t = a_t \odot h_{t-1} + b_t $$

with $a_t$, $b_t$ known for all steps at once: one matrix product gives every step's gates, and
[parrnn.ops.linear_recurrence][] runs the recurrence fused (forward and backward). A cell defines one layer
(`DiagonalLayer`: the coefficients $a, b$ from the layer's input and the output from $h$); `DiagonalRNN` stacks
layers with `torch.nn.LSTM`'s contract -- time-major or ``batch_first`` input, ``num_layers``, ``bidirectional``,
``dropout`` between layers, ``lengths`` or a ``PackedSequence``, an initial state in and the final state out as
``(num_layers * dirs, N, H)`` -- and adds `DiagonalRNN.step`, one token at a time from the same coefficients,
so streaming gives the parallel form's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from parrnn import _packing
from parrnn import _validation as check
from parrnn.ops import gemm
from parrnn.ops.linear_recurrence import BACKENDS, linear_recurrence

#: A cell's state: the hidden state ``(num_layers * dirs, N, H)``, or for cells whose layers also carry values from
#: one call to the next (`DiagonalLayer.carry`: QRNN with ``window=2`` its last input, RG-LRU its last convolution
#: inputs) the pair ``(h, x)`` with ``x`` ``(num_layers, N, max carry_size)`` (each layer's first features).
State = Tensor | tuple[Tensor, Tensor]


def check_backend(backend: str) -> str:
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    return backend


class DiagonalLayer(nn.Module):
    """One layer (both directions when ``bidirectional``) of a diagonal linear recurrence.

    The input projection is one matrix product ``U = x W + b``, ``W`` ``(input_size, blocks * dirs * H)``, ``b``
    ``(bias_blocks * dirs * H)`` added to the first ``bias_blocks`` blocks, whose
    ``blocks`` column blocks of width ``dirs * H`` (columns ordered direction, unit) a subclass turns into the
    recurrence's coefficients (`coefficients`) and whose state it turns into the layer's output (`readout`).
    The reverse direction runs from each sequence's last valid step back to step 0.
    """

    #: True when the coefficients at step t also read the input of step t - 1 (QRNN with window 2): the layer
    #: then carries its last input (`carry`).
    uses_previous_input = False

    @property
    def carry_size(self) -> int:
        """Features the layer carries from one call to the next in the stack's state (0: none); `coefficients`
        gets them back as ``prev``. Default: its last input when `uses_previous_input`."""
        return self.input_size if self.uses_previous_input else 0

    def carry(self, x: Tensor, lengths: Tensor | None, prev: Tensor | None, extra: Tensor | None) -> Tensor:
        """What the layer carries after ``x`` ``(L, N, input_size)`` (zero on padded steps; ``lengths`` ``(N,)``
        valid steps or ``None``), given ``prev`` (what it carried before ``x``) and `coefficients`' ``extra``:
        ``(N, carry_size)``. Default: the input at each sequence's last valid step."""
        return _packing.gather_last(x, lengths, False) if self.carry_size else x.new_zeros(x.size(1), 0)

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool, blocks: int, bias: bool,
                 bias_blocks: int | None = None) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_directions = 2 if bidirectional else 1
        self.state_size = self.num_directions * hidden_size
        self.blocks = blocks
        #: the bias covers the first ``bias_blocks`` blocks (all by default)
        self.bias_blocks = blocks if bias_blocks is None else bias_blocks
        self.uses_previous_input = False  # (an instance attribute, which TorchScript sees; QRNN sets it)
        self.weight = nn.Parameter(torch.empty(input_size, blocks * self.state_size))
        self.bias = nn.Parameter(torch.empty(self.bias_blocks * self.state_size)) if bias else None

    @property
    def output_size(self) -> int:
        """Features of the layer's output (the next layer's input)."""
        return self.state_size

    def reset_parameters(self) -> None:
        """`torch.nn.Linear`'s initialisation: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
        bound = 1.0 / math.sqrt(self.input_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def project(self, x: Tensor) -> Tensor:
        """``x W + b`` for all steps at once: ``(L, N, input_size)`` -> ``(L, N, blocks, dirs * H)``."""
        length, batch, _ = x.shape
        u = gemm.matmul(x.reshape(length * batch, x.size(-1)), self.weight)
        if self.bias is not None:
            bias = self.bias
            if self.bias_blocks != self.blocks:
                bias = F.pad(bias, (0, (self.blocks - self.bias_blocks) * self.state_size))
            # in place where the dtypes agree (the product's output is not saved for its backward); under autocast
            # u is 16-bit and the float32 bias promotes it, as the recurrence's float32 policy wants
            u = u.add_(bias) if u.dtype == bias.dtype else u + bias
        return u.view(length, batch, self.blocks, self.state_size)

    def coefficients(self, x: Tensor, prev: Tensor | None, floor: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(a, b, extra)`` for ``x`` ``(L, N, input_size)``: ``a``, ``b`` ``(L, N, dirs * H)``; ``extra`` is what
        `readout` needs besides ``h``. ``prev`` ``(N, input_size)``: the input before ``x[0]`` (cells with
        `uses_previous_input`); ``floor`` ``(dirs * H,)``: a lower bound of the decay given by the stack (HGRN)."""
        raise NotImplementedError

    def readout(self, h: Tensor, extra: Tensor | None) -> Tensor:
        """The layer's output from the states ``h`` ``(L, N, dirs * H)``."""
        return h

    def forward(self, x: Tensor, h0: Tensor | None = None, prev: Tensor | None = None,
                floor: Tensor | None = None, lengths: Tensor | None = None, backend: str = "auto",
                step: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The layer over time-major ``x`` ``(L, N, input_size)`` (zero on padded steps): ``(output, h_n, carry)``,
        ``output`` ``(L, N, output_size)``, ``h_n`` ``(N, dirs * H)`` after each sequence's last valid step,
        ``carry`` ``(N, carry_size)`` (`carry`).

        ``h0`` ``(N, dirs * H)``: the initial state (zeros if ``None``); ``prev``, ``floor``: see `coefficients`;
        ``lengths`` ``(N,)`` int64 or ``None``; ``backend``: the `parrnn.ops.linear_recurrence` backend. With
        ``step=True``, ``x`` is one token ``(N, input_size)`` and the result ``(output (N, output_size), h)``
        (`step`). The stack calls its layers as modules (``layer(...)``), so hooks, pruning and parametrizations
        on a layer take part in `DiagonalRNN.forward` and `DiagonalRNN.step` alike."""
        if step:
            return self.step(x, h0, prev, floor)
        a, b, extra = self.coefficients(x, prev, floor)
        hidden = self.hidden_size
        if self.num_directions == 1:
            h, h_n = linear_recurrence(a, b, h0, lengths, backend=backend)
        else:
            a_f, a_b = a.split(hidden, dim=-1)
            b_f, b_b = b.split(hidden, dim=-1)
            h0_f: Tensor | None = None
            h0_b: Tensor | None = None
            if h0 is not None:
                h0_f, h0_b = h0[:, :hidden], h0[:, hidden:]
            h_f, n_f = linear_recurrence(a_f, b_f, h0_f, lengths, backend=backend)
            h_b, n_b = linear_recurrence(a_b, b_b, h0_b, lengths, reverse=True, backend=backend)
            h, h_n = torch.cat([h_f, h_b], dim=-1), torch.cat([n_f, n_b], dim=-1)
        return self.readout(h, extra), h_n, self.carry(x, lengths, prev, extra)

    def step(self, x: Tensor, h: Tensor | None, prev: Tensor | None, floor: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One token ``x`` ``(N, input_size)`` from state ``h`` ``(N, H)`` (zeros if ``None``): ``(output, h, carry)``,
        from the same `coefficients` as `forward`. The stack reaches it through the module call
        ``layer(x, h, prev, floor, None, backend, True)``."""
        a, b, extra = self.coefficients(x.unsqueeze(0), prev, floor)
        h = b[0] if h is None else a[0] * h + b[0]
        return self.readout(h.unsqueeze(0), extra)[0], h, self.carry(x.unsqueeze(0), None, prev, extra)


LayerFactory = Callable[[int], DiagonalLayer]


class DiagonalRNN(nn.Module):
    """A stack of `DiagonalLayer` with `torch.nn.LSTM`'s contract (see the module docstring); the cells subclass
    it and give ``make_layer(input_size)``, which builds one layer."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, make_layer: LayerFactory, *,
                 bidirectional: bool, dropout: float, batch_first: bool, backend: str) -> None:
        super().__init__()
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.num_layers = check.check_positive_int(num_layers, "num_layers")
        self.dropout = check.check_probability(dropout, "dropout")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.batch_first = bool(batch_first)
        self.backend = check_backend(backend)
        layers: list[DiagonalLayer] = []
        for _ in range(num_layers):
            layers.append(make_layer(input_size if not layers else layers[-1].output_size))
        self.layers = nn.ModuleList(layers)
        self.output_size = layers[-1].output_size
        #: width of the carried part of the state (0: the state is the hidden state alone)
        self.input_state_size = max(layer.carry_size for layer in layers)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def floors(self) -> list[Tensor | None]:
        """Per layer, a lower bound of the decay ``a`` (HGRN's); ``None`` for none."""
        nones: list[Tensor | None] = [None for _ in range(self.num_layers)]
        return nones

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for name, default in (("bidirectional", False), ("dropout", 0.0), ("batch_first", False),
                              ("backend", "auto")):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s

    # ---- state ------------------------------------------------------------------------------------------------

    def _split_state(self, hx: State | None, x: Tensor, batch: int) -> tuple[list[Tensor | None],
                                                                              list[Tensor | None]]:
        """Per layer: the initial hidden state ``(N, dirs * H)`` and the previous input ``(N, input_size)``."""
        prevs: list[Tensor | None] = [None for _ in range(self.num_layers)]
        if hx is None:
            nones: list[Tensor | None] = [None for _ in range(self.num_layers)]
            return nones, prevs
        if not torch.jit.is_scripting():
            self._check_state(hx, x, batch)
        if isinstance(hx, Tensor):
            h = hx
        else:
            h, last = hx[0], hx[1]
            for i, layer in enumerate(self.layers):
                prevs[i] = last[i, :, :layer.carry_size]
        dirs = self.num_directions
        hiddens: list[Tensor | None] = [
            h[i * dirs:(i + 1) * dirs].transpose(0, 1).reshape(batch, dirs * self.hidden_size)
            for i in range(self.num_layers)]
        return hiddens, prevs

    @torch.jit.unused
    def _check_state(self, hx: State, x: Tensor, batch: int) -> None:
        """Named errors for a state of the wrong kind, shape, dtype or device."""
        hidden_shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if self.input_state_size:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"state must be a pair (h, x) for this {type(self).__name__} (the hidden state and "
                                f"what each layer carries, e.g. QRNN window=2's last input), got {type(hx).__name__}")
            check.check_state(hx[0], hidden_shape, x, "state[0]")
            check.check_state(hx[1], (self.num_layers, batch, self.input_state_size), x, "state[1]")
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"state must be a tensor {hidden_shape} for {type(self).__name__}, got a "
                                f"{type(hx).__name__}")
            check.check_state(hx, hidden_shape, x, "state")

    def _join_state(self, finals: list[Tensor], lasts: list[Tensor]) -> State:
        batch = finals[0].size(0)
        h_n = torch.stack([f.view(batch, self.num_directions, self.hidden_size).transpose(0, 1) for f in finals])
        h_n = h_n.reshape(self.num_layers * self.num_directions, batch, self.hidden_size)
        if not self.input_state_size:
            return h_n
        width = self.input_state_size
        return h_n, torch.stack([F.pad(last, (0, width - last.size(-1))) for last in lasts])

    # ---- the layer protocol (docs/protocol.md) --------------------------------------------------------------

    def init_state(self, batch_size: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        """The zero state for ``batch_size`` sequences, as `forward` and `step` take and return it: ``h``
        ``(num_layers * dirs, N, H)``, or the pair ``(h, x)`` with ``x`` ``(num_layers, N, input width)`` for a
        stack that carries each layer's last input. ``device`` and ``dtype`` default to the parameters'."""
        check.check_positive_int(batch_size, "batch_size")
        options = check.state_options(self.layers[0].weight, device, dtype)
        h = torch.zeros(self.num_layers * self.num_directions, batch_size, self.hidden_size, **options)
        if not self.input_state_size:
            return h
        return h, torch.zeros(self.num_layers, batch_size, self.input_state_size, **options)

    def forward(self, input: Tensor, state: State | None = None, lengths: Tensor | None = None,
                mask: Tensor | None = None, hx: State | None = None) -> tuple[Tensor, State]:
        """Run the stack over a sequence (the layer protocol, docs/protocol.md).

        Args:
            input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or, eagerly, a ``PackedSequence``
                (then the output is a ``PackedSequence`` with the input's ``sorted_indices`` and row order, as
                `torch.nn.LSTM`'s).
            state: the initial state as `init_state` and this method return it (``(num_layers * dirs, N, H)``,
                or ``(h, x)`` for a stack that carries inputs); zeros if ``None``.
            lengths: ``(N,)`` integers in ``[1, L]`` (tensor or list): steps ``t >= lengths[n]`` are padding;
                they never change a result (NaN included) and output 0.
            mask: bool ``(L, N)`` (``(N, L)`` with ``batch_first``), True on padded steps, which must be a suffix
                of each sequence (the alternative to ``lengths``).
            hx: deprecated spelling of ``state``.

        Returns:
            ``(output, state)``: ``output`` ``(L, N, H_out)`` (batch first with ``batch_first``), ``state`` the
            state after each sequence's last valid step (the reverse direction's after step 0).

        Pass ``mask`` and ``hx`` by keyword (TorchScript, which compiles this method, has no keyword-only
        arguments). Under TorchScript: no argument checks, ``lengths`` as a tensor, no ``mask`` or ``hx``.
        """
        if not torch.jit.is_scripting():
            state = check.renamed(state, hx, "state", "hx")
            if isinstance(input, PackedSequence):
                return self._forward_packed(input, state, lengths, mask)
            check.check_sequence_input(input, self.input_size, self.batch_first)
        x = input.transpose(0, 1) if self.batch_first else input
        length, batch = x.size(0), x.size(1)
        counts: Tensor | None = None
        if torch.jit.is_scripting():
            if lengths is not None:
                counts = lengths.to(device=x.device, dtype=torch.int64)
        else:
            check.check_like_parameters(x, self.layers[0].weight)
            counts = check.valid_steps(lengths, mask, length, batch, x.device, self.batch_first)
        pad: Tensor | None = None
        if counts is not None:
            pad = check.lengths_to_mask(counts, length).unsqueeze(2)
        hiddens, prevs = self._split_state(state, x, batch)
        floors = self.floors()
        finals: list[Tensor] = []
        lasts: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True)
            if pad is not None:  # padding (NaN included) never reaches a product or the other direction
                x = x.masked_fill(pad, 0)
            # a module call: the layer's hooks (pruning, FSDP's unshard, ...) run
            x, h_n, carried = layer(x, hiddens[i], prevs[i], floors[i], counts, self.backend)
            finals.append(h_n)
            lasts.append(carried)
        if pad is not None:
            x = x.masked_fill(pad, 0)
        return (x.transpose(0, 1) if self.batch_first else x), self._join_state(finals, lasts)

    @torch.jit.unused
    def _forward_packed(self, input: PackedSequence, state: State | None, lengths: Tensor | None,
                        mask: Tensor | None) -> tuple[PackedSequence, State]:
        return _packing.run_packed(lambda x, n: self.forward(x, state, n), input, self.batch_first,
                                   ("lengths", lengths), ("mask", mask))

    def step(self, input: Tensor, state: State | None = None, *, hx: State | None = None) -> tuple[Tensor, State]:
        """One time step (the layer protocol, docs/protocol.md), equal to `forward` token by token.

        Args:
            input: ``(N, H_in)``, one token per sequence.
            state: as `forward` takes and returns it (zeros if ``None``).
            hx: deprecated spelling of ``state``.

        Returns:
            ``(output (N, H_out), state)``. Unidirectional stacks only (a reverse direction needs the whole
            sequence: ValueError). In training, dropout draws new masks at every call.
        """
        check.check_streamable(self.bidirectional)
        if not torch.jit.is_scripting():
            state = check.renamed(state, hx, "state", "hx")
            check.check_step_input(input, self.input_size)
            check.check_like_parameters(input, self.layers[0].weight)
        x = input
        hiddens, prevs = self._split_state(state, x, x.size(0))
        finals: list[Tensor] = []
        lasts: list[Tensor] = []
        floors = self.floors()
        for i, layer in enumerate(self.layers):
            if i > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True)
            # a module call, as in forward: the layer's hooks run for every token
            x, h, carried = layer(x, hiddens[i], prevs[i], floors[i], None, self.backend, True)
            finals.append(h)
            lasts.append(carried)
        return x, self._join_state(finals, lasts)

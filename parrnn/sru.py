r"""Simple Recurrent Units (Lei et al., 2018): the layer, its stack, and loading from the ``sru`` package.

All matrix products of an SRU depend only on the input, so they run for every time step at once; what stays
sequential is an elementwise recurrence, run by a fused kernel (`parrnn.ops`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from parrnn import _packing
from parrnn import _validation as check
from parrnn.ops import gemm
from parrnn.ops.sru import dispatch

VERSIONS = ("v1", "v2")


class SRUCell(nn.Module):
    r"""One SRU layer (both directions when ``bidirectional``), with the semantics of the ``sru`` 2.6 package.

    For every time step $t$ and hidden unit (``U = x W`` is one matrix product for all steps):

    $$
    \begin{aligned}
    f_t &= \sigma(U^{(1)}_t + v_f \odot c_{t-1} + b_f) \\
    r_t &= \sigma(U^{(2)}_t + v_r \odot c_{t-1} + b_r) \\
    c_t &= f_t \odot c_{t-1} + (1 - f_t) \odot U^{(0)}_t \\
    h_t &= r_t \odot g(c_t) + (1 - r_t) \odot x'_t
    \end{aligned}
    $$

    ``version="v2"`` has the peephole terms $v \odot c_{t-1}$; ``"v1"`` drops them, which makes
    $c_t$ linear in $c_{t-1}$ (and enables the time-parallel ``scan`` backend). $g$ is the
    identity or ``tanh`` (``use_tanh``). The highway input $x'_t$ is $\alpha x_t$ when
    ``input_size == dirs * hidden_size`` ($\alpha = \sqrt{1 + 2 e^{b}}$ with ``rescale``, else 1;
    $b$ = ``highway_bias``), otherwise a 4th projection $U^{(3)}_t$. The reverse direction runs
    from the last step to the first.

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: features of the state per direction, ``H``.
        bidirectional: add a second direction that runs backwards in time. Default: ``False``.
        dropout: variational dropout on the recurrent branch $r_t(g(c_t) - x'_t)$ with one mask per
            sequence (``sru``'s semantics; [SRU][parrnn.SRU] applies it to every layer but the last). Default: 0.
        rnn_dropout: variational dropout on the input of the matrix product, one mask per sequence. Default: 0.
        layer_norm: apply ``nn.LayerNorm`` to the input (or to the output with ``normalize_after``).
        normalize_after: layer-normalise the output instead of the input. Default: ``False``.
        highway_bias: initial value of the reset-gate bias $b_r$. Default: -2.
        rescale: scale the highway input by $\alpha$. Default: ``True``.
        use_tanh: $g = \tanh$ instead of the identity. Default: ``False``.
        projection_size: if > 0, factor ``W`` as ``weight_proj @ weight`` with this inner size (must be smaller
            than ``input_size`` and ``dirs * hidden_size``). Default: 0.
        version: ``"v2"`` (peephole, default) or ``"v1"`` (linear).
        has_skip_term: include the highway term $(1 - r_t) x'_t$. Default: ``True``.
        batch_first: inputs and outputs are ``(N, L, *)`` instead of ``(L, N, *)``. Default: ``False``.
        backend: ``"auto"`` (fastest that works here), ``"sequential"``, ``"scan"`` (v1 only) or
            ``"reference"`` (the device comes from the tensors; the old ``"cpu"``/``"cuda"`` are deprecated aliases
            of ``"sequential"``); see [parrnn.available_backends][].

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md; see `forward`)
        * **input**: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``), float16/bfloat16/float32/float64.
        * **state**: ``(N, dirs * H)`` initial cell state; zeros if ``None`` (old keyword: ``c0=``).
        * **lengths**: ``(N,)`` integer lengths in ``[1, L]``; steps ``t >= lengths[n]`` are padding.
        * **mask**: ``(L, N)`` (``(N, L)`` with ``batch_first``), True (non-zero) on padded steps, anywhere in the
          sequence (old keyword: ``mask_pad=``). Padded steps keep ``c`` unchanged and output ``h = 0``; what the
          input holds there (NaN, inf) reaches no output and no gradient. Give ``lengths`` or ``mask``, not both.

    Outputs: output, state
        * **output**: ``(L, N, dirs * H)`` (``(N, L, dirs * H)`` with ``batch_first``).
        * **state**: ``(N, dirs * H)`` last cell state of each direction (the reverse direction's is at t = 0).

    `step` ``(input (N, H_in), state) -> (output (N, dirs * H), state)`` runs one token and equals `forward`
    token by token (unidirectional; in evaluation, or without dropout).

    Attributes:
        weight: ``(H_in or projection_size, K * dirs * H)``, columns ordered (matrix k, direction, unit);
            ``K = 4`` when the highway needs its own projection, else 3.
            Initialised $\mathcal{U}(-\sqrt{3/\text{fan\_in}}, \sqrt{3/\text{fan\_in}})$ as in ``sru``.
        weight_proj: ``(H_in, projection_size)`` or ``None``.
        weight_c: ``(2, dirs * H)`` peephole weights $(v_f, v_r)$, ``None`` for ``version="v1"``.
        bias: ``(2, dirs * H)`` gate biases $(b_f, b_r)$; $b_r$ starts at ``highway_bias``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        rnn_dropout: float = 0.0,
        layer_norm: bool = False,
        normalize_after: bool = False,
        highway_bias: float = -2.0,
        rescale: bool = True,
        use_tanh: bool = False,
        projection_size: int = 0,
        version: str = "v2",
        has_skip_term: bool = True,
        batch_first: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.projection_size = check.check_positive_int(projection_size, "projection_size", minimum=0)
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        dispatch.check_backend(backend)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size
        if self.projection_size and not self.projection_size < min(input_size, self.output_size):
            raise ValueError(
                f"projection_size must be smaller than input_size ({input_size}) and dirs * hidden_size "
                f"({self.output_size}) to factor the weight, got {projection_size}")
        self.dropout = check.check_probability(dropout, "dropout")
        self.rnn_dropout = check.check_probability(rnn_dropout, "rnn_dropout")
        self.normalize_after = bool(normalize_after)
        self.highway_bias = float(highway_bias)
        self.rescale = bool(rescale)
        self.use_tanh = bool(use_tanh)
        self.version = version
        self.has_skip_term = bool(has_skip_term)
        self.batch_first = bool(batch_first)
        self.backend = backend
        self.num_matrices = 4 if has_skip_term and input_size != self.output_size else 3
        self._create_parameters(layer_norm)
        self.reset_parameters()

    def _create_parameters(self, layer_norm: bool) -> None:
        """The parameters in parrnn's layout (see Attributes), uninitialised. `parrnn.compat.sru.SRUCell` creates
        ``sru``'s layout instead; `run` reads them only through `projection_weight`, `gate_weights` and
        `highway_scale`."""
        # alpha of the highway input x' = alpha * x; only used when num_matrices == 3
        self.scale_x = (math.sqrt(1.0 + 2.0 * math.exp(self.highway_bias)) if self.rescale and self.has_skip_term
                        else 1.0)
        proj_in = self.projection_size or self.input_size
        self.weight_proj = (nn.Parameter(torch.empty(self.input_size, self.projection_size)) if self.projection_size
                            else None)
        self.weight = nn.Parameter(torch.empty(proj_in, self.num_matrices * self.output_size))
        self.weight_c = nn.Parameter(torch.empty(2, self.output_size)) if self.version == "v2" else None
        self.bias = nn.Parameter(torch.empty(2, self.output_size))
        norm_size = self.output_size if self.normalize_after else self.input_size
        self.layer_norm = nn.LayerNorm(norm_size) if layer_norm else None

    def reset_parameters(self) -> None:
        """``sru`` 2.6's initialisation: unit-variance projections, gate columns and peephole scaled by sqrt(1/2)."""
        with torch.no_grad():
            self.bias.zero_()
            self.bias[1].fill_(self.highway_bias)
            fan_in = self.weight.size(0)
            self.weight.uniform_(-math.sqrt(3.0 / fan_in), math.sqrt(3.0 / fan_in))
            if self.weight_proj is not None:
                bound = math.sqrt(3.0 / self.weight_proj.size(0))
                self.weight_proj.uniform_(-bound, bound)
            w = self.weight.view(fan_in, self.num_matrices, self.output_size)
            if self.dropout > 0:
                w[:, 0].mul_(math.sqrt(1 - self.dropout))
            if self.rnn_dropout > 0:
                w.mul_(math.sqrt(1 - self.rnn_dropout))
            if self.layer_norm is not None:
                w.mul_(0.1)
                self.layer_norm.reset_parameters()
            if self.num_matrices == 4 and self.rescale:
                w[:, 3].mul_(math.sqrt(1.0 + 2.0 * math.exp(self.highway_bias)))
            if self.weight_c is not None:
                self.weight_c.uniform_(-math.sqrt(3.0), math.sqrt(3.0)).mul_(math.sqrt(0.5))
                w[:, 1:3].mul_(math.sqrt(0.5))

    def _dropout_mask(self, batch: int, size: int, p: float, like: Tensor) -> Tensor:
        return like.new_empty(batch, size).bernoulli_(1 - p).div_(1 - p)

    def forward(self, input: Tensor, state: Tensor | None = None, lengths: Tensor | None = None,
                mask: Tensor | None = None, c0: Tensor | None = None, mask_pad: Tensor | None = None,
                ) -> tuple[Tensor, Tensor]:
        """One SRU layer over a sequence (the layer protocol, docs/protocol.md).

        Args:
            input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``).
            state: ``(N, dirs * H)`` initial cell state, as `init_state` and this method return it; zeros if
                ``None``.
            lengths: ``(N,)`` integers in ``[1, L]`` (tensor or list); steps ``t >= lengths[n]`` are padding.
            mask: ``(L, N)`` (``(N, L)`` with ``batch_first``), True (non-zero) on padded steps, anywhere.
            c0: deprecated spelling of ``state`` (a DeprecationWarning).
            mask_pad: deprecated spelling of ``mask`` (a DeprecationWarning).

        Returns:
            ``(output, state)``: ``output`` ``(L, N, dirs * H)`` (batch first with ``batch_first``), 0 on padded
            steps; ``state`` ``(N, dirs * H)``, the last cell state of each direction.
        """
        state, mask = check.state_and_mask(state, mask, c0, mask_pad)
        x = input.transpose(0, 1) if self.batch_first else input
        if not torch.jit.is_scripting():  # TorchScript skips the checks (they format Python messages)
            check.check_sequence_input(input, self.input_size, self.batch_first)
            check.check_like_parameters(input, self.bias)  # before the state: a wrong input dtype is the input's
            if state is not None:
                check.check_state(state, (x.size(1), self.output_size), x, "state")
        pad: Tensor | None = None
        if lengths is not None or mask is not None:
            pad = check.padding_mask(x, lengths, mask, self.batch_first)
        out, c_n = self.run(x, state, pad)
        return (out.transpose(0, 1) if self.batch_first else out), c_n

    def step(self, input: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step (the layer protocol), equal to `forward` token by token.

        Args:
            input: ``(N, H_in)``, one token per sequence.
            state: ``(N, dirs * H)`` cell state (zeros if ``None``).

        Returns:
            ``(output (N, dirs * H), state (N, dirs * H))``. Unidirectional layers only (ValueError otherwise). In
            training, dropout draws new masks at every call (`forward` draws one per sequence).
        """
        check.check_streamable(self.bidirectional)
        check.check_step_input(input, self.input_size)
        check.check_like_parameters(input, self.bias)
        if state is not None:
            check.check_state(state, (input.size(0), self.output_size), input, "state")
        out, c_n = self.run(input.unsqueeze(0), state, None)  # the fused forward at L = 1
        return out[0], c_n

    def init_state(self, batch_size: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> Tensor:
        """The zero cell state ``(N, dirs * H)`` as `forward` and `step` take and return it (``device`` and
        ``dtype`` default to the parameters')."""
        check.check_positive_int(batch_size, "batch_size")
        return torch.zeros(batch_size, self.output_size, **check.state_options(self.bias, device, dtype))

    def run(self, x: Tensor, c0: Tensor | None, mask_pad: Tensor | None) -> tuple[Tensor, Tensor]:
        """The layer on validated, time-major input (`forward` checks it): ``x`` ``(L, N, H_in)``, ``c0``
        ``(N, dirs * H)`` or None, ``mask_pad`` ``(L, N)`` bool or None."""
        batch = x.size(1)
        x = check.zero_padding(x, mask_pad)  # padded steps reach no value and no gradient, whatever they hold
        residual = x
        if self.layer_norm is not None and not self.normalize_after:
            x = self.layer_norm(x)
        if self.training and self.rnn_dropout > 0:
            x = x * self._dropout_mask(batch, x.size(-1), self.rnn_dropout, x).unsqueeze(0)
        u = self.recurrence_input(self.project(x))
        drop_mask: Tensor | None = None
        if self.training and self.dropout > 0:
            drop_mask = check.cast_like(self._dropout_mask(batch, self.output_size, self.dropout, u), u)
        if c0 is None:
            c0 = u.new_zeros(batch, self.output_size, dtype=self.bias.dtype)
        skip = check.cast_like(residual, u) if self.num_matrices == 3 and self.has_skip_term else None
        weight_c, bias = self.gate_weights()
        if weight_c is not None:  # weight_c, bias, c0: float32 under autocast (check.keeps_float32)
            weight_c = check.recurrence_operand(weight_c, u)
        h, c_n = dispatch.sru_recurrence(
            u, skip, weight_c, check.recurrence_operand(bias, u), check.recurrence_operand(c0, u), mask_pad,
            drop_mask, bidirectional=self.bidirectional, use_tanh=self.use_tanh, scale_x=self.highway_scale(),
            backend=self.backend)
        if self.layer_norm is not None and self.normalize_after:
            h = self.layer_norm(h)
        return h, c_n

    def project(self, x: Tensor) -> Tensor:
        """``U = x W`` for all steps at once: ``(L, N, H_in)`` -> ``(L, N, K, dirs * H)``."""
        length, batch, _ = x.shape
        flat = x.reshape(length * batch, x.size(-1))
        if self.weight_proj is not None:
            flat = gemm.matmul(flat, self.weight_proj)
        return gemm.matmul(flat, self.projection_weight()).view(length, batch, self.num_matrices, self.output_size)

    def projection_weight(self) -> Tensor:
        """``W`` ``(H_in or projection_size, K * dirs * H)`` with columns ordered (matrix, direction, unit)."""
        return self.weight

    def recurrence_input(self, u: Tensor) -> Tensor:
        """The projections as the recurrence reads them (here unchanged)."""
        return u

    def gate_weights(self) -> tuple[Tensor | None, Tensor]:
        """The peephole weights ``(2, dirs * H)`` (None for v1) and the gate biases ``(2, dirs * H)``."""
        return self.weight_c, self.bias

    def highway_scale(self) -> float:
        """alpha, the scale of the highway input ``x' = alpha * x``."""
        return self.scale_x

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, version={self.version!r}"
        for name, default in (("bidirectional", False), ("dropout", 0.0), ("rnn_dropout", 0.0),
                              ("projection_size", 0), ("use_tanh", False), ("has_skip_term", True),
                              ("rescale", True), ("batch_first", False), ("backend", "auto")):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        if self.layer_norm is not None:
            s += ", layer_norm=True" + (", normalize_after=True" if self.normalize_after else "")
        return s


class SRU(nn.Module):
    r"""A stack of SRU layers: a drop-in replacement for `torch.nn.LSTM` (see [SRUCell][parrnn.SRUCell] for the
    equations and every option).

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: features of the state per direction, ``H``.
        num_layers: stacked layers. Default: 2 in this release, with a FutureWarning when not passed: the next
            release uses 1, `torch.nn.LSTM`'s and every other parrnn layer's default.
        bidirectional: as in [SRUCell][parrnn.SRUCell].
        dropout: as in [SRUCell][parrnn.SRUCell], applied to every layer but the last.
        rnn_dropout: as in [SRUCell][parrnn.SRUCell].
        layer_norm: as in [SRUCell][parrnn.SRUCell].
        normalize_after: as in [SRUCell][parrnn.SRUCell].
        highway_bias: as in [SRUCell][parrnn.SRUCell].
        rescale: as in [SRUCell][parrnn.SRUCell].
        use_tanh: as in [SRUCell][parrnn.SRUCell].
        projection_size: as in [SRUCell][parrnn.SRUCell], for every layer; or a sequence with one size per layer
            (0 = no projection on that layer), e.g. ``[0, 8]``.
        version: ``"v2"`` (peephole) or ``"v1"`` (linear), as in [SRUCell][parrnn.SRUCell].
        has_skip_term: as in [SRUCell][parrnn.SRUCell].
        batch_first: as in [SRUCell][parrnn.SRUCell].
        backend: as in [SRUCell][parrnn.SRUCell]; settable later with ``model.backend = name``.

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md; see `forward`)
        * **input**: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a
          `torch.nn.utils.rnn.PackedSequence`.
        * **state**: ``(num_layers, N, dirs * H)`` initial cell states; zeros if ``None`` (old keyword ``c0=``).
        * **lengths**: ``(N,)`` integer lengths in ``[1, L]``.
        * **mask**: ``(L, N)`` (``(N, L)`` with ``batch_first``), True (non-zero) on padded steps (old keyword
          ``mask_pad=``).

    Outputs: output, state
        * **output**: ``(L, N, dirs * H)`` (``(N, L, dirs * H)`` with ``batch_first``); a ``PackedSequence``
          with the input's ``sorted_indices`` and row order when the input was one. Padded steps are 0.
        * **state**: ``(num_layers, N, dirs * H)`` last cell state of every layer. The last output of each
          sequence (``h_n``) is `parrnn.last_output(output, lengths)`.

    `step` ``(input (N, H_in), state) -> (output (N, dirs * H), state)`` runs one token (streaming) and equals
    `forward` token by token; `init_state` gives the zero state.

    Examples:
        >>> rnn = SRU(16, 32, num_layers=2)
        >>> output, c_n = rnn(torch.randn(50, 4, 16))
        >>> output.shape, c_n.shape
        (torch.Size([50, 4, 32]), torch.Size([2, 4, 32]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int | None = None,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        rnn_dropout: float = 0.0,
        layer_norm: bool = False,
        normalize_after: bool = False,
        highway_bias: float = -2.0,
        rescale: bool = True,
        use_tanh: bool = False,
        projection_size: int | Sequence[int] = 0,
        version: str = "v2",
        has_skip_term: bool = True,
        batch_first: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.num_layers = num_layers = check.default_num_layers(num_layers, "SRU")
        projections = _per_layer(projection_size, num_layers, "projection_size")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size
        self.batch_first = bool(batch_first)
        self.dropout = check.check_probability(dropout, "dropout")
        self.version = version
        self.layers = nn.ModuleList(
            SRUCell(
                input_size if i == 0 else self.output_size, hidden_size, bidirectional=bidirectional,
                dropout=dropout if i + 1 < num_layers else 0.0, rnn_dropout=rnn_dropout, layer_norm=layer_norm,
                normalize_after=normalize_after, highway_bias=highway_bias, rescale=rescale, use_tanh=use_tanh,
                projection_size=projections[i], version=version, has_skip_term=has_skip_term, backend=backend)
            for i in range(num_layers))

    __jit_unused_properties__ = ["backend"]  # noqa: RUF012 (TorchScript reads this class attribute)

    @property
    def backend(self) -> str:
        return self.layers[0].backend

    @backend.setter
    def backend(self, name: str) -> None:
        dispatch.check_backend(name)
        for layer in self.layers:
            layer.backend = name

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, input: Tensor, state: Tensor | None = None, lengths: Tensor | None = None,
                mask: Tensor | None = None, c0: Tensor | None = None,
                mask_pad: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (input: or, eagerly, a PackedSequence)
        """Run the stack over a sequence (the layer protocol, docs/protocol.md).

        Args:
            input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a ``PackedSequence`` (then the
                output is a ``PackedSequence`` with the input's ``sorted_indices`` and row order, as
                `torch.nn.LSTM`'s).
            state: ``(num_layers, N, dirs * H)`` initial cell states (layer ``i`` starts from ``state[i]``), as
                `init_state` and this method return them; zeros if ``None``.
            lengths: ``(N,)`` integers in ``[1, L]`` (tensor or list); steps ``t >= lengths[n]`` are padding.
            mask: ``(L, N)`` (``(N, L)`` with ``batch_first``), True (non-zero) on padded steps, anywhere.
            c0: deprecated spelling of ``state`` (a DeprecationWarning).
            mask_pad: deprecated spelling of ``mask`` (a DeprecationWarning).

        Returns:
            ``(output, state)``: ``output`` ``(L, N, dirs * H)`` (batch first with ``batch_first``), 0 on padded
            steps; ``state`` ``(num_layers, N, dirs * H)``, every layer's last cell state.
        """
        state, mask = check.state_and_mask(state, mask, c0, mask_pad)
        if not torch.jit.is_scripting():
            if isinstance(input, PackedSequence):
                return self._forward_packed(input, state, lengths, mask)
            check.check_sequence_input(input, self.input_size, self.batch_first)
        x = input.transpose(0, 1) if self.batch_first else input
        if state is not None and not torch.jit.is_scripting():
            check.check_like_parameters(input, self.layers[0].bias)  # a wrong input dtype is not the state's fault
            check.check_state(state, (self.num_layers, x.size(1), self.output_size), x, "state")
        pad: Tensor | None = None
        if lengths is not None or mask is not None:
            pad = check.padding_mask(x, lengths, mask, self.batch_first)
        x, c_n = self._run_layers(x, state, pad)
        return (x.transpose(0, 1) if self.batch_first else x), c_n

    def _run_layers(self, x: Tensor, state: Tensor | None, pad: Tensor | None) -> tuple[Tensor, Tensor]:
        """The layers over time-major ``x`` ``(L, N, H_in)``, layer ``i`` from ``state[i]``, with the padding
        ``pad`` ``(L, N)`` bool or None: ``(output, (num_layers, N, dirs * H))``."""
        # without a state, every layer starts from the same zeros (read only): one allocation, not one per layer (a
        # layer whose parameters have another dtype makes its own, in that dtype)
        zeros: Tensor | None = None
        if state is None:
            zeros = torch.zeros(x.size(1), self.output_size, dtype=self.layers[0].bias.dtype, device=x.device)
        states: list[Tensor] = [] if state is None else state.unbind(0)
        finals: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            start: Tensor | None = None
            if state is not None:
                start = states[i]
            elif zeros is not None and zeros.dtype == layer.bias.dtype:
                start = zeros
            x, c_n = layer(x, start, None, pad)  # a module call: the layer's hooks (pruning, ...) run
            finals.append(c_n)
        return x, torch.stack(finals)

    @torch.jit.unused
    def _forward_packed(self, input: PackedSequence, state: Tensor | None, lengths: Tensor | None,
                        mask: Tensor | None) -> tuple[PackedSequence, Tensor]:
        return _packing.run_packed(lambda x, n: self.forward(x, state, n), input, self.batch_first,
                                   ("lengths", lengths), ("mask", mask))

    def step(self, input: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step (streaming; the layer protocol), equal to `forward` token by token.

        Args:
            input: ``(N, H_in)``, one token per sequence.
            state: ``(num_layers, N, dirs * H)`` cell states, as `forward` and `init_state` return them (zeros if
                ``None``).

        Returns:
            ``(output (N, dirs * H), state (num_layers, N, dirs * H))``. Each layer runs the fused forward at
            ``L = 1`` through a module call (its hooks run). Unidirectional stacks only (ValueError otherwise);
            in training, dropout draws new masks at every call.
        """
        check.check_streamable(self.bidirectional)
        check.check_step_input(input, self.input_size)
        check.check_like_parameters(input, self.layers[0].bias)
        if state is not None:
            check.check_state(state, (self.num_layers, input.size(0), self.output_size), input, "state")
        out, c_n = self._run_layers(input.unsqueeze(0), state, None)
        return out[0], c_n

    def init_state(self, batch_size: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> Tensor:
        """The zero state ``(num_layers, N, dirs * H)`` as `forward` and `step` take and return it (``device``
        and ``dtype`` default to the parameters')."""
        check.check_positive_int(batch_size, "batch_size")
        return torch.zeros(self.num_layers, batch_size, self.output_size,
                           **check.state_options(self.layers[0].bias, device, dtype))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"

    @classmethod
    def from_sru(cls, module: nn.Module, *, backend: str = "auto", batch_first: bool = False) -> SRU:
        """Build a parrnn ``SRU`` with the same configuration and weights as an ``sru.SRU`` (2.6) module (see
        [parrnn.compat.convert.sru_from_sru][])."""
        from parrnn.compat import convert

        return convert.sru_from_sru(cls, module, backend=backend, batch_first=batch_first)

    def load_sru_state_dict(self, state_dict: dict[str, Tensor], scale_x: list[float] | None = None) -> None:
        """Load an ``sru.SRU`` 2.6 ``state_dict`` (see [parrnn.compat.convert.load_sru_state_dict][])."""
        from parrnn.compat import convert

        convert.load_sru_state_dict(self, state_dict, scale_x)


def _per_layer(value: int | Sequence[int], num_layers: int, name: str) -> list[int]:
    """An int for every layer, or one int per layer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * num_layers
    values = list(value)
    if len(values) != num_layers:
        raise ValueError(f"{name} must be an int or have one entry per layer ({num_layers}), got {value!r}")
    return values

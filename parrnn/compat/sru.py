r"""`sru` 2.6's public API on parrnn's fused kernels: `import parrnn.compat.sru as sru` and nothing else changes.

`SRU` and `SRUCell` take `sru`'s constructor arguments (same positional order and defaults, e.g.
`highway_bias=0`, `rescale=False` for `SRU`), `forward(input, c0=None, mask_pad=None)` with `sru`'s padding
mask (`(L, N)`, non-zero on padded steps), and hold their parameters under `sru`'s names, shapes and layout
(`rnn_lst.{i}.weight` with columns ordered (direction, unit, matrix), `weight_c`, `bias`, `weight_proj`,
`layer_norm.*`, the `scale_x` buffer), so `state_dict`s and optimizer states move between `sru.SRU` and this
`SRU` with plain `load_state_dict`, both ways. The same seed gives the same initial weights as `sru`.

The cell is [parrnn.SRUCell][] (a subclass: one forward, one set of kernels); only the parameter layout
(`_create_parameters`, `projection_weight`, `gate_weights`, `highway_scale`), the initialisation order and the call
signature are `sru`'s. The layout stays `sru`'s rather than being mapped in state_dict hooks because an optimizer
state is keyed by parameter position and holds tensors of the parameter's shape and order: mapped layouts would
load an `sru` optimizer state with its moments in the wrong column order, silently.

Speed: parrnn's recurrence wants the projection columns ordered (matrix, direction, unit). Each forward
permutes the weight (`(D, K * C)`, a copy the size of the weight, not of the activations) before the one matrix
product, which runs on parrnn's matrix-product engine (`parrnn.ops.gemm`) like `parrnn.SRU`'s; the recurrence
then runs on parrnn's fused kernels (forward and backward on CPU and GPU, where `sru`
trains on CPU through a Python loop).

Not supported: `custom_m` (raises `NotImplementedError`). `rnn_dropout`/`use_tanh`/`v1`, deprecated in `sru`,
work. Under TorchScript the recurrence always runs the fused kernel (no pure-PyTorch fallback).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from parrnn import _validation as check
from parrnn import sru as parrnn_sru

__version__ = "2.6.0"
__all__ = ["SRU", "SRUCell", "__version__"]


def _no_custom_m(custom_m: object) -> None:
    if custom_m is not None:
        raise NotImplementedError(
            "parrnn.compat.sru does not support custom_m (a user module computing U): parrnn's kernels need "
            "U = x @ weight. Use the sru package for this model.")


class SRUCell(parrnn_sru.SRUCell):
    r"""One SRU layer with `sru.SRUCell` 2.6's arguments, parameters and behaviour: [parrnn.SRUCell][] (same
    equations, same forward, same kernels) holding its parameters in `sru`'s layout.

    Args are `sru`'s: `input_size`, `hidden_size`, `dropout`, `rnn_dropout`, `bidirectional`, `n_proj`
    (used only where it is smaller than both `input_size` and `dirs * hidden_size`, as in `sru`), `use_tanh`,
    `highway_bias` (default 0), `has_skip_term`, `layer_norm`, `rescale` (default `True` for the cell),
    `v1`, `custom_m` (not supported), `amp_recurrence_fp16`, `normalize_after`, `weight_c_init`.

    Inputs: `input` `(L, N, H_in)` or one step `(N, H_in)`; `c0` `(N, dirs * H)`; `mask_pad` `(L, N)`, non-zero on
    padded steps (also flat `(L * N,)` or `(L, N, 1)`, as `sru` reads it; a batch-first `(N, L)` mask is a
    `ValueError` when `L != N` -- `sru` would silently misread it -- and cannot be told apart when `L == N`).

    Outputs: `h` `(L, N, dirs * H)` (`(1, N, dirs * H)` for a one-step input, as `sru` returns it) and
    `c` `(N, dirs * H)`.

    Attributes:
        weight: `(H_in or projection_size, dirs * H * K)`, columns ordered (direction, unit, matrix), `K` = 3
            or 4 (4 when the highway needs its own projection).
        weight_proj: `(H_in, projection_size)` or `None`.
        weight_c: `(2 * dirs * H,)` peephole weights (zero and frozen for `v1`).
        bias: `(2 * dirs * H,)` forget and reset biases.
        scale_x: buffer `(1,)`, the highway scale (read at every call, as the peephole rule of `v1` layers).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dropout: float = 0.0,
        rnn_dropout: float = 0.0,
        bidirectional: bool = False,
        n_proj: int = 0,
        use_tanh: bool = False,
        highway_bias: float = 0.0,
        has_skip_term: bool = True,
        layer_norm: bool = False,
        rescale: bool = True,
        v1: bool = False,
        custom_m: nn.Module | None = None,
        amp_recurrence_fp16: bool = False,
        normalize_after: bool = False,
        weight_c_init: float | None = None,
    ) -> None:
        _no_custom_m(custom_m)
        # read by reset_parameters, which parrnn.SRUCell's constructor calls
        self.v1 = bool(v1)
        self.weight_c_init = weight_c_init
        n_proj = check.check_positive_int(n_proj, "n_proj", minimum=0)
        output_size = 2 * hidden_size if bidirectional else hidden_size
        super().__init__(
            input_size, hidden_size, bidirectional=bidirectional, dropout=dropout, rnn_dropout=rnn_dropout,
            layer_norm=layer_norm, normalize_after=normalize_after, highway_bias=highway_bias, rescale=rescale,
            use_tanh=use_tanh, projection_size=n_proj if 0 < n_proj < min(input_size, output_size) else 0,
            version="v1" if v1 else "v2", has_skip_term=has_skip_term)
        self.activation_type = 1 if use_tanh else 0
        self.activation = "tanh" if use_tanh else "none"
        self.custom_m = None
        self.amp_recurrence_fp16 = bool(amp_recurrence_fp16)

    def _create_parameters(self, layer_norm: bool) -> None:
        """`sru`'s parameters: names, shapes and layout (see Attributes), so that state_dicts and optimizer
        states move between `sru.SRU` and this class unchanged."""
        fan_in = self.projection_size or self.input_size
        self.weight_proj = (nn.Parameter(torch.empty(self.input_size, self.projection_size))
                            if self.projection_size else None)
        self.weight = nn.Parameter(torch.empty(fan_in, self.output_size * self.num_matrices))
        self.weight_c = nn.Parameter(torch.empty(2 * self.output_size))
        self.bias = nn.Parameter(torch.empty(2 * self.output_size))
        self.register_buffer("scale_x", torch.zeros(1))
        self.layer_norm = (nn.LayerNorm(self.output_size if self.normalize_after else self.input_size)
                           if layer_norm else None)

    def reset_parameters(self) -> None:
        """`sru` 2.6's initialisation, in its order (the same seed gives the same weights as `sru`)."""
        with torch.no_grad():
            self.bias.zero_()
            self.bias[self.output_size:].fill_(self.highway_bias)
            self.scale_x.fill_(1.0)
            if self.rescale and self.has_skip_term:
                self.scale_x.fill_((1 + math.exp(self.highway_bias) * 2) ** 0.5)
            fan_in = self.weight.size(0)
            bound = (3.0 / fan_in) ** 0.5
            self.weight.uniform_(-bound, bound)
            if self.weight_proj is not None:
                bound = (3.0 / self.weight_proj.size(0)) ** 0.5
                self.weight_proj.uniform_(-bound, bound)
            w = self.weight.view(fan_in, -1, self.hidden_size, self.num_matrices)
            if self.dropout > 0:
                w[:, :, :, 0].mul_((1 - self.dropout) ** 0.5)
            if self.rnn_dropout > 0:
                w.mul_((1 - self.rnn_dropout) ** 0.5)
            if self.layer_norm is not None:
                w.mul_(0.1)
            if self.rescale and self.has_skip_term and self.num_matrices == 4:
                w[:, :, :, 3].mul_((1 + math.exp(self.highway_bias) * 2) ** 0.5)
            if not self.v1:
                if self.weight_c_init is None:
                    self.weight_c.uniform_(-(3.0 ** 0.5), 3.0 ** 0.5).mul_(0.5 ** 0.5)
                else:
                    self.weight_c.uniform_(-self.weight_c_init, self.weight_c_init)
                w[:, :, :, 1].mul_(0.5 ** 0.5)
                w[:, :, :, 2].mul_(0.5 ** 0.5)
            else:
                self.weight_c.zero_()
                self.weight_c.requires_grad = False
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def forward(self, input: Tensor, c0: Tensor | None = None, mask_pad: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError("input must be 2-D (N, input_size) or 3-D (L, N, input_size)")
        x = input if input.dim() == 3 else input.unsqueeze(0)
        if not torch.jit.is_scripting():
            check.check_sequence_input(x, self.input_size, batch_first=False)
            check.check_like_parameters(x, self.bias)
            _check_mask_type(mask_pad)
            if c0 is not None:  # sru takes any floating c0 (c_n then has the promoted dtype)
                check.check_state(c0, (x.size(1), self.output_size), x, "c0", any_float=True)
        h, c = self.run(x, c0, _mask(mask_pad, x.size(0), x.size(1)))
        state_dtype = torch.promote_types(self.bias.dtype if c0 is None else c0.dtype, x.dtype)
        return h, c if c.dtype == state_dtype else c.to(state_dtype)

    def projection_weight(self) -> Tensor:
        """`weight` with its columns permuted to parrnn's (matrix, direction, unit) order: a weight-sized copy
        per call (never cached, so it always reads the live parameter), rather than a permutation of `U`."""
        fan_in, k = self.weight.size(0), self.num_matrices
        weight = self.weight.view(fan_in, self.num_directions, self.hidden_size, k).permute(0, 3, 1, 2)
        return weight.reshape(fan_in, k * self.output_size)

    def recurrence_input(self, u: Tensor) -> Tensor:
        """`sru` runs its CUDA recurrence in float32 unless `amp_recurrence_fp16`."""
        if u.is_cuda and u.dtype != torch.float64 and not (self.amp_recurrence_fp16 and u.dtype == torch.float16):
            return u.float()
        return u

    def gate_weights(self) -> tuple[Tensor | None, Tensor]:
        """`weight_c` and `bias` viewed `(2, dirs * H)`; no peephole for a `v1` layer whose `weight_c` is zero
        and frozen (it then runs parrnn's linear recurrence, where the scan backend works)."""
        weight_c: Tensor | None = None
        if self._uses_peephole():
            weight_c = self.weight_c.view(2, self.output_size)
        return weight_c, self.bias.view(2, self.output_size)

    def _uses_peephole(self) -> bool:
        """Read at every call: v2, or a v1 layer whose ``weight_c`` trains or is not zero (``sru`` then uses it)."""
        return not self.v1 or self.weight_c.requires_grad or bool(self.weight_c.detach().any())

    def highway_scale(self) -> float:
        """The `scale_x` buffer, read at every call (1 without `rescale`, as in `sru`)."""
        return float(self.scale_x) if self.rescale else 1.0

    def _dropout_mask(self, batch: int, size: int, p: float, like: Tensor) -> Tensor:
        return self.bias.new_empty(batch, size).bernoulli_(1 - p).div_(1 - p)  # sru's dtype: the parameters'

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.projection_size > 0:
            s += f", projection_size={self.projection_size}"
        if self.dropout > 0:
            s += f", dropout={self.dropout}"
        if self.rnn_dropout > 0:
            s += f", rnn_dropout={self.rnn_dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.highway_bias != 0:
            s += f", highway_bias={self.highway_bias}"
        if self.activation_type != 0:
            s += f", activation={self.activation}"
        if self.v1:
            s += ", v1=True"
        s += f", rescale={self.rescale}"
        if not self.has_skip_term:
            s += ", has_skip_term=False"
        if self.layer_norm is not None:
            s += ", layer_norm=True"
        return s


def _check_mask_type(mask_pad: object) -> None:
    if mask_pad is not None and not isinstance(mask_pad, Tensor):
        raise TypeError(f"mask_pad must be a torch.Tensor (L, N), non-zero on padded steps, or None; "
                        f"got {type(mask_pad).__name__}")


def _mask(mask_pad: Tensor | None, length: int, batch: int) -> Tensor | None:
    """`sru`'s `mask_pad` (non-zero = padding) as an `(L, N)` bool tensor. `sru` reshapes any mask with `L * N`
    elements; here a mask of 2 or more dimensions must start with `(L, N)` (time first, `sru`'s layout), so a
    batch-first `(N, L)` mask is refused when `L != N` (when `L == N` it cannot be detected)."""
    if mask_pad is None:
        return None
    time_first = mask_pad.dim() < 2 or (mask_pad.size(0) == length and mask_pad.size(1) == batch)
    if mask_pad.numel() != length * batch or not time_first:
        hint = ""
        if mask_pad.dim() >= 2 and mask_pad.size(0) == batch and mask_pad.size(1) == length:
            hint = " (this looks batch-first (N, L): sru's mask_pad is time-first, transpose it)"
        raise ValueError("mask_pad must have shape (L, N) = (" + str(length) + ", " + str(batch) + "), got "
                         + str(mask_pad.shape) + hint)
    mask = mask_pad.reshape(length, batch)
    return mask if mask.dtype == torch.bool else mask != 0


class SRU(nn.Module):
    r"""A stack of SRU layers with `sru.SRU` 2.6's arguments, parameters and behaviour.

    Args (in `sru`'s order): `input_size`, `hidden_size`, `num_layers=2`, `dropout=0`, `rnn_dropout=0`,
    `bidirectional=False`, `projection_size=0` (per layer, used only where smaller than that layer's input and
    output sizes), `use_tanh=False`, `layer_norm=False`, `highway_bias=0`, `has_skip_term=True`,
    `rescale=False`, `v1=False`, `nn_rnn_compatible_return=False`, `custom_m=None` (not supported),
    `proj_input_to_hidden_first=False`, `amp_recurrence_fp16=False`, `normalize_after=False`,
    `weight_c_init=None`.

    Inputs: `input` `(L, N, H_in)` or a `PackedSequence`; `c0` `(num_layers, N, dirs * H)`; `mask_pad`
    `(L, N)`, non-zero on padded steps.

    Outputs: `output` `(L, N, dirs * H)` (a `PackedSequence` for one) and `c_n` `(num_layers, N, dirs * H)`,
    or `(num_layers * dirs, N, H)` with `nn_rnn_compatible_return` (as `nn.LSTM`'s).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        rnn_dropout: float = 0.0,
        bidirectional: bool = False,
        projection_size: int = 0,
        use_tanh: bool = False,
        layer_norm: bool = False,
        highway_bias: float = 0.0,
        has_skip_term: bool = True,
        rescale: bool = False,
        v1: bool = False,
        nn_rnn_compatible_return: bool = False,
        custom_m: nn.Module | list[nn.Module] | None = None,
        proj_input_to_hidden_first: bool = False,
        amp_recurrence_fp16: bool = False,
        normalize_after: bool = False,
        weight_c_init: float | None = None,
    ) -> None:
        super().__init__()
        _no_custom_m(custom_m)
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.output_size = hidden_size * 2 if bidirectional else hidden_size
        self.num_layers = check.check_positive_int(num_layers, "num_layers")
        self.dropout = dropout
        self.rnn_dropout = rnn_dropout
        self.projection_size = projection_size
        self.bidirectional = bool(bidirectional)
        self.use_layer_norm = bool(layer_norm)
        self.has_skip_term = bool(has_skip_term)
        self.num_directions = 2 if bidirectional else 1
        self.nn_rnn_compatible_return = bool(nn_rnn_compatible_return)
        self.amp_recurrence_fp16 = bool(amp_recurrence_fp16)
        self.input_to_hidden = None
        first_input = input_size
        if proj_input_to_hidden_first and input_size != self.output_size:
            first_input = self.output_size
            self.input_to_hidden = nn.Linear(input_size, self.output_size, bias=False)
        if rnn_dropout > 0:
            warnings.warn("rnn_dropout > 0 is deprecated in sru and will be removed in its next major version. "
                          "Please use dropout instead.", stacklevel=2)
        if use_tanh:
            warnings.warn("use_tanh = True is deprecated in sru and will be removed in its next major version.",
                          stacklevel=2)
        self.rnn_lst = nn.ModuleList(
            SRUCell(first_input if i == 0 else self.output_size, hidden_size,
                    dropout=dropout if i + 1 != num_layers else 0.0, rnn_dropout=rnn_dropout,
                    bidirectional=bidirectional, n_proj=projection_size, use_tanh=use_tanh, layer_norm=layer_norm,
                    highway_bias=highway_bias, has_skip_term=has_skip_term, rescale=rescale, v1=v1,
                    amp_recurrence_fp16=amp_recurrence_fp16, normalize_after=normalize_after,
                    weight_c_init=weight_c_init)
            for i in range(num_layers))

    def forward(self, input: Tensor, c0: Tensor | None = None, mask_pad: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting() and isinstance(input, PackedSequence):
            return self._forward_packed(input, c0)
        if input.dim() != 3:
            raise ValueError("There must be 3 dimensions for (length, batch_size, input_size)")
        if not torch.jit.is_scripting():
            check.check_sequence_input(input, self.input_size, batch_first=False)
            check.check_like_parameters(input, self.rnn_lst[0].bias if self.input_to_hidden is None
                                        else self.input_to_hidden.weight)
            _check_mask_type(mask_pad)
            if c0 is not None:  # any floating dtype, as sru (c_n then has the promoted dtype)
                check.check_state(c0, (self.num_layers, input.size(1), self.output_size), input, "c0",
                                  any_float=True)
        mask = _mask(mask_pad, input.size(0), input.size(1))
        x = input
        if self.input_to_hidden is not None:
            x = self.input_to_hidden(x)
        finals: list[Tensor] = []
        for i, cell in enumerate(self.rnn_lst):
            x, c = cell(x, None if c0 is None else c0[i], mask)  # a module call: the cell's hooks run
            finals.append(c)
        c_n = torch.stack(finals)
        if self.nn_rnn_compatible_return:
            batch = input.size(1)
            c_n = c_n.view(self.num_layers, batch, self.num_directions, self.hidden_size).transpose(1, 2)
            c_n = c_n.reshape(self.num_layers * self.num_directions, batch, self.hidden_size)
        return x, c_n

    @torch.jit.unused
    def _forward_packed(self, input: PackedSequence, c0: Tensor | None) -> tuple[PackedSequence, Tensor]:
        padded, lengths = pad_packed_sequence(input)
        mask = torch.arange(padded.size(0)).unsqueeze(1) >= lengths.unsqueeze(0)
        output, c_n = self.forward(padded, c0, mask.to(padded.device))
        return pack_padded_sequence(output, lengths, enforce_sorted=False), c_n

    def reset_parameters(self) -> None:
        for cell in self.rnn_lst:
            cell.reset_parameters()
        if self.input_to_hidden is not None:
            self.input_to_hidden.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"

r"""SRU++ (Lei, 2021, "When Attention Meets Fast Recurrence"): attention feeding parrnn's SRU recurrence.

Each layer replaces the SRU's input projection `U = x W` by a small attention sub-layer (or, in layers without
attention, by a low-rank projection), then runs the same elementwise recurrence as [SRU][parrnn.SRU] on
parrnn's backends. The math and parameters follow the `sru` package's never-released 3.0 branch
(`sru==3.0.0.dev6`, `sru/modules.py`: `SRUpp`, `SRUppCell`, `SRUppAttention`, `SRUppProjectedLinear`);
[SRUpp.from_sru][parrnn.SRUpp.from_sru] converts such a module.

One layer, time-major (`L` steps, `N` sequences, `M` memory steps, `P = proj_size`, `C = dirs * H`):

    x~   = LayerNorm(x) if layer_norm and not normalize_after else x
    z    = [memory; x~] W1                                  (M + L, N, P)
    q    = z[M:],   k, v = split(z W2)                      attention with num_heads heads (SDPA)
    a    = alpha * Attention(q, k, v, mask) + z[M:]         alpha: learned scalar, starts at 0
    a    = LayerNorm_P(a) if attn_layer_norm
    U    = dropout(a) W3                                    (L, N, K, C), K = 3 or 4 (4 when H_in != C)
    h, c = SRU recurrence(U, highway x, c0)                 parrnn.ops: f, r gates with peephole
    h    = LayerNorm(h) if layer_norm and normalize_after

Layers without attention compute `U = dropout(LayerNorm_P(x~ W1)) W2` (`W2`: `P -> K * C`). `memory` (the
previous segment's layer inputs, Transformer-XL style) enters the keys and values as in `sru`: un-normalised,
even where the layer normalises its own input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from parrnn import _packing
from parrnn import _validation as check
from parrnn.ops.sru import dispatch

CAUSAL = "causal"


def causal_mask(length: int, memory_length: int = 0, *, device: Any = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """The additive causal mask `(L, M + L)` of `sru`: 0 where query `i` may see key `j` (`j <= M + i`),
    `-inf` elsewhere. `attn_mask="causal"` does the same without building it (and lets SDPA use its
    causal kernels when there is no memory)."""
    allowed = _causal_allowed(length, memory_length, device)
    return torch.zeros(length, memory_length + length, device=device, dtype=dtype).masked_fill(
        ~allowed, float("-inf"))


def _causal_allowed(length: int, memory_length: int, device: Any) -> Tensor:
    query = torch.arange(length, device=device).unsqueeze(1)
    key = torch.arange(memory_length + length, device=device).unsqueeze(0)
    return key <= query + memory_length


def _split_heads(t: Tensor, heads: int) -> Tensor:
    """`(S, N, P)` -> `(N, heads, S, P // heads)`."""
    length, batch, width = t.shape
    return t.reshape(length, batch, heads, width // heads).permute(1, 2, 0, 3)


def _merge_heads(t: Tensor) -> Tensor:
    """`(N, heads, L, d)` -> `(L, N, heads * d)`."""
    batch, heads, length, dim = t.shape
    return t.permute(2, 0, 1, 3).reshape(length, batch, heads * dim)


def _attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | str | None, key_padding: Tensor | None,
               dropout_p: float) -> Tensor:
    """SDPA on `(N, heads, L, d)` queries and `(N, heads, S, d)` keys/values.

    `attn_mask` is `"causal"`, an additive `(L, S)` float mask or None; `key_padding` `(N, S)` bool, True on
    keys nobody may attend to. With a causal mask and keys = queries only, SDPA's `is_causal` path is used.
    """
    length, source = q.size(-2), k.size(-2)
    if isinstance(attn_mask, str):
        if key_padding is None and source == length:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        mask: Tensor | None = _causal_allowed(length, source - length, q.device)
    else:
        mask = attn_mask
    if key_padding is not None:
        keep = ~key_padding[:, None, None, :]  # (N, 1, 1, S)
        if mask is None or mask.dtype == torch.bool:
            mask = keep if mask is None else mask & keep
        else:
            mask = mask.to(q.dtype).masked_fill(~keep, float("-inf"))
    elif mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class SRUppAttention(nn.Module):
    """The attention sub-layer of an SRU++ layer: input `(L, N, H_in)` -> `U` `(L, N, K * C)`.

    Attributes:
        linear1: `H_in -> P` (queries, and the residual `z`).
        linear2: `P -> 2P` (keys then values).
        linear3: `P -> K * C`, output columns ordered (matrix, direction, unit) as parrnn's recurrence expects.
        alpha: `(1,)` learned scale of the attention output (starts at 0: the layer starts as a projection).
        layer_norm: `LayerNorm(P)` after the residual sum, or None.
    """

    def __init__(self, in_features: int, out_features: int, proj_features: int, *, num_heads: int = 1,
                 dropout: float = 0.0, attn_dropout: float = 0.0, layer_norm: bool = True) -> None:
        super().__init__()
        if proj_features % num_heads != 0:
            raise ValueError(f"num_heads must divide proj_size. Got proj_size={proj_features}, "
                             f"num_heads={num_heads}")
        self.num_heads = num_heads
        self.attn_dropout = attn_dropout
        self.linear1 = nn.Linear(in_features, proj_features, bias=False)
        self.linear2 = nn.Linear(proj_features, 2 * proj_features, bias=False)
        self.linear3 = nn.Linear(proj_features, out_features, bias=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(proj_features) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`sru`'s initialisation: Xavier-uniform weights, alpha = 0, `linear3` scaled by sqrt(1 - dropout)."""
        for linear in (self.linear1, self.linear2, self.linear3):
            nn.init.xavier_uniform_(linear.weight)
        with torch.no_grad():
            self.alpha.zero_()
            if self.dropout.p > 0:
                self.linear3.weight.mul_(math.sqrt(1 - self.dropout.p))
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def forward(self, x: Tensor, memory: Tensor | None, key_padding: Tensor | None,
                attn_mask: Tensor | str | None, kv_cache: list[Tensor] | None = None) -> Tensor:
        """`x` `(L, N, H_in)`, `memory` `(M, N, H_in)` or None, `key_padding` `(N, M + L)` bool or None.

        `kv_cache` (incremental decoding, instead of `memory`): `[keys, values]` of the `M` earlier positions,
        each `(N, heads, M, P / heads)`; this call's keys and values are appended (both entries replaced).
        """
        length, heads = x.size(0), self.num_heads
        z = self.linear1(x if memory is None else torch.cat([memory, x], 0))
        residual = z[z.size(0) - length:]
        key, value = (_split_heads(t, heads) for t in self.linear2(z).chunk(2, dim=-1))
        if kv_cache is not None:
            key, value = torch.cat([kv_cache[0], key], dim=2), torch.cat([kv_cache[1], value], dim=2)
            kv_cache[0], kv_cache[1] = key, value
        out = _attention(_split_heads(residual, heads), key, value, attn_mask, key_padding,
                         self.attn_dropout if self.training else 0.0)
        return self.finish(_merge_heads(out), residual)

    def finish(self, attended: Tensor, residual: Tensor) -> Tensor:
        """`alpha * attended + residual`, layer norm, dropout, `linear3`: `(L, N, P)` -> `(L, N, K * C)`."""
        out = attended * self.alpha + residual
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return self.linear3(self.dropout(out))


class SRUppProjectedLinear(nn.Module):
    """The projection of an SRU++ layer without attention: `U = dropout(LayerNorm(x W1)) W2`.

    Attributes:
        linear1: `H_in -> P`.
        linear2: `P -> K * C`, output columns ordered (matrix, direction, unit).
        layer_norm: `LayerNorm(P)` or None.
    """

    def __init__(self, in_features: int, out_features: int, proj_features: int, *, dropout: float = 0.0,
                 layer_norm: bool = True) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_features, proj_features, bias=False)
        self.linear2 = nn.Linear(proj_features, out_features, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(proj_features) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(linear.weight)
        if self.dropout.p > 0:
            with torch.no_grad():
                self.linear2.weight.mul_(math.sqrt(1 - self.dropout.p))
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def forward(self, x: Tensor, memory: Tensor | None = None, key_padding: Tensor | None = None,
                attn_mask: Tensor | str | None = None, kv_cache: list[Tensor] | None = None) -> Tensor:
        """`x` `(L, N, H_in)` -> `U` `(L, N, K * C)`; the other arguments (attention's) are ignored."""
        out = self.linear1(x)
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return self.linear2(self.dropout(out))


@dataclass
class SRUppState:
    """Decoding state of an [SRUpp][parrnn.SRUpp] (see [SRUpp.step][parrnn.SRUpp.step]).

    Attributes:
        c: `(num_layers, N, H)` cell state of every layer.
        keys: per layer, cached keys `(N, heads, S, P / heads)` (None for layers without attention).
        values: per layer, cached values, like `keys`.
        key_padding: `(N, S)` bool, True on cached memory positions to ignore, or None.
    """

    c: Tensor
    keys: list[Tensor | None] = field(default_factory=list)
    values: list[Tensor | None] = field(default_factory=list)
    key_padding: Tensor | None = None


class SRUppCell(nn.Module):
    r"""One SRU++ layer: an attention sub-layer (or a projection) computing `U`, then the SRU recurrence.

    Args:
        input_size: features of the input, `H_in`.
        hidden_size: features of the state per direction, `H`.
        proj_size: attention width `P` (queries, keys and values).
        attention: use attention (`SRUppAttention`); `False` uses a projection (`SRUppProjectedLinear`).
        num_heads: attention heads; must divide `proj_size`. Default: 1.
        dropout: dropout before the last projection `W3` and (`recurrent_dropout`) on the recurrent branch.
        attn_dropout: dropout on the attention weights. Default: 0.
        recurrent_dropout: variational dropout on `r_t (c_t - x'_t)`, one mask per sequence. Default: 0.
        bidirectional: a second recurrence direction backwards in time (attention then sees the whole
            sequence unless masked). Default: `False`.
        layer_norm: `LayerNorm` on the layer's input (or its output with `normalize_after`). Default: `False`.
        normalize_after: normalise the output instead of the input. Default: `False`.
        attn_layer_norm: `LayerNorm(P)` inside the attention/projection. Default: `True`.
        highway_bias: initial reset-gate bias. Default: -2.
        rescale: scale the highway input by `sqrt(1 + 2 exp(highway_bias))` (when `H_in == C`).
        batch_first: `(N, L, *)` inputs, outputs, memory and masks. Default: `False`.
        backend: recurrence backend, as in [SRU][parrnn.SRU].

    Inputs and outputs as [SRUpp][parrnn.SRUpp] with one layer (see `forward`): `state` `(N, C)` (or an
    `SRUppState`), `memory` one tensor `(M, N, H_in)` or None; returns `(output, c_n, memory_out)` with `memory_out`
    this layer's input. `init_state` and `step` decode one token at a time, as [SRUpp.step][parrnn.SRUpp.step].

    Attributes:
        transform: the `SRUppAttention` or `SRUppProjectedLinear` computing `U`.
        weight_c: `(2, C)` peephole weights `(v_f, v_r)`.
        bias: `(2, C)` gate biases `(b_f, b_r)`.
    """

    def __init__(self, input_size: int, hidden_size: int, proj_size: int, *, attention: bool = True,
                 num_heads: int = 1, dropout: float = 0.0, attn_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, bidirectional: bool = False, layer_norm: bool = False,
                 normalize_after: bool = False, attn_layer_norm: bool = True, highway_bias: float = -2.0,
                 rescale: bool = False, batch_first: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.proj_size = check.check_positive_int(proj_size, "proj_size")
        self.num_heads = check.check_positive_int(num_heads, "num_heads")
        if proj_size % num_heads != 0:
            raise ValueError(f"num_heads must divide proj_size. Got proj_size={proj_size}, num_heads={num_heads}")
        _check_backend(backend)
        self.dropout = check.check_probability(dropout, "dropout")
        self.attn_dropout = check.check_probability(attn_dropout, "attn_dropout")
        self.recurrent_dropout = check.check_probability(recurrent_dropout, "recurrent_dropout")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size
        self.normalize_after = bool(normalize_after)
        self.highway_bias = float(highway_bias)
        self.rescale = bool(rescale)
        self.batch_first = bool(batch_first)
        self.backend = backend
        self.has_attention = bool(attention)
        self.num_matrices = 3 if input_size == self.output_size else 4
        self.scale_x = math.sqrt(1.0 + 2.0 * math.exp(self.highway_bias)) if rescale else 1.0
        out_features = self.num_matrices * self.output_size
        if attention:
            self.transform: nn.Module = SRUppAttention(
                input_size, out_features, proj_size, num_heads=num_heads, dropout=dropout,
                attn_dropout=attn_dropout, layer_norm=attn_layer_norm)
        else:
            self.transform = SRUppProjectedLinear(input_size, out_features, proj_size, dropout=dropout,
                                                  layer_norm=attn_layer_norm)
        self.weight_c = nn.Parameter(torch.empty(2, self.output_size))
        self.bias = nn.Parameter(torch.empty(2, self.output_size))
        self.layer_norm = nn.LayerNorm(self.output_size if normalize_after else input_size) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`sru` 3.0's initialisation: peephole uniform in [-1, 1], `b_f = 0`, `b_r = highway_bias`."""
        self.transform.reset_parameters()
        with torch.no_grad():
            self.weight_c.uniform_(-1.0, 1.0)
            self.bias.zero_()
            self.bias[1].fill_(self.highway_bias)
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def forward(self, input: Tensor | PackedSequence, state: Tensor | SRUppState | None = None,
                lengths: Tensor | None = None, mask: Tensor | None = None, attn_mask: Tensor | str | None = None,
                memory: Tensor | None = None, memory_mask_pad: Tensor | None = None, *,
                kv_cache: list[Tensor] | None = None, c0: Tensor | None = None, mask_pad: Tensor | None = None,
                ) -> tuple[Tensor | PackedSequence, Tensor, Tensor]:
        """One SRU++ layer over a sequence (the layer protocol, docs/protocol.md; see `SRUpp.forward`).

        Args:
            input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a ``PackedSequence`` (output
                packed like it).
            state: ``(N, C)`` initial cell state, or the `SRUppState` of `init_state`/`step` (its cell state and,
                for an attention layer, its cached keys and values, which the queries then also see); zeros if
                ``None``.
            lengths: ``(N,)`` integers in ``[1, L]``.
            mask: ``(L, N)`` (``(N, L)`` with ``batch_first``), True (non-zero) on padded steps.
            attn_mask: as in `SRUpp.forward`.
            memory: as in `SRUpp.forward`, one tensor ``(M, N, H_in)``.
            memory_mask_pad: as in `SRUpp.forward`.
            kv_cache: (incremental decoding; attention layers only, instead of ``memory``) ``[keys, values]`` of
                the ``M`` earlier positions, each ``(N, heads, M, P / heads)``, extended in place by this call's;
                ``memory_mask_pad`` ``(M, N)`` then marks cached positions to ignore.
            c0: deprecated spelling of ``state``.
            mask_pad: deprecated spelling of ``mask``.

        Returns:
            ``(output, c_n, memory_out)``: ``output`` ``(L, N, C)``, ``c_n`` ``(N, C)``, ``memory_out`` this
            layer's input (the next segment's memory) -- SRU++'s documented exception to ``(output, state)``.
        """
        state, mask = check.state_and_mask(state, mask, c0, mask_pad)
        if isinstance(input, PackedSequence):
            return _packing.run_packed(
                lambda x, n: self.forward(x, state, n, None, attn_mask, memory, memory_mask_pad, kv_cache=kv_cache),
                input, self.batch_first, ("lengths", lengths), ("mask", mask))
        if isinstance(state, SRUppState):
            if kv_cache is not None or memory is not None or memory_mask_pad is not None:
                raise ValueError("a decoding state (SRUppState) carries the cached keys and values: do not also "
                                 "pass memory, memory_mask_pad or kv_cache")
            check.check_sequence_input(input, self.input_size, self.batch_first)
            _check_decoding_state(state, [self], input.size(0 if self.batch_first else 1), input)
            cache, memory_mask_pad = _cache_of(state, 0, self.batch_first)
            return self.forward(input, state.c[0], lengths, mask, attn_mask, None, memory_mask_pad, kv_cache=cache)
        c0 = state
        check.check_sequence_input(input, self.input_size, self.batch_first)
        x = input.transpose(0, 1) if self.batch_first else input
        check.check_like_parameters(x, self.bias)
        length, batch = x.size(0), x.size(1)
        mask = check.padding_mask(x, lengths, mask, self.batch_first)
        if c0 is not None:
            check.check_state(c0, (batch, self.output_size), x, "state")
        mem = None if memory is None else _check_memory(memory, batch, self.input_size, x, self.batch_first,
                                                        "memory")
        if kv_cache is not None:
            mem_len = self._check_kv_cache(kv_cache, batch, x, mem)
        else:
            mem_len = 0 if mem is None else mem.size(0)
        mem_mask = _memory_mask(memory_mask_pad, mem_len, batch, x.device, self.batch_first)
        key_padding = _key_padding(mask, length, batch, mem_len, mem_mask)
        _check_attn_mask(attn_mask, length, mem_len)
        # padded steps and padded memory reach no value and no gradient, whatever they hold
        x = check.zero_padding(x, mask)
        mem = None if mem is None else check.zero_padding(mem, mem_mask)
        residual = x
        if self.layer_norm is not None and not self.normalize_after:
            x = self.layer_norm(x)
        u = self.transform(x, mem, key_padding, attn_mask, kv_cache)
        h, c_n = self.recur(u, residual, c0, mask)
        return (h.transpose(0, 1) if self.batch_first else h), c_n, input

    def _check_kv_cache(self, kv_cache: Any, batch: int, like: Tensor, memory: Tensor | None) -> int:
        """Validate `kv_cache` (see `forward`); returns the number of cached positions."""
        if not self.has_attention:
            raise ValueError("kv_cache was given to a layer without attention (it has no keys or values)")
        if memory is not None:
            raise ValueError("give memory or kv_cache, not both")
        if not isinstance(kv_cache, list) or len(kv_cache) != 2:
            raise TypeError(f"kv_cache must be a list [keys, values], got {type(kv_cache).__name__}")
        dim = self.proj_size // self.num_heads
        length = _check_cached(kv_cache[0], "kv_cache[0] (keys)", batch, self.num_heads, dim, None, like)
        return _check_cached(kv_cache[1], "kv_cache[1] (values)", batch, self.num_heads, dim, length, like)

    def init_state(self, batch_size: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None,
                   c0: Tensor | None = None, memory: Tensor | None = None, memory_mask_pad: Tensor | None = None,
                   ) -> SRUppState:
        """The decoding state of this layer before the first token (`SRUppState` with ``c`` ``(1, N, C)``): zero (or
        ``c0`` ``(N, C)``) cell state, and the keys and values of ``memory`` ``(M, N, H_in)`` cached. ``device``
        and ``dtype`` default to the parameters'. Unidirectional layers only."""
        return _init_decoding([self], batch_size, None if c0 is None else c0.unsqueeze(0),
                              None if memory is None else [memory], memory_mask_pad,
                              _like(self.bias, device, dtype), self.batch_first)

    def step(self, input: Tensor, state: SRUppState | None = None) -> tuple[Tensor, SRUppState]:
        """Decode one token: ``input`` ``(N, H_in)`` and the state of `init_state`/`step` (a fresh one if
        ``None``) -> ``(output (N, C), new state)``, equal to the causal `forward` token by token."""
        return _decode_step([self], input, state, self.input_size,
                            lambda n: self.init_state(n, device=input.device, dtype=input.dtype))

    def recur(self, u: Tensor, residual: Tensor, c0: Tensor | None, mask_pad: Tensor | None,
              ) -> tuple[Tensor, Tensor]:
        """The SRU recurrence on `U` `(L, N, K * C)` and the highway input `residual` `(L, N, H_in)`."""
        length, batch, _ = u.shape
        u = u.view(length, batch, self.num_matrices, self.output_size)
        drop_mask = None
        if self.training and self.recurrent_dropout > 0:
            drop_mask = u.new_empty(batch, self.output_size).bernoulli_(1 - self.recurrent_dropout).div_(
                1 - self.recurrent_dropout)
        if c0 is None:
            c0 = u.new_zeros(batch, self.output_size, dtype=self.bias.dtype)
        skip = check.cast_like(residual, u) if self.num_matrices == 3 else None
        h, c_n = dispatch.sru_recurrence(  # weight_c, bias, c0: float32 under autocast (check.keeps_float32)
            u, skip, check.recurrence_operand(self.weight_c, u), check.recurrence_operand(self.bias, u),
            check.recurrence_operand(c0, u), mask_pad, drop_mask,
            bidirectional=self.bidirectional, scale_x=self.scale_x, backend=self.backend)
        if self.layer_norm is not None and self.normalize_after:
            h = self.layer_norm(h)
        return h, c_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, {self.proj_size}"
        if not self.has_attention:
            s += ", attention=False"
        for name, default in (("num_heads", 1), ("bidirectional", False), ("dropout", 0.0),
                              ("attn_dropout", 0.0), ("recurrent_dropout", 0.0), ("rescale", False),
                              ("batch_first", False), ("backend", "auto")):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        if self.layer_norm is not None:
            s += ", layer_norm=True" + (", normalize_after=True" if self.normalize_after else "")
        return s


def _like(param: Tensor, device: torch.device | None, dtype: torch.dtype | None) -> Tensor:
    """An empty tensor with ``device`` and ``dtype`` (the parameter's where ``None``), to build states like."""
    return torch.empty(0, **check.state_options(param, device, dtype))


def _init_decoding(layers: Any, batch_size: int, c0: Tensor | None, memory: list[Tensor] | None,
                   memory_mask_pad: Tensor | None, like: Tensor, batch_first: bool) -> SRUppState:
    """The `SRUppState` of ``layers`` (SRU++ layers, each applied to the previous one's output) before the first
    token: ``c0`` ``(len(layers), N, C)`` or zeros, and ``memory``'s keys and values cached."""
    first = layers[0]
    if first.bidirectional:
        raise ValueError("incremental decoding needs a unidirectional SRUpp (bidirectional=False)")
    check.check_positive_int(batch_size, "batch_size")
    if c0 is None:
        c0 = torch.zeros(len(layers), batch_size, first.output_size, dtype=like.dtype, device=like.device)
    check.check_state(c0, (len(layers), batch_size, first.output_size), like, "c0")
    mems = _check_memories(memory, layers, batch_size, like, batch_first)
    mem_len = 0 if mems[0] is None else mems[0].size(0)
    mem_mask = _memory_mask(memory_mask_pad, mem_len, batch_size, like.device, batch_first)
    state = SRUppState(c=c0, key_padding=None if mem_mask is None else mem_mask.t())
    for i, layer in enumerate(layers):
        if not layer.has_attention:
            state.keys.append(None)
            state.values.append(None)
            continue
        att = layer.transform
        heads, dim = att.num_heads, layer.proj_size // att.num_heads
        memory_i = mems[i]
        if memory_i is None:
            empty = like.new_zeros(batch_size, heads, 0, dim)
            state.keys.append(empty)
            state.values.append(empty)
        else:
            memory_i = check.zero_padding(memory_i, mem_mask)
            key, value = att.linear2(att.linear1(memory_i)).chunk(2, dim=-1)
            state.keys.append(_split_heads(key, heads))
            state.values.append(_split_heads(value, heads))
    return state


def _cache_of(state: SRUppState, index: int, batch_first: bool) -> tuple[list[Tensor] | None, Tensor | None]:
    """Layer ``index``'s ``kv_cache`` (a new list: the state is not changed) and the cache's padding mask in a
    layer's layout (``(S, N)``, ``(N, S)`` with ``batch_first``), or ``(None, None)`` without attention."""
    keys = state.keys[index]
    if keys is None:
        return None, None
    values = state.values[index]
    assert values is not None
    padding = state.key_padding
    return [keys, values], (None if padding is None else padding if batch_first else padding.t())


def _decode_step(layers: Any, input: Tensor, state: SRUppState | None, input_size: int,
                 fresh: Any) -> tuple[Tensor, SRUppState]:
    """One token through ``layers`` (see `SRUpp.step`); ``fresh(N)`` builds the state when ``state`` is None."""
    check.check_step_input(input, input_size)
    check.check_like_parameters(input, layers[0].bias)
    if state is None:
        state = fresh(input.size(0))
    _check_decoding_state(state, layers, input.size(0), input)
    x = input
    new = SRUppState(c=state.c, key_padding=None if state.key_padding is None else torch.cat(
        [state.key_padding, state.key_padding.new_zeros(input.size(0), 1)], dim=1))
    finals = []
    for i, layer in enumerate(layers):
        cache, cache_mask = _cache_of(state, i, layer.batch_first)
        dim = 1 if layer.batch_first else 0
        # a module call (the layer's hooks run); the layer appends this token's key and value to `cache`
        out, c_n, _ = layer(x.unsqueeze(dim), state.c[i], memory_mask_pad=cache_mask, kv_cache=cache)
        x = out.squeeze(dim)
        new.keys.append(None if cache is None else cache[0])
        new.values.append(None if cache is None else cache[1])
        finals.append(c_n)
    new.c = torch.stack(finals)
    return x, new


def _check_cached(t: Any, name: str, batch: int, heads: int, dim: int, length: int | None, like: Tensor) -> int:
    """Cached keys or values must be `(batch, heads, S, dim)` on `like`'s device (and `S == length` when given);
    returns `S`."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    cached = t.size(2) if t.dim() == 4 else -1
    if tuple(t.shape) != (batch, heads, cached, dim) or (length is not None and cached != length):
        s = "S" if length is None else str(length)
        raise ValueError(f"{name} must have shape (N, heads, S, proj_size / heads) = ({batch}, {heads}, {s}, {dim})"
                         f", got {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name} must be on the input's device. Expected {like.device}, got {t.device}")
    return cached


def _check_decoding_state(state: Any, layers: Any, batch: int, like: Tensor) -> None:
    """An `SRUppState` for `batch` sequences: `c` `(num_layers, N, C)`; `keys` and `values` one entry per layer
    (None for layers without attention, else `(N, heads, S, P / heads)` with one `S`); `key_padding` `(N, S)`
    bool or None."""
    if not isinstance(state, SRUppState):
        raise TypeError(f"state must be the SRUppState from init_state or step, got {type(state).__name__}")
    first = layers[0]
    check.check_state(state.c, (len(layers), batch, first.output_size), like, "state.c")
    for name in ("keys", "values"):
        entries = getattr(state, name)
        if not isinstance(entries, list) or len(entries) != len(layers):
            got = len(entries) if isinstance(entries, list) else type(entries).__name__
            raise ValueError(f"state.{name} must be a list with one entry per layer ({len(layers)}), got {got} "
                             "(build the state with init_state)")
    length = None
    for i, layer in enumerate(layers):
        for name in ("keys", "values"):
            t = getattr(state, name)[i]
            if not layer.has_attention:
                if t is not None:
                    raise ValueError(f"state.{name}[{i}] must be None (layer {i} has no attention), got a "
                                     f"{type(t).__name__}")
                continue
            length = _check_cached(t, f"state.{name}[{i}]", batch, layer.num_heads,
                                   layer.proj_size // layer.num_heads, length, like)
    padding = state.key_padding
    if padding is not None and length is not None:  # (without attention layers nothing reads it)
        expected = (batch, length)
        if not isinstance(padding, Tensor) or padding.dtype != torch.bool or tuple(padding.shape) != expected:
            got = (f"{padding.dtype} {tuple(padding.shape)}" if isinstance(padding, Tensor)
                   else type(padding).__name__)
            raise ValueError(f"state.key_padding must be None or a bool tensor (N, S) = {expected}, got {got}")


def _check_backend(name: str) -> None:
    """A backend word (`parrnn.ops.sru.dispatch.check_backend`) other than ``"scan"``."""
    dispatch.check_backend(name)
    if name == "scan":
        raise ValueError("backend='scan' needs the linear SRU (v1); SRU++ uses the peephole (v2) recurrence")


def _check_memory(memory: Any, batch: int, width: int, like: Tensor, batch_first: bool, name: str) -> Tensor:
    """Validate one layer's memory (`(M, N, width)`, `(N, M, width)` with batch_first); return it time-major."""
    if not isinstance(memory, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(memory).__name__}")
    layout = "(N, M, width)" if batch_first else "(M, N, width)"
    mem_batch = memory.size(0 if batch_first else 1) if memory.dim() == 3 else -1
    if memory.dim() != 3 or mem_batch != batch or memory.size(-1) != width:
        raise ValueError(f"{name} must be 3-D {layout} with N = {batch} and width = {width} (the layer's input "
                         f"size), got shape {tuple(memory.shape)}")
    if memory.dtype != like.dtype:
        raise TypeError(f"{name} dtype must match input dtype. Expected {like.dtype}, got {memory.dtype}")
    if memory.device != like.device:
        raise ValueError(f"{name} must be on the input's device. Expected {like.device}, got {memory.device}")
    return memory.transpose(0, 1) if batch_first else memory


def _check_memories(memory: Any, layers: Any, batch: int, like: Tensor, batch_first: bool,
                    ) -> list[Tensor | None]:
    """Validate the per-layer memory list; return it time-major (a list of None without memory)."""
    if memory is None:
        return [None] * len(layers)
    if not isinstance(memory, (list, tuple)):
        raise TypeError(f"memory must be a list of tensors (one per layer) or None, got {type(memory).__name__}")
    if len(memory) != len(layers):
        raise ValueError(f"memory must hold one tensor per layer. Expected {len(layers)}, got {len(memory)}")
    mems = [_check_memory(m, batch, layer.input_size, like, batch_first, f"memory[{i}]")
            for i, (m, layer) in enumerate(zip(memory, layers, strict=True))]
    if any(m.size(0) != mems[0].size(0) for m in mems):
        raise ValueError(f"every memory[i] must have the same length M; got {[m.size(0) for m in mems]}")
    return mems  # type: ignore[return-value]


def _memory_mask(memory_mask_pad: Any, memory_length: int, batch: int, device: torch.device,
                 batch_first: bool) -> Tensor | None:
    """Validate `memory_mask_pad` (`(M, N)`, `(N, M)` with batch_first, non-zero on padded memory steps); return
    it as an `(M, N)` bool tensor, or None."""
    if memory_mask_pad is None:
        return None
    if memory_length == 0:
        raise ValueError("memory_mask_pad was given without memory")
    if not isinstance(memory_mask_pad, Tensor):
        raise TypeError(f"memory_mask_pad must be a torch.Tensor or None, got {type(memory_mask_pad).__name__}")
    return check.check_mask_pad(memory_mask_pad, memory_length, batch, device, batch_first, name="memory_mask_pad",
                                steps="M")


def _key_padding(mask: Tensor | None, length: int, batch: int, memory_length: int,
                 memory_mask: Tensor | None) -> Tensor | None:
    """`(N, M + L)` bool, True on keys to ignore (padded memory or input steps), or None; `mask` `(L, N)` and
    `memory_mask` `(M, N)` bool or None."""
    if mask is None and memory_mask is None:
        return None
    own = mask.t() if mask is not None else torch.zeros(batch, length, dtype=torch.bool,
                                                        device=memory_mask.device)  # type: ignore[union-attr]
    if memory_length == 0:
        return own
    mem = memory_mask.t() if memory_mask is not None else own.new_zeros(batch, memory_length)
    return torch.cat([mem, own], dim=1)


def _check_attn_mask(attn_mask: Tensor | str | None, length: int, memory_length: int) -> None:
    if attn_mask is None:
        return
    if isinstance(attn_mask, str):
        if attn_mask != CAUSAL:
            raise ValueError(f"attn_mask must be a tensor, None or 'causal', got {attn_mask!r}")
        return
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor, 'causal' or None, got {type(attn_mask).__name__}")
    expected = (length, memory_length + length)
    if tuple(attn_mask.shape) != expected:
        raise ValueError(f"attn_mask must have shape (L, M + L) = {expected} (additive, M = memory length), "
                         f"got {tuple(attn_mask.shape)}")
    if not (attn_mask.dtype.is_floating_point or attn_mask.dtype == torch.bool):
        raise TypeError(f"attn_mask must be an additive float mask (or bool, True = may attend), "
                        f"got {attn_mask.dtype}")


class SRUpp(nn.Module):
    r"""A stack of SRU++ layers (Lei, 2021), with the semantics and parameters of `sru` 3.0.0.dev6's `SRUpp`.

    Layer `i` (from 0) has attention when `(i + 1) % attention_every_n_layers == 0`, or, with
    `attention_last_n_layers = n`, when it is one of the last `n` layers; the others use a low-rank projection
    (see `parrnn.srupp` for the equations of one layer). The recurrence runs on parrnn's backends
    (`backend`), attention through `torch.nn.functional.scaled_dot_product_attention`.

    Args:
        input_size: features of the input, `H_in`.
        hidden_size: features of the state per direction, `H`.
        proj_size: attention width `P`.
        num_layers: stacked layers. Default: 2 in this release, with a FutureWarning when not passed (1, as
            `torch.nn.LSTM`, in the next).
        dropout: dropout inside each layer (before `W3`) and on the recurrent branch of every layer but the
            last, as in `sru`. Default: 0.
        attn_dropout: dropout on attention weights. Default: 0.
        num_heads: attention heads; must divide `proj_size`. Default: 1.
        bidirectional: bidirectional recurrences. Default: `False`.
        layer_norm: `LayerNorm` per layer, on its input (pre-norm) or output (`normalize_after`).
        normalize_after: see `layer_norm`. Default: `False`.
        attn_layer_norm: `LayerNorm(P)` inside each attention/projection. Default: `True`.
        highway_bias: initial reset-gate bias. Default: -2.
        attention_every_n_layers: attention in every n-th layer. Default: 1 (every layer).
        attention_last_n_layers: attention in the last n layers only (exclusive with the previous option).
        rescale: scale the highway input by `sqrt(1 + 2 exp(highway_bias))`. Default: `False`.
        batch_first: inputs, outputs, memory and masks are batch-major. Default: `False`.
        backend: recurrence backend, as in [SRU][parrnn.SRU]: `"auto"`, `"sequential"` or `"reference"` (the
            old `"cpu"`/`"cuda"` are deprecated aliases of `"sequential"`).

    Inputs: input, state, lengths, mask, attn_mask, memory, memory_mask_pad (the layer protocol,
    docs/protocol.md; see `forward`)
        * **input**: `(L, N, H_in)` (`(N, L, H_in)` with `batch_first`) or a `PackedSequence`.
        * **state**: `(num_layers, N, dirs * H)` initial cell states, or the `SRUppState` of `init_state`/`step`;
          zeros if None (old keyword `c0=`).
        * **lengths** / **mask**: padding, as in [SRU][parrnn.SRU] (`mask` `(L, N)`, non-zero on padding; old
          keyword `mask_pad=`). Padded steps keep `c`, output 0 (before a `normalize_after` layer norm) and are
          never attended.
        * **attn_mask**: additive float `(L, M + L)` mask (0 = may attend, `-inf` = may not; a bool mask means
          True = may attend), or `"causal"` (SDPA's causal kernel when there is no memory). None: every query
          sees every key.
        * **memory**: a list with one tensor per layer, `(M, N, H_in of that layer)`, the previous segment's
          layer inputs (pass the previous call's `memory_out`), or None.
        * **memory_mask_pad**: `(M, N)` non-zero on padded memory steps, or None.

    Outputs: output, c_n, memory_out (SRU++'s documented exception to `(output, state)`: a third value)
        * **output**: `(L, N, dirs * H)` (`(N, L, dirs * H)` with `batch_first`; a `PackedSequence` for one).
        * **c_n**: `(num_layers, N, dirs * H)` last cell state of every layer.
        * **memory_out**: list of every layer's input `(L, N, H_in of that layer)`: the next segment's memory.

    `init_state(batch_size)` and `step(input (N, H_in), state) -> (output (N, dirs * H), state)` decode one token
    at a time (an `SRUppState`: cell states and cached keys and values).

    Examples:
        >>> model = SRUpp(16, 32, 8, num_layers=2, num_heads=2)
        >>> x = torch.randn(10, 4, 16)
        >>> out, c_n, memory = model(x, attn_mask="causal")
        >>> out, c_n, memory = model(x, c_n, attn_mask="causal", memory=memory)  # next segment
        >>> out.shape, c_n.shape, [m.shape[-1] for m in memory]
        (torch.Size([10, 4, 32]), torch.Size([2, 4, 32]), [16, 32])
    """

    def __init__(self, input_size: int, hidden_size: int, proj_size: int, num_layers: int | None = None, *,
                 dropout: float = 0.0, attn_dropout: float = 0.0, num_heads: int = 1,
                 bidirectional: bool = False, layer_norm: bool = False, normalize_after: bool = False,
                 attn_layer_norm: bool = True, highway_bias: float = -2.0, attention_every_n_layers: int = 1,
                 attention_last_n_layers: int = -1, rescale: bool = False, batch_first: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.proj_size = check.check_positive_int(proj_size, "proj_size")
        self.num_layers = num_layers = check.default_num_layers(num_layers, "SRUpp")
        self.num_heads = check.check_positive_int(num_heads, "num_heads")
        check.check_positive_int(attention_every_n_layers, "attention_every_n_layers")
        check.check_positive_int(attention_last_n_layers, "attention_last_n_layers", minimum=-1)
        if attention_every_n_layers != 1 and attention_last_n_layers != -1:
            raise ValueError("set attention_every_n_layers or attention_last_n_layers, not both "
                             f"(got {attention_every_n_layers} and {attention_last_n_layers})")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size
        self.batch_first = bool(batch_first)
        self.attention_every_n_layers = attention_every_n_layers
        self.attention_last_n_layers = attention_last_n_layers

        def has_attention(i: int) -> bool:
            if attention_last_n_layers != -1:
                return num_layers - i <= attention_last_n_layers
            return (i + 1) % attention_every_n_layers == 0

        self.layers = nn.ModuleList(
            SRUppCell(
                input_size if i == 0 else self.output_size, hidden_size, proj_size, attention=has_attention(i),
                num_heads=num_heads, dropout=dropout, attn_dropout=attn_dropout,
                recurrent_dropout=dropout if i + 1 < num_layers else 0.0, bidirectional=bidirectional,
                layer_norm=layer_norm, normalize_after=normalize_after, attn_layer_norm=attn_layer_norm,
                highway_bias=highway_bias, rescale=rescale, backend=backend)
            for i in range(num_layers))

    @property
    def backend(self) -> str:
        return self.layers[0].backend

    @backend.setter
    def backend(self, name: str) -> None:
        _check_backend(name)
        for layer in self.layers:
            layer.backend = name

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, input: Tensor | PackedSequence, state: Tensor | SRUppState | None = None,
                lengths: Tensor | None = None, mask: Tensor | None = None, attn_mask: Tensor | str | None = None,
                memory: list[Tensor] | None = None, memory_mask_pad: Tensor | None = None, *,
                c0: Tensor | None = None, mask_pad: Tensor | None = None,
                ) -> tuple[Tensor | PackedSequence, Tensor, list[Tensor]]:
        """Run the stack over a sequence (the layer protocol, docs/protocol.md, with SRU++'s third output).

        Args:
            input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or a ``PackedSequence`` (then the
                output is a ``PackedSequence`` with the input's ``sorted_indices`` and row order, as
                `torch.nn.LSTM`'s).
            state: ``(num_layers, N, dirs * H)`` initial cell states (layer ``i`` starts from ``state[i]``), or
                the `SRUppState` of `init_state`/`step` (its cell states, and its cached keys and values, which the
                attention layers then also see: prefill or continue decoding ``L`` tokens at once); zeros if
                ``None``.
            lengths: ``(N,)`` integers in ``[1, L]`` (tensor or list); steps ``t >= lengths[n]`` are padding.
            mask: ``(L, N)`` (``(N, L)`` with ``batch_first``), True (non-zero) on padded steps, anywhere.
                Padded steps keep ``c``, output 0 (before a ``normalize_after`` layer norm) and are never attended.
            attn_mask: additive float ``(L, M + L)`` mask (0 = may attend, ``-inf`` = may not; a bool mask means
                True = may attend), or ``"causal"``; None: every query sees every key.
            memory: one tensor per layer, ``(M, N, H_in of that layer)``, the previous segment's layer inputs
                (the previous call's ``memory_out``), or None.
            memory_mask_pad: ``(M, N)``, non-zero on padded memory steps, or None.
            c0: deprecated spelling of ``state`` (a DeprecationWarning).
            mask_pad: deprecated spelling of ``mask`` (a DeprecationWarning).

        Returns:
            ``(output, c_n, memory_out)``: ``output`` ``(L, N, dirs * H)`` (batch first with ``batch_first``),
            ``c_n`` ``(num_layers, N, dirs * H)`` every layer's last cell state, ``memory_out`` every layer's input
            (the next segment's memory) -- SRU++'s documented exception to ``(output, state)``.
        """
        state, mask = check.state_and_mask(state, mask, c0, mask_pad)
        if isinstance(input, PackedSequence):
            return _packing.run_packed(lambda x, n: self.forward(x, state, n, None, attn_mask, memory,
                                                                 memory_mask_pad),
                                       input, self.batch_first, ("lengths", lengths), ("mask", mask))
        check.check_sequence_input(input, self.input_size, self.batch_first)
        x = input.transpose(0, 1) if self.batch_first else input
        check.check_like_parameters(x, self.layers[0].bias)
        pad = check.padding_mask(x, lengths, mask, self.batch_first)
        caches: list[list[Tensor] | None] = [None] * self.num_layers
        if isinstance(state, SRUppState):
            if memory is not None or memory_mask_pad is not None:
                raise ValueError("a decoding state (SRUppState) carries the cached keys and values: do not also "
                                 "pass memory or memory_mask_pad")
            _check_decoding_state(state, self.layers, x.size(1), x)
            caches = [_cache_of(state, i, False)[0] for i in range(self.num_layers)]
            mem_mask = None if state.key_padding is None else state.key_padding.t()
            mem_len = max((c[0].size(2) for c in caches if c is not None), default=0)
            mems: list[Tensor | None] = [None] * self.num_layers
            c0 = state.c
        else:
            c0 = state
            if c0 is not None:
                check.check_state(c0, (self.num_layers, x.size(1), self.output_size), x, "state")
            mems = _check_memories(memory, self.layers, x.size(1), x, self.batch_first)
            mem_len = 0 if mems[0] is None else mems[0].size(0)
            mem_mask = _memory_mask(memory_mask_pad, mem_len, x.size(1), x.device, self.batch_first)
        _check_attn_mask(attn_mask, x.size(0), mem_len)
        inputs, finals = [], []
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            # a module call (the layer's hooks run), on time-major tensors
            x, c_n, _ = layer(x, None if c0 is None else c0[i], None, pad, attn_mask, mems[i],
                              mem_mask if mems[i] is not None or caches[i] is not None else None,
                              kv_cache=caches[i])
            finals.append(c_n)
        if self.batch_first:
            x = x.transpose(0, 1)
            inputs = [t.transpose(0, 1) for t in inputs]
        return x, torch.stack(finals), inputs

    # ---- incremental decoding -------------------------------------------------------------------------------

    def init_state(self, batch_size: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None,
                   c0: Tensor | None = None, memory: list[Tensor] | None = None,
                   memory_mask_pad: Tensor | None = None, like: Tensor | None = None) -> SRUppState:
        """A decoding state before the first token: zero (or ``c0`` ``(num_layers, N, C)``) cell states, and the
        keys and values of ``memory`` (layout as in `forward`) cached. ``device`` and ``dtype`` (or ``like``, a
        tensor to take them from) default to the parameters'. Causal, unidirectional models only."""
        if like is not None:
            device, dtype = like.device, like.dtype
        return _init_decoding(self.layers, batch_size, c0, memory, memory_mask_pad,
                              _like(self.layers[0].bias, device, dtype), self.batch_first)

    def step(self, input: Tensor, state: SRUppState | None = None) -> tuple[Tensor, SRUppState]:
        """Decode one token: ``input`` ``(N, H_in)`` and the state of `init_state`/`step` (a fresh
        ``init_state(N)`` if ``None``) -> ``(output (N, C), new state)``.

        Equals the causal forward (``attn_mask="causal"``, with the memory given to `init_state`) one position
        at a time: each attention layer appends this token's key and value to its cache and attends to all
        cached positions; the recurrence advances one step from the cached cell state.
        """
        return _decode_step(self.layers, input, state, self.input_size,
                            lambda n: self.init_state(n, like=input))

    # ---- conversion from the sru package --------------------------------------------------------------------

    @classmethod
    def from_sru(cls, module: nn.Module, *, backend: str = "auto", batch_first: bool = False) -> SRUpp:
        """Build an `SRUpp` with the configuration and weights of an `sru.SRUpp` (`sru` 3.0.0.dev6) module (see
        [parrnn.compat.convert.srupp_from_sru][])."""
        from parrnn.compat import convert

        return convert.srupp_from_sru(cls, module, backend=backend, batch_first=batch_first)

    def load_sru_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load an `sru.SRUpp` (3.0.0.dev6) `state_dict` (see [parrnn.compat.convert.load_srupp_state_dict][])."""
        from parrnn.compat import convert

        convert.load_srupp_state_dict(self, state_dict)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, {self.proj_size}, num_layers={self.num_layers}, "
                f"num_heads={self.num_heads}")

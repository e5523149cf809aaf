"""Sliced recurrent networks (Yu & Liu, COLING 2018, "Sliced Recurrent Neural Networks").

A sequence of length ``T`` is cut into ``slices ** levels`` *minimal slices*. One shared base RNN runs over
all of them at once (every slice of every sequence is one batch row), so its sequential work is only ``T /
slices ** levels`` steps. The last state of each slice becomes one step of the sequence seen by the next
level; that level cuts its sequence into slices of ``slices`` steps and runs its own RNN over all of them at
once, and so on up to the top level, which sees ``slices`` steps per sequence and gives the final
representation.

Unlike the reference Keras code, [SlicedRNN][parrnn.SlicedRNN] accepts any ``T`` (padded internally), per-sequence
``lengths`` (padded steps never change a result), any base cell (GRU, LSTM, [parrnn.SRU][], parrnn's
QRNN/minGRU/minLSTM/HGRN, or a user module), bidirectional cells, and ``levels=0`` (exactly the base RNN over
the whole sequence).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from parrnn import _packing
from parrnn import _validation as check
from parrnn.cells import cell_names, get_cell
from parrnn.ops import registry
from parrnn.ops.gru_rows.fused_cpu import fast_gru_applies, gru_rows
from parrnn.sru import SRU

CellFactory = Callable[..., nn.Module]
#: parrnn's cells with nn.LSTM's contract and a ``lengths`` argument, by name
#: the cells SlicedRNN builds itself; every cell of the registry (`parrnn.cells`) is accepted too
BUILTIN_CELLS = ("gru", "lstm", "sru")


def _cells() -> tuple[str, ...]:
    return (*BUILTIN_CELLS, *cell_names())


def __getattr__(name: str) -> Any:
    if name == "CELLS":  # every accepted name, read from the registry when asked
        return _cells()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SlicedRNN(nn.Module):
    r"""Sliced RNN: a hierarchy of RNNs over slices of the sequence, every level parallel over its slices.

    With ``n = slices`` and ``k = levels``, an input of length ``T`` is zero-padded to ``T_p = n^k * m`` with
    ``m = ceil(T / n^k)`` (the minimal slice length). Then

    * **level 0**: the base RNN ``rnns[0]`` runs over the ``n^k`` minimal slices of length ``m`` of every
      sequence at once (``n^k * N`` batch rows, state reset to zero at every slice start). Each slice's
      *summary* is its last output: the output at its last valid step; for a bidirectional cell the forward
      direction's output at the slice's last valid step concatenated with the backward direction's output at
      the slice's first step (that is, both directions' final states).
    * **level j = 1..k**: the summaries of level ``j - 1``, in order, form a sequence of ``n^(k-j+1)`` steps
      per sequence; ``rnns[j]`` runs over its slices of ``n`` steps at once and summarises each slice the same
      way.
    * the **top level** ``k`` has one slice per sequence: its outputs are ``output`` and its summary is ``h``.

    ``levels=0`` is the base RNN over the whole sequence (``output`` its outputs, ``h`` its final states).

    **Lengths.** With ``lengths`` a sequence's steps ``t >= lengths[i]`` are padding and never change its
    result: their values are ignored (NaN included, in outputs and gradients), and the result does not depend
    on the other sequences of the batch. A slice that is partly padding is summarised at its last valid step
    (the backward direction starts there). A slice that is entirely padding is *dropped*: it is not a step of
    the next level's sequence (the state passes through it unchanged). So sequence ``i`` has
    ``c_0 = lengths[i]`` valid steps at level 0 and ``c_j = ceil(c_(j-1) / s_(j-1))`` valid steps at level
    ``j`` (``s_0 = m``, ``s_j = n``), always at least 1; each level runs its RNN over exactly the valid steps
    of every slice. In particular a sequence of length ``<= m`` gets at level 0 exactly the base RNN over its
    valid steps. Outputs at padded positions are 0. Without ``lengths`` every sequence has length ``T`` (the
    internal padding to ``T_p`` is handled the same way).

    The slice length ``m`` follows from the input's ``T`` (or ``total_length``): a sequence padded to a
    different ``T`` is cut differently and gets a different result. Pass one fixed ``total_length`` (as the
    paper pads to ``T = 512``) when results must agree across batches.

    **Speed.** Padded steps are never computed on: each level gathers only its non-empty slices into batch
    rows. A `torch.nn.GRU` cell on CPU (float32/float64, no active inter-layer dropout) runs
    `parrnn.ops.gru_rows.fused_cpu.gru_rows`, a GRU for many short rows with fused C++ steps and a hand-written
    backward (the same function as ``nn.GRU``, up to rounding).

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: features of every level's state per direction, ``H``.
        slices: ``n``, slices per level (>= 2). Default: 8.
        levels: ``k``, levels above the base (>= 0). Default: 2.
        cell: the recurrent module of every level: ``"gru"`` (`torch.nn.GRU`), ``"lstm"``
            (`torch.nn.LSTM`), ``"sru"`` ([parrnn.SRU][]), the name of any registered cell (`parrnn.cells`:
            ``"qrnn"``, ``"mingru"``, ``"minlstm"``, ``"hgrn"``, ``"rglru"``, built with ``nn.GRU``'s shapes,
            RG-LRU with ``output_size=hidden_size``), or a callable
            ``cell(input_size, hidden_size, **cell_kwargs) -> nn.Module`` whose module follows
            `torch.nn.GRU`'s call contract: time-major input ``(L, N, H_in)`` -> ``(output, h_n)`` with
            output ``(L, N, dirs * H)`` (forward direction first). A user module must be causal when
            ``bidirectional=False`` (output ``t`` depends only on inputs ``<= t``); with
            ``bidirectional=True`` the factory must build a bidirectional module, and ``bidirectional`` only
            tells SlicedRNN how to read its output. Default: ``"gru"``.
        num_layers: stacked layers inside each level's built-in cell (a user factory builds its own stack).
            Default: 1.
        bidirectional: bidirectional cells at every level. Default: ``False``.
        batch_first: ``input`` and ``output`` are ``(N, L, H)``. Default: ``False``.
        **cell_kwargs: passed to every level's cell constructor (e.g. ``dropout`` for GRU/LSTM, ``proj_size``
            for LSTM, ``layer_norm`` or ``backend`` for SRU).

    Inputs: input, state, lengths, mask (the layer protocol, docs/protocol.md, with its documented exceptions; see
    `forward`)
        * **input**: ``(T, N, H_in)`` (``(N, T, H_in)`` with ``batch_first``), any ``T >= 1``, or a
          `torch.nn.utils.rnn.PackedSequence` (its lengths are used; ``output`` is returned padded).
        * **state**: must be ``None`` (every slice starts from zero). Pass ``lengths`` by keyword: a lengths
          sequence in this second position still works, with a DeprecationWarning.
        * **lengths**: ``(N,)`` integer tensor or sequence of ints in ``[1, T]``; ``None`` means every
          sequence has length ``T``.
        * **mask** (keyword): bool ``(T, N)`` (``(N, T)`` with ``batch_first``), True on padded steps, a suffix of
          each sequence; the alternative to ``lengths``.
        * **total_length** (keyword): cut the input as if it were zero-padded to this many steps (``>= T``;
          like `torch.nn.utils.rnn.pad_packed_sequence`'s ``total_length``, without a copy). Batches
          padded to different lengths then get the same slices, hence the same results per sequence.
        * **return_all_levels** (keyword): also return every level's outputs.

    Outputs:
        * **output**: ``(L_top, N, H_out)`` (``(N, L_top, H_out)`` with ``batch_first``), the top level's
          outputs, with ``L_top = n`` for ``levels >= 1`` and ``L_top = T`` for ``levels = 0``; positions past
          a sequence's valid steps at that level are 0.
        * **h**: ``(N, H_out)`` the top level's summary, the final representation of each sequence.
        * **all_levels**: list of ``levels + 1`` tensors; ``all_levels[0]`` is ``(T, N, H_out)`` (``T`` =
          ``total_length`` when given), level 0's
          output at every input step (the base RNN's state restarts at every minimal slice), ``all_levels[j]``
          is ``(n^(k-j+1), N, H_out)``, level ``j``'s output at every step of its sequence (batch first with
          ``batch_first``); ``all_levels[-1]`` is ``output``.

        ``H_out = dirs * H`` (``dirs * proj_size`` for an LSTM with ``proj_size > 0``).

    `init_state(batch_size)` gives zeros shaped like ``h``; `step` raises ``NotImplementedError`` (a sliced RNN
    needs the whole sequence; stream with the base cell).

    Attributes:
        rnns: `torch.nn.ModuleList` of ``levels + 1`` modules; ``rnns[0]`` (also ``base``) is the base
            RNN with input size ``H_in``, ``rnns[j]`` level ``j``'s RNN with input size ``H_out``. Each
            built-in cell is created time-major with ``num_layers`` and ``bidirectional`` and initialised by
            its own class.

    Examples:
        >>> rnn = SlicedRNN(16, 32, slices=4, levels=2)
        >>> output, h = rnn(torch.randn(100, 3, 16), lengths=[100, 37, 5])
        >>> output.shape, h.shape
        (torch.Size([4, 3, 32]), torch.Size([3, 32]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        slices: int = 8,
        levels: int = 2,
        cell: str | CellFactory = "gru",
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = False,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        self.input_size = check.check_positive_int(input_size, "input_size")
        self.hidden_size = check.check_positive_int(hidden_size, "hidden_size")
        self.slices = check.check_positive_int(slices, "slices", minimum=2)
        self.levels = check.check_positive_int(levels, "levels", minimum=0)
        self.num_layers = check.check_positive_int(num_layers, "num_layers")
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.num_directions = 2 if bidirectional else 1
        if isinstance(cell, str):
            if cell not in _cells():
                raise ValueError(f"cell must be one of {_cells()} or a callable (input_size, hidden_size) -> "
                                 f"nn.Module, got {cell!r}")
            self.cell: str = cell
        elif callable(cell):
            if num_layers != 1:
                raise ValueError(f"num_layers applies to the built-in cells {_cells()}; a cell factory builds "
                                 f"its own layers (got num_layers={num_layers})")
            self.cell = "custom"
        else:
            raise TypeError(f"cell must be one of {_cells()} or a callable (input_size, hidden_size) -> "
                            f"nn.Module, got {type(cell).__name__}")
        features = hidden_size
        if self.cell == "lstm":
            features = cell_kwargs.get("proj_size") or hidden_size
        elif self.cell in cell_names():
            features = get_cell(self.cell).output_features(hidden_size, cell_kwargs)
        self.output_size = self.num_directions * features
        self.cell_kwargs = dict(cell_kwargs)
        self.rnns = nn.ModuleList(self._make_cell(cell, input_size if level == 0 else self.output_size)
                                  for level in range(levels + 1))

    @property
    def base(self) -> nn.Module:
        """The level-0 RNN, shared by all minimal slices."""
        return self.rnns[0]

    def _make_cell(self, cell: str | CellFactory, input_size: int) -> nn.Module:
        hidden, layers, kwargs = self.hidden_size, self.num_layers, self.cell_kwargs
        if cell == "gru":
            return nn.GRU(input_size, hidden, layers, bidirectional=self.bidirectional, **kwargs)
        if cell == "lstm":
            return nn.LSTM(input_size, hidden, layers, bidirectional=self.bidirectional, **kwargs)
        if cell == "sru":
            return SRU(input_size, hidden, layers, bidirectional=self.bidirectional, **kwargs)
        if isinstance(cell, str) and cell in cell_names():
            return get_cell(cell).build(input_size, hidden, layers, bidirectional=self.bidirectional, **kwargs)
        module = cell(input_size, hidden, **kwargs)  # type: ignore[operator]
        if not isinstance(module, nn.Module):
            raise TypeError(f"the cell factory must return an nn.Module, got {type(module).__name__}")
        return module

    def extra_repr(self) -> str:
        s = (f"{self.input_size}, {self.hidden_size}, slices={self.slices}, levels={self.levels}, "
             f"cell={self.cell!r}")
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    @staticmethod
    def _lengths_from_state(state: Any, lengths: Any) -> Any:
        """``lengths``, or the old second positional argument (lengths) found in ``state``'s place."""
        if state is None:
            return lengths
        looks_like_lengths = (isinstance(state, Tensor) and not state.is_floating_point() and state.dim() == 1) or (
            isinstance(state, (list, tuple)) and all(isinstance(n, int) for n in state))
        if looks_like_lengths and lengths is None:
            warnings.warn("SlicedRNN's second positional argument is now the state (the layer protocol); pass "
                          "lengths=... by keyword", DeprecationWarning, stacklevel=check.caller_stacklevel())
            return state
        raise ValueError("SlicedRNN takes no initial state (every slice starts from zero): pass state=None, and "
                         "lengths=... by keyword")

    def init_state(self, batch_size: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> Tensor:
        """Zeros shaped like the summary ``h`` ``(N, H_out)`` that `forward` returns as its state (`forward` takes
        no initial state: every slice starts from zero). ``device`` and ``dtype`` default to the parameters'."""
        check.check_positive_int(batch_size, "batch_size")
        return torch.zeros(batch_size, self.output_size,
                           **check.state_options(next(self.parameters(), None), device, dtype))

    def step(self, input: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Not available for ``input`` ``(N, H_in)``: a sliced RNN's slices are cut from the whole (padded) length
        and its top level sees summaries of whole slices, so it has no per-token output to stream (the documented
        exception to the layer protocol). Raises ``NotImplementedError``; stream with the base cell itself
        (``cell="sru"``, ``"mingru"``, ... have ``step``) or run `forward` on the whole sequence."""
        raise NotImplementedError("SlicedRNN has no step(): its slices and levels need the whole sequence; run "
                                  "forward on it, or stream with a plain cell (parrnn.SRU, parrnn.MinGRU, ...)")

    def padded_length(self, length: int) -> int:
        """The internal padded length ``T_p = slices**levels * ceil(length / slices**levels)``."""
        per = self.slices**self.levels
        return per * -(-length // per)

    def forward(
        self,
        input: Tensor | PackedSequence,
        state: None = None,
        lengths: Tensor | Sequence[int] | None = None,
        *,
        mask: Tensor | None = None,
        total_length: int | None = None,
        return_all_levels: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Run the hierarchy over a sequence (the layer protocol, docs/protocol.md, with its documented exceptions).

        Args:
            input: ``(T, N, H_in)`` (``(N, T, H_in)`` with ``batch_first``) or a ``PackedSequence`` (its lengths are
                used; ``output`` is returned padded: it has the top level's steps, not the input's).
            state: must be ``None``: every slice starts from a zero state, so there is no initial state to give.
                (A sequence of ints or an integer tensor here is taken as ``lengths``, the old second positional
                argument, with a DeprecationWarning: pass ``lengths=`` by keyword.)
            lengths: ``(N,)`` integers in ``[1, T]`` (tensor or list); ``None``: every sequence has ``T`` steps.
            mask: bool ``(T, N)`` (``(N, T)`` with ``batch_first``), True on padded steps, a suffix of each
                sequence (the alternative to ``lengths``).
            total_length: cut the input as if it were zero-padded to this many steps (see the class docstring).
            return_all_levels: also return every level's outputs.

        Returns:
            ``(output, h)`` or ``(output, h, all_levels)``: ``output`` ``(L_top, N, H_out)`` (batch first with
            ``batch_first``), ``h`` ``(N, H_out)`` each sequence's final summary (the state `init_state` mirrors).
        """
        lengths = self._lengths_from_state(state, lengths)
        if isinstance(input, PackedSequence):  # lengths come from the packed sequence
            _packing.refuse_padding_arguments(("lengths", lengths), ("mask", mask))
            input, lengths = _packing.unpack(input, self.batch_first)
        check.check_sequence_input(input, self.input_size, self.batch_first)
        x = input.transpose(0, 1) if self.batch_first else input  # (T, N, H_in)
        steps, batch = x.shape[0], x.shape[1]
        counts = check.valid_steps(lengths, mask, steps, batch, x.device, self.batch_first)
        length = steps
        if total_length is not None:
            length = check.check_positive_int(total_length, "total_length")
            if length < steps:
                raise ValueError(f"total_length ({length}) must be at least the input's length ({steps})")
        padded = self.padded_length(length)
        if counts is None and padded != steps:  # the internal padding is handled like user padding
            counts = torch.full((batch,), steps, dtype=torch.int64, device=x.device)

        seq, outputs = x, []
        for level, rnn in enumerate(self.rnns):
            slice_len = padded // self.slices**self.levels if level == 0 else self.slices
            num_slices = (padded if level == 0 else seq.shape[0]) // slice_len
            need_output = return_all_levels or level == self.levels
            out, summary = self._level(rnn, seq, counts, num_slices, slice_len, need_output)
            if out is not None:
                outputs.append(out)
            seq = summary.view(num_slices, batch, self.output_size)
            if counts is not None:
                counts = (counts + slice_len - 1) // slice_len  # non-empty slices = valid steps one level up

        h = seq.view(batch, self.output_size)
        if return_all_levels:
            outputs[0] = outputs[0][:length]
        if self.batch_first:
            outputs = [o.transpose(0, 1) for o in outputs]
        if return_all_levels:
            return outputs[-1], h, outputs
        return outputs[-1], h

    def _level(
        self, rnn: nn.Module, seq: Tensor, counts: Tensor | None, num_slices: int, slice_len: int, need_output: bool
    ) -> tuple[Tensor | None, Tensor]:
        """Run one level over ``seq`` ``(T', N, F)`` (time-major, ``T' <= num_slices * slice_len``; steps past
        ``T'`` are padding) with ``counts`` ``(N,)`` valid steps (``None``: all ``num_slices * slice_len``
        valid). Returns the outputs ``(num_slices * slice_len, N, H_out)`` in sequence order, 0 at padded steps
        (``None`` unless ``need_output``), and the slice summaries ``(num_slices * N, H_out)``; row
        ``s * N + i`` is slice ``s`` of sequence ``i`` (0 for an empty slice)."""
        row_len = self._slice_lengths(seq, counts, num_slices, slice_len)
        if row_len is None:
            return self._full_slices(rnn, seq, num_slices, slice_len, need_output)
        return self._partial_slices(rnn, seq, row_len, num_slices, slice_len, need_output)

    @staticmethod
    def _slice_lengths(seq: Tensor, counts: Tensor | None, num_slices: int, slice_len: int) -> Tensor | None:
        """Valid steps of every slice, ``(num_slices * N,)`` (row ``s * N + i``), or ``None`` when every slice
        is full."""
        if counts is None:
            return None
        starts = torch.arange(num_slices, device=seq.device).unsqueeze(1) * slice_len
        row_len = (counts.unsqueeze(0) - starts).clamp_(0, slice_len).reshape(-1)
        if seq.shape[0] == num_slices * slice_len and bool((row_len == slice_len).all()):
            return None
        return row_len

    def _full_slices(self, rnn: nn.Module, seq: Tensor, num_slices: int, slice_len: int,
                     need_output: bool) -> tuple[Tensor | None, Tensor]:
        """`_level` when every slice is full: the rows are ``seq``'s slices,
        read in place."""
        batch, feat = seq.shape[1], seq.shape[2]
        sliced = seq.view(num_slices, slice_len, batch, feat)
        if self._fast_gru(rnn, seq):
            out4, summary = gru_rows(rnn, sliced, need_output)
            out = None if out4 is None else out4.reshape(num_slices * slice_len, batch, -1)
            return out, summary
        rows = sliced.transpose(0, 1).reshape(slice_len, num_slices * batch, feat)
        out = self._run(rnn, rows, None, need_output)
        summary = self._summary(out, None)
        if not need_output:
            return None, summary
        return out.view(slice_len, num_slices, batch, -1).transpose(0, 1).reshape(-1, batch, out.shape[2]), summary

    def _partial_slices(self, rnn: nn.Module, seq: Tensor, row_len: Tensor, num_slices: int, slice_len: int,
                        need_output: bool) -> tuple[Tensor | None, Tensor]:
        """`_level` with padding (``row_len`` valid steps per slice).

        Padding is never read: each non-empty slice is gathered into a batch row (the padded tail of a partial
        slice reads a valid position instead, which a causal cell cannot carry back into the row's valid
        steps), and empty slices get no row at all."""
        batch, feat = seq.shape[1], seq.shape[2]
        keep = (row_len > 0).nonzero().squeeze(1)  # empty slices get no row: no compute, summary 0
        sub_len = row_len.index_select(0, keep)
        step = torch.arange(slice_len, device=seq.device).unsqueeze(1)
        valid = step < sub_len.unsqueeze(0)  # (slice_len, K)
        time, seq_index = keep // batch * slice_len + step, keep % batch  # (slice_len, K) and (K,)
        position = time * batch + seq_index  # row of the time-major (T' * N, F) matrix
        if seq.is_contiguous() or not seq.transpose(0, 1).is_contiguous():
            matrix = seq.reshape(-1, feat)
            gather_at = position
        else:  # batch-major memory (batch_first input, embedded tokens): read it in place
            matrix = seq.transpose(0, 1).reshape(-1, feat)
            gather_at = seq_index * seq.shape[0] + time
        # padded steps read step 0 of sequence 0 (always valid, so finite) instead of being masked: they come
        # after a row's valid steps, where a causal (unidirectional) cell cannot carry them into a summary or
        # a gradient, and bidirectional cells run on the valid steps only (see _run)
        rows = matrix.index_select(0, gather_at.masked_fill(~valid, 0).reshape(-1))
        rows = rows.view(slice_len, -1, feat)
        full = bool(valid.all())
        if self._fast_gru(rnn, rows) and (full or not self.bidirectional):
            out = gru_rows(rnn, rows.unsqueeze(0), True)[0].squeeze(0)  # type: ignore[union-attr]
        else:
            out = self._run(rnn, rows, None if full else sub_len, need_output)
        summary = out.new_zeros(num_slices * batch, out.shape[2]).index_copy(0, keep, self._summary(out, sub_len))
        if not need_output:
            return None, summary
        flat = out.new_zeros(num_slices * slice_len * batch, out.shape[2])
        flat = flat.index_put((position[valid],), out[valid])
        return flat.view(num_slices * slice_len, batch, -1), summary

    def _fast_gru(self, rnn: nn.Module, x: Tensor) -> bool:
        """Whether ``rnn`` over ``x`` may run `parrnn.ops.gru_rows.fused_cpu.gru_rows` (a GRU of the expected shape,
        without hooks or parametrizations: those need the module call)."""
        return (
            fast_gru_applies(rnn, x)
            and not _needs_module_call(rnn)
            and rnn.input_size == x.shape[-1]
            and rnn.bidirectional == self.bidirectional
            and rnn.hidden_size * self.num_directions == self.output_size
        )

    def _summary(self, out: Tensor, row_len: Tensor | None) -> Tensor:
        """Each row's last state: output at its last valid step (forward) / at step 0 (backward)."""
        return _packing.gather_last(out, row_len, self.bidirectional)

    def _run(self, rnn: nn.Module, x: Tensor, row_len: Tensor | None, need_output: bool = True) -> Tensor:
        """``rnn`` over rows ``x`` ``(L, R, F)`` with ``row_len`` ``(R,)`` in ``[1, L]`` (``None``: all
        ``L``). Returns ``(L, R, H_out)``; the valid steps equal the rnn over each row's valid part, and padded
        steps are 0 (with ``need_output=False`` a unidirectional rnn's padded steps are left as computed)."""
        if row_len is None:
            return self._call(rnn, x)
        steps = x.shape[0]
        pad = (torch.arange(steps, device=x.device).unsqueeze(1) >= row_len.unsqueeze(0)).unsqueeze(2)
        if not self.bidirectional:  # causal: padding after the valid steps cannot reach them
            out = self._call(rnn, x)
            return out.masked_fill(pad, 0) if need_output else out
        if self.cell in ("gru", "lstm"):
            packed = pack_padded_sequence(x, row_len.cpu(), enforce_sorted=False)
            out, _ = rnn(packed)
            return pad_packed_sequence(out, total_length=steps)[0]
        if self.cell == "sru" or self.cell in cell_names():
            return rnn(x, lengths=row_len)[0].masked_fill(pad, 0)
        # a user module knows nothing of lengths: run each group of equal-length rows on its valid steps only
        out = x.new_zeros(steps, x.shape[1], self.output_size)
        for n in torch.unique(row_len).tolist():
            idx = (row_len == n).nonzero().squeeze(1)
            out[:n, idx] = self._call(rnn, x[:n, idx])
        return out

    def _call(self, rnn: nn.Module, x: Tensor) -> Tensor:
        if type(rnn) is nn.GRU and not rnn.batch_first and registry.exporting_onnx():
            from parrnn.ops.gru_rows import onnx as onnx_export  # nn.GRU would export for one fixed length

            return onnx_export.gru(rnn, x)
        result = rnn(x)
        out = result[0] if isinstance(result, (tuple, list)) else result
        if not isinstance(out, Tensor) or out.shape[:2] != x.shape[:2] or out.shape[2] != self.output_size:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the {self.cell!r} cell must return output of shape (L, N, {self.output_size}) "
                             f"(dirs * hidden_size) for input {tuple(x.shape)}, got {got}")
        return out


def _needs_module_call(rnn: nn.Module) -> bool:
    """Whether ``rnn`` must be called as a module (``rnn(x)``) rather than have its weights read by a fused op: it
    has forward/backward hooks or pre-hooks of its own (pruning, FSDP's unshard, user hooks) or global ones, or a
    parametrized weight (`torch.nn.utils.parametrize`)."""
    if parametrize.is_parametrized(rnn):
        return True
    own = (rnn._forward_hooks, rnn._forward_pre_hooks, rnn._backward_hooks, rnn._backward_pre_hooks)
    shared = (module_hooks._global_forward_hooks, module_hooks._global_forward_pre_hooks,
              module_hooks._global_backward_hooks, module_hooks._global_backward_pre_hooks)
    return any(len(hooks) > 0 for hooks in (*own, *shared))

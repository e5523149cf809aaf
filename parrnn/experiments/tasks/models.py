"""Models for the accuracy tasks: an optional embedding, a recurrent encoder, and a linear head.

Stateful tasks (``Task.stateful``: character-level language modelling) get a `LanguageModel` instead,
whose encoder carries its state across segments; it also accepts ``srupp`` ([parrnn.SRUpp][] with the
previous segment as attention memory) and ``transformer`` (`CausalTransformer`, context = one segment).

Encoders (``MODEL_NAMES``): ``lstm`` and ``gru`` (``torch.nn``), ``sru`` / ``sru-v1`` ([parrnn.SRU][],
the peephole v2 and the linear v1 recurrence), every registered cell by its name (`parrnn.cells`: ``qrnn``,
``mingru``, ``minlstm``, ``hgrn``, ``rglru``, with their defaults and `torch.nn.GRU`'s shapes), and ``sliced-gru`` /
``sliced-lstm`` / ``sliced-sru``
([parrnn.SlicedRNN][] over that base cell). Every encoder maps time-major features ``(L, N, F)`` and
optional ``lengths`` to ``(outputs, last)``: per-step outputs ``(L, N, H)`` (``None`` for sliced encoders,
which only produce one state per sequence) and the state after each sequence's last valid step ``(N, H)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from parrnn.cells import cell_names, get_cell
from parrnn.experiments.baselines import CausalTransformer, attention_sizes
from parrnn.experiments.tasks.base import Task

#: parrnn's diagonal-recurrence cells by model name: the cell registry's names
CELL_MODELS = cell_names()
MODEL_NAMES = ("lstm", "gru", "sru", "sru-v1", *CELL_MODELS, "sliced-gru", "sliced-lstm", "sliced-sru")
#: Models of stateful (language-model) tasks: their state is carried from one segment to the next.
STATEFUL_MODEL_NAMES = ("lstm", "gru", "sru", "sru-v1", *CELL_MODELS, "srupp", "transformer")
#: The standard initialization of an LSTM's forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015), applied
#: to every ``lstm`` model unless ``memory_bias`` sets another value: torch's default draws it around 0.
LSTM_FORGET_BIAS = 1.0


@dataclass
class ModelSpec:
    """Architecture options shared by every encoder (unused ones are ignored by an encoder)."""

    name: str = "sru"
    hidden: int = 128
    layers: int = 2
    embed_dim: int = 64
    dropout: float = 0.0
    slices: int = 8
    levels: int = 2
    sru_backend: str = "auto"
    memory_bias: float | None = None


def last_valid(outputs: Tensor, lengths: Tensor | None) -> Tensor:
    """``outputs[lengths - 1, n]`` for every sequence ``n`` (the last step when ``lengths`` is ``None``)."""
    if lengths is None:
        return outputs[-1]
    index = (lengths.to(outputs.device) - 1).view(1, -1, 1).expand(1, -1, outputs.shape[-1])
    return outputs.gather(0, index).squeeze(0)


class TorchRNNEncoder(nn.Module):
    """``torch.nn.LSTM`` / ``torch.nn.GRU``; padding comes after each sequence, never reaching ``last``."""

    def __init__(self, cell: str, input_size: int, spec: ModelSpec) -> None:
        super().__init__()
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(input_size, spec.hidden, spec.layers, dropout=spec.dropout if spec.layers > 1 else 0.0)
        self.output_size = spec.hidden

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor | None, Tensor]:
        outputs, _ = self.rnn(x)
        return outputs, last_valid(outputs, lengths)


class SRUEncoder(nn.Module):
    """[parrnn.SRU][] (``version`` ``"v2"`` or ``"v1"``); padded steps leave the state unchanged."""

    def __init__(self, version: str, input_size: int, spec: ModelSpec) -> None:
        super().__init__()
        from parrnn import SRU

        self.rnn = SRU(
            input_size,
            spec.hidden,
            spec.layers,
            dropout=spec.dropout,
            version=version,
            backend=spec.sru_backend,
        )
        self.output_size = spec.hidden

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor | None, Tensor]:
        outputs, _ = self.rnn(x, lengths=lengths)
        return outputs, last_valid(outputs, lengths)


class CellEncoder(nn.Module):
    """One of parrnn's diagonal-recurrence cells (``CELL_MODELS``); padded steps leave the state unchanged."""

    def __init__(self, name: str, input_size: int, spec: ModelSpec) -> None:
        super().__init__()
        self.rnn = get_cell(name).build(input_size, spec.hidden, spec.layers, dropout=spec.dropout)
        self.output_size = spec.hidden

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor | None, Tensor]:
        outputs, _ = self.rnn(x, lengths=lengths)
        return outputs, last_valid(outputs, lengths)


class SlicedEncoder(nn.Module):
    """[parrnn.SlicedRNN][] over a GRU, LSTM or SRU base: one state per sequence, no per-step outputs.

    The slice length follows from the padded length ``L``, so every batch is cut as if padded to ``pad_to``
    steps (the task's longest sequence; ``total_length`` of [parrnn.SlicedRNN][], no copy): then an
    example's result does not depend on its batch.
    """

    def __init__(self, cell: str, input_size: int, spec: ModelSpec, pad_to: int | None = None) -> None:
        super().__init__()
        from parrnn.sliced import SlicedRNN

        extra = {"backend": spec.sru_backend} if cell == "sru" else {}
        self.rnn = SlicedRNN(
            input_size,
            spec.hidden,
            slices=spec.slices,
            levels=spec.levels,
            cell=cell,
            num_layers=spec.layers,
            **extra,
        )
        self.output_size, self.pad_to = spec.hidden, pad_to

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor | None, Tensor]:
        total = max(self.pad_to, x.shape[0]) if self.pad_to is not None else None
        _, last = self.rnn(x, lengths=lengths, total_length=total)
        return None, last


def build_encoder(input_size: int, spec: ModelSpec, pad_to: int | None = None) -> nn.Module:
    """The encoder named ``spec.name`` (one of ``MODEL_NAMES``); ``pad_to``: see `SlicedEncoder`."""
    name = spec.name
    if name in ("lstm", "gru"):
        return TorchRNNEncoder(name, input_size, spec)
    if name in ("sru", "sru-v2", "sru-v1"):
        return SRUEncoder("v1" if name == "sru-v1" else "v2", input_size, spec)
    if name in cell_names():  # (read when asked: a cell registered after this import is a model too)
        return CellEncoder(name, input_size, spec)
    if name.startswith("sliced-") and name.removeprefix("sliced-") in ("gru", "lstm", "sru"):
        return SlicedEncoder(name.removeprefix("sliced-"), input_size, spec, pad_to)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


class SequenceModel(nn.Module):
    """Embedding (token tasks) -> recurrent encoder -> linear head, shaped for one `Task`.

    Inputs: ``inputs`` ``(N, L, F)`` float or ``(N, L)`` token ids, ``lengths`` ``(N,)`` or ``None``.
    Output: ``(N,)`` for regression, ``(N, C)`` for sequence classification, ``(N, L, C)`` for per-step tasks.
    """

    def __init__(self, task: Task, spec: ModelSpec) -> None:
        super().__init__()
        self.readout, self.regression = task.readout, task.metric == "mse"
        self.embedding = nn.Embedding(task.vocab_size, spec.embed_dim) if task.vocab_size else None
        features = spec.embed_dim if task.vocab_size else task.input_size
        self.encoder = build_encoder(features, spec, task.max_length)
        if task.readout == "every" and isinstance(self.encoder, SlicedEncoder):
            raise ValueError(
                f"model {spec.name!r} yields one state per sequence, but task {task.name!r} needs "
                "an output at every step; use lstm, gru, sru or one of the cells"
            )
        self.head = nn.Linear(self.encoder.output_size, task.num_outputs)

    def features(self, inputs: Tensor) -> Tensor:
        """Time-major per-step features ``(L, N, F)`` fed to the encoder (embedded tokens or raw inputs)."""
        x = self.embedding(inputs) if self.embedding is not None else inputs
        return x.transpose(0, 1)

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Predictions from encoder features ``x`` ``(L, N, F)`` (see `features`)."""
        outputs, last = self.encoder(x, lengths)
        if self.readout == "every":
            return self.head(outputs).transpose(0, 1)
        pred = self.head(last)
        return pred.squeeze(-1) if self.regression else pred

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.forward_features(self.features(inputs), lengths)


def _detach(state):
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


class StatefulEncoder(nn.Module):
    """An encoder ``(L, N, F), state -> (L, N, H), new state`` whose state continues the previous segment.

    State per model: LSTM ``(h, c)``, GRU ``h``, SRU ``c`` (every layer), the registered cells their state,
    SRU++ ``(c, memory)`` with memory the previous segment's layer inputs (Transformer-XL style, attention over
    M + L keys), Transformer none.
    """

    def __init__(self, input_size: int, spec: ModelSpec) -> None:
        super().__init__()
        from parrnn import SRU, SRUpp

        self.name, self.output_size = spec.name, spec.hidden
        if spec.name in ("lstm", "gru"):
            self.rnn = TorchRNNEncoder(spec.name, input_size, spec).rnn
        elif spec.name in ("sru", "sru-v1"):
            self.rnn = SRU(input_size, spec.hidden, spec.layers, dropout=spec.dropout,
                           version="v1" if spec.name == "sru-v1" else "v2", backend=spec.sru_backend)
        elif spec.name in cell_names():
            self.rnn = CellEncoder(spec.name, input_size, spec).rnn
        elif spec.name == "srupp":
            proj, heads = attention_sizes(spec.hidden)
            self.rnn = SRUpp(input_size, spec.hidden, proj, spec.layers, num_heads=heads, dropout=spec.dropout,
                             backend=spec.sru_backend)
        elif spec.name == "transformer":
            self.rnn = CausalTransformer(input_size, spec.hidden, spec.layers, spec.dropout)
        else:
            raise ValueError(f"model {spec.name!r} cannot carry state across segments; choose one of "
                             f"{', '.join(STATEFUL_MODEL_NAMES)}")

    def forward(self, x: Tensor, state):
        if self.name == "transformer":
            return self.rnn(x), None
        if self.name == "srupp":
            c0, memory = state if state is not None else (None, None)
            out, c_n, memory_out = self.rnn(x, c0, attn_mask="causal", memory=memory)
            return out, (c_n, memory_out)
        return self.rnn(x, state)  # nn.LSTM/GRU (h0 or (h0, c0)), parrnn.SRU (c0), the cells (hx)


class LanguageModel(nn.Module):
    """Embedding -> `StatefulEncoder` -> linear head over the vocabulary, for stateful tasks.

    ``forward(inputs (N, L) ids)`` returns logits ``(N, L, V)`` and keeps the (detached) encoder state for the
    next call, which continues the same streams; `reset_state` starts over.
    """

    def __init__(self, task: Task, spec: ModelSpec) -> None:
        super().__init__()
        if not task.vocab_size:
            raise ValueError(f"task {task.name!r} is stateful but has no vocabulary")
        self.embedding = nn.Embedding(task.vocab_size, spec.embed_dim)
        self.encoder = StatefulEncoder(spec.embed_dim, spec)
        self.head = nn.Linear(self.encoder.output_size, task.num_outputs)
        self.state = None

    def reset_state(self) -> None:
        """Forget the carried state (the next call starts new streams)."""
        self.state = None

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is not None:
            raise ValueError("a language model reads unpadded stream segments; lengths must be None")
        out, state = self.encoder(self.embedding(inputs).transpose(0, 1), self.state)
        self.state = _detach(state)
        return self.head(out).transpose(0, 1)


def build_model(task: Task, spec: ModelSpec) -> nn.Module:
    """A `SequenceModel` for ``task`` (a `LanguageModel` for stateful tasks), with
    ``spec.memory_bias`` applied when set."""
    model = LanguageModel(task, spec) if task.stateful else SequenceModel(task, spec)
    if spec.memory_bias is not None:
        set_memory_bias(model, spec.memory_bias)
    else:
        set_memory_bias(model, LSTM_FORGET_BIAS, only=(nn.LSTM,))
    return model



def set_memory_bias(model: nn.Module, value: float, only: tuple[type, ...] | None = None) -> None:
    """Set the bias of every recurrent "keep the old state" gate in ``model`` to ``value``.

    The gate is LSTM's forget gate ``f``, GRU's update gate ``z`` and SRU's forget gate ``f``: a large value
    (e.g. 3-5) starts the network with long memory (``sigmoid(5)`` keeps 99.3% per step), the standard
    "forget-gate bias" / chrono-style initialization for long-range tasks. Applies to every layer, including
    those inside sliced models. ``only``: restrict it to modules of these types (e.g. ``(nn.LSTM,)``).
    """
    from parrnn.sru import SRUCell

    with torch.no_grad():
        for module in model.modules():
            if only is not None and not isinstance(module, only):
                continue
            if isinstance(module, (nn.LSTM, nn.GRU)):  # gate order: LSTM (i, f, g, o), GRU (r, z, n)
                gate = slice(module.hidden_size, 2 * module.hidden_size)
                for name, param in module.named_parameters():
                    if name.startswith("bias_ih"):
                        param[gate] = value
                    elif name.startswith("bias_hh"):
                        param[gate] = 0.0
            elif isinstance(module, SRUCell):  # (2, dirs * H) in any layout (compat cells keep sru's flat bias)
                module.gate_weights()[1][0].fill_(value)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

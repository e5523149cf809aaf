"""The layers the contract suite holds to the layer protocol, and what each one supports.

A new layer joins the suite with ONE line in `LAYERS`: a name, a builder with small sizes and its capability
flags. Every test module of ``tests/contract`` is parametrised over `LAYERS` (skipping the capabilities a layer
does not claim), the FSDP and determinism workers build from it, and the support table of docs/protocol.md
("## Support") is `support_table()` of the same list (tests/contract/test_support_table.py).

This module imports only torch and parrnn, so the subprocess workers can import it by path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import parrnn

#: small sizes: features in, hidden features, layers, steps, batch
I, H, LAYERS_N, L, N = 5, 6, 2, 7, 3


@dataclass(frozen=True)
class Layer:
    """One layer under contract.

    Attributes:
        name: the test id.
        label: how the docs' support table names it.
        build: makes the module (the caller seeds the RNG first).
        family: ``"parrnn"`` (the protocol: ``forward(input, state=None, lengths=None, *, mask=None)``),
            ``"sliced"`` (SlicedRNN: returns ``(output, h)`` with ``h`` ``(N, H)``, output per top-level step), or
            ``"compat"`` (`sru`'s API: ``forward(input, c0=None, mask_pad=None)``; pinned to `sru`'s behaviour).
        backends: the backend words that apply to it (set on every submodule holding a ``backend``).
        step: has ``step(x_t, state)`` and ``init_state(batch)``.
        torchscript, onnx, export, compile: claimed support for ``torch.jit.script``, ``torch.onnx.export``
            (dynamo), ``torch.export.export`` and ``torch.compile(fullgraph=True)``.
        double_backward: second derivatives are right (else they must raise naming ``backend="reference"``).
        forward_kwargs: extra forward arguments under which ``forward`` equals ``step`` (SRUpp's causal mask).
        available: False skips the layer (a class not in this version of parrnn).
        exceptions: the protocol's documented exceptions it has (docs/protocol.md): ``"third_output"`` (forward
            returns ``(output, c_n, memory_out)``), ``"state_object"`` (``init_state``/``step`` carry a state
            object whose ``c`` is forward's state; `step_state` turns one into the other).
        bidirectional: a bidirectional variant (``step`` must refuse it, naming the reason).
        in_docs: a row of the docs' support table (variants of a listed layer are not).
    """

    name: str
    label: str
    build: Callable[[], nn.Module]
    family: str = "parrnn"
    backends: tuple[str, ...] = ("auto", "sequential", "scan", "reference")
    step: bool = True
    torchscript: bool = False
    onnx: bool = False
    export: bool = False
    compile: bool = False
    double_backward: bool = True
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    available: bool = True
    exceptions: tuple[str, ...] = ()
    bidirectional: bool = False
    in_docs: bool = True

    def make(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build()

    def step_state(self, module: nn.Module, state: Any) -> Any:
        """Forward's returned state as ``step`` takes it (the same object but for ``"state_object"`` layers)."""
        if "state_object" in self.exceptions:
            return module.init_state(state.size(1), c0=state)
        return state


def _compat(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import parrnn.compat.sru as compat

        return getattr(compat, name)(I, H, LAYERS_N)

    return build


def _has_compat(name: str) -> bool:
    import parrnn.compat.sru as compat

    return hasattr(compat, name)


def _sliced(cell: str) -> Callable[[], nn.Module]:
    return lambda: parrnn.SlicedRNN(I, H, slices=2, levels=1, cell=cell, num_layers=LAYERS_N)


def _has_cell(name: str) -> bool:
    """Whether SlicedRNN builds ``cell=name`` (the cell registry's names when there is one)."""
    try:
        from parrnn import cells

        return name in ("gru", "lstm", "sru") or name in cells.cell_names()
    except (ImportError, AttributeError):
        from parrnn import sliced

        return name in sliced.CELLS


_CELL_BACKENDS = ("auto", "sequential", "scan", "reference")
_SRU_BACKENDS = ("auto", "sequential", "reference")
_GRAPHS = {"torchscript": True, "onnx": True, "export": True, "compile": True}
_FUSED = {"double_backward": False}  # the fused ops' backward has no derivative: a named error instead

# ---- THE TABLE: one line per layer --------------------------------------------------------------------------------
LAYERS: list[Layer] = [
    Layer("SRU-v2", "`SRU` (v2)", lambda: parrnn.SRU(I, H, num_layers=LAYERS_N), backends=_SRU_BACKENDS,
          **_GRAPHS, **_FUSED),
    Layer("SRU-v1", "`SRU` (v1)", lambda: parrnn.SRU(I, H, num_layers=LAYERS_N, version="v1"),
          backends=(*_SRU_BACKENDS, "scan"), **_GRAPHS, **_FUSED),
    Layer("SRUpp", "`SRUpp`", lambda: parrnn.SRUpp(I, H, 4, num_layers=LAYERS_N, num_heads=2),
          backends=_SRU_BACKENDS, onnx=True, export=True, compile=True, forward_kwargs={"attn_mask": "causal"},
          exceptions=("third_output", "state_object"), **_FUSED),
    Layer("QRNN-w1", "`QRNN` (window 1)", lambda: parrnn.QRNN(I, H, LAYERS_N), **_GRAPHS, **_FUSED),
    Layer("QRNN-w2", "`QRNN` (window 2)", lambda: parrnn.QRNN(I, H, LAYERS_N, window=2), **_GRAPHS, **_FUSED),
    Layer("MinGRU", "`MinGRU`", lambda: parrnn.MinGRU(I, H, LAYERS_N), **_GRAPHS, **_FUSED),
    Layer("MinLSTM", "`MinLSTM`", lambda: parrnn.MinLSTM(I, H, LAYERS_N), **_GRAPHS, **_FUSED),
    Layer("HGRN", "`HGRN`", lambda: parrnn.HGRN(I, H, LAYERS_N), **_GRAPHS, **_FUSED),
    Layer("RGLRU", "`RGLRU`", lambda: parrnn.RGLRU(I, H, LAYERS_N), available=hasattr(parrnn, "RGLRU"),
          **_GRAPHS, **_FUSED),
    Layer("Sliced-gru", "`SlicedRNN` over `nn.GRU`", _sliced("gru"), family="sliced", backends=("auto",),
          step=False, onnx=True, export=True, **_FUSED),  # the fused gru_rows path (CPU, eager)
    Layer("Sliced-lstm", "`SlicedRNN` over `nn.LSTM`", _sliced("lstm"), family="sliced", backends=("auto",),
          step=False, onnx=True, export=True),
    *[Layer(f"Sliced-{cell}", f'`SlicedRNN` over `"{cell}"`', _sliced(cell), family="sliced", backends=backends,
            step=False, onnx=True, export=True, compile=True, available=_has_cell(cell), **_FUSED)
      for cell, backends in (("sru", _SRU_BACKENDS), ("qrnn", _CELL_BACKENDS), ("mingru", _CELL_BACKENDS),
                             ("minlstm", _CELL_BACKENDS), ("hgrn", _CELL_BACKENDS), ("rglru", _CELL_BACKENDS))],
    # bidirectional variants: padding and the reverse direction, hooks, weights, functional transforms
    Layer("SRU-v2-bidir", "`SRU` (v2, bidirectional)",
          lambda: parrnn.SRU(I, H, num_layers=LAYERS_N, bidirectional=True),
          backends=_SRU_BACKENDS, step=False, bidirectional=True, in_docs=False, **_FUSED),
    Layer("QRNN-w2-bidir", "`QRNN` (window 2, bidirectional)",
          lambda: parrnn.QRNN(I, H, LAYERS_N, window=2, bidirectional=True), step=False, bidirectional=True,
          in_docs=False, **_FUSED),
    Layer("MinGRU-bidir", "`MinGRU` (bidirectional)", lambda: parrnn.MinGRU(I, H, LAYERS_N, bidirectional=True),
          step=False, bidirectional=True, in_docs=False, **_FUSED),
    Layer("compat.SRU", "`parrnn.compat.sru.SRU`", _compat("SRU"), family="compat", backends=_SRU_BACKENDS,
          step=False, **_GRAPHS, **_FUSED),
    Layer("compat.SRUpp", "`parrnn.compat.sru.SRUpp`", _compat("SRUpp"), family="compat", backends=_SRU_BACKENDS,
          step=False, available=_has_compat("SRUpp"), **_FUSED),
]
# -------------------------------------------------------------------------------------------------------------------

BY_NAME = {layer.name: layer for layer in LAYERS}
CAPABILITIES = ("step", "torchscript", "onnx", "export", "compile", "double_backward")


def layers(**required: bool) -> list[Layer]:
    """The available layers whose flags equal ``required`` (e.g. ``layers(step=True)``)."""
    return [la for la in LAYERS if la.available and all(getattr(la, k) == v for k, v in required.items())]


def names(**required: bool) -> list[str]:
    return [la.name for la in layers(**required)]


# ---- calling a layer the same way whatever its family -------------------------------------------------------------

def call(layer: Layer, module: nn.Module, x: Any, state: Any = None, lengths: Any = None,
         mask: Tensor | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """``(output, state)`` of ``module`` on time-major ``x`` (or a PackedSequence). The state goes positionally
    (the protocol's second argument); ``lengths`` and ``mask`` by keyword; compat layers get `sru`'s ``mask_pad``
    (lengths turned into one)."""
    if layer.family == "compat":
        if lengths is not None:
            steps = x.size(0)
            mask = torch.arange(steps).unsqueeze(1) >= torch.as_tensor(lengths).unsqueeze(0)
        result = module(x, state, mask, **kwargs)
    else:
        kw = dict(kwargs)
        if lengths is not None:
            kw["lengths"] = lengths
        if mask is not None:
            kw["mask"] = mask
        result = module(x, state, **kw) if state is not None else module(x, **kw)
    return result[0], result[1]


def set_backend(module: nn.Module, backend: str) -> None:
    """Set ``backend`` on every submodule that holds one (a stack's property sets its layers)."""
    for sub in module.modules():
        if isinstance(getattr(type(sub), "backend", None), property) or isinstance(getattr(sub, "backend", None),
                                                                                   str):
            sub.backend = backend


def inner_layers(module: nn.Module) -> list[nn.Module]:
    """Every recurrent layer inside ``module``: a stack's layers; for SlicedRNN each level's RNN and its layers."""
    found: list[nn.Module] = []
    for attr in ("layers", "rnn_lst", "rnns"):
        children = getattr(module, attr, None)
        if isinstance(children, nn.ModuleList):
            for child in children:
                found.append(child)
                found.extend(inner_layers(child))
    return found


def leaf_layers(module: nn.Module) -> list[nn.Module]:
    """The inner layers that hold the recurrence's own weights (no layers inside)."""
    return [m for m in inner_layers(module) if not inner_layers(m)]


def weight_name(layer: nn.Module) -> str:
    """The layer's own input weight: ``weight`` (parrnn, sru), ``weight_ih_l0`` (torch RNNs), else its first
    matrix parameter."""
    own = dict(layer.named_parameters(recurse=False))
    for name in ("weight", "weight_ih_l0"):
        if name in own:
            return name
    matrices = [n for n, p in own.items() if p.dim() >= 2]
    if matrices:
        return matrices[0]
    if own:
        return next(iter(own))
    raise AssertionError(f"{type(layer).__name__} owns no parameter")


def state_tensors(state: Any) -> list[Tensor]:
    """The tensors of a state whose dim 1 is the batch: a tensor, a tuple of them, or a dataclass's ``c``
    (SRUppState; its attention cache is batch-first)."""
    if state is None:
        return []
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, (tuple, list)):
        return [t for s in state for t in state_tensors(s)]
    if dataclasses.is_dataclass(state):
        return state_tensors(state.c)
    raise TypeError(f"unknown state type {type(state).__name__}")


def all_tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a nested output (tensors, sequences, dataclasses, PackedSequence data)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, torch.nn.utils.rnn.PackedSequence):
        yield obj.data
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from all_tensors(o)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from all_tensors(getattr(obj, f.name))


# ---- the docs' support table ---------------------------------------------------------------------------------------

_HEADERS = {"step": "step / init_state", "torchscript": "TorchScript", "onnx": "ONNX", "export": "torch.export",
            "compile": "torch.compile", "double_backward": "double backward"}


def support_table() -> str:
    """The markdown table of docs/protocol.md's "## Support" section, from the available `LAYERS`."""
    head = "| layer | " + " | ".join(_HEADERS[c] for c in CAPABILITIES) + " |"
    rule = "|" + "---|" * (len(CAPABILITIES) + 1)
    rows = [f"| {la.label} | " + " | ".join("yes" if getattr(la, c) else "no" for c in CAPABILITIES)
            + " |" for la in LAYERS if la.available and la.in_docs]
    return "\n".join([head, rule, *rows])


if __name__ == "__main__":
    print(support_table())

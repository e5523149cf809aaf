"""The benchmark's model factory: every model behind one calling convention.

Model names (``--models``):

* ``lstm``, ``gru``                      -- ``torch.nn.LSTM`` / ``torch.nn.GRU`` as torch runs them by default
  (cuDNN on GPU; on CPU torch's oneDNN RNN kernels where it picks them);
* ``lstm-nomkldnn``, ``gru-nomkldnn``    -- the same layers under ``torch.backends.mkldnn.flags(enabled=False)``
  (torch's native CPU kernels: much faster than oneDNN for one streaming step);
* ``lstm-cell``                          -- a stack of ``nn.LSTMCell`` looped over time in Python (what a
  streaming user writes by hand); the speed-ups use the fastest LSTM configuration measured at each size;
* ``sru``                                -- ``parrnn.SRU`` with ``backend="auto"``, version v2;
* ``sru-<backend>-<v1|v2>``              -- ``parrnn.SRU`` on one backend (``auto``, ``reference``, ``cpu``,
  ``cuda``, ``scan``; ``scan`` is v1 only);
* ``sru26``, ``sru26-v1``                -- the reference ``sru`` 2.6 package (only where it imports);
* ``sliced-<gru|lstm|sru|cell>``         -- ``parrnn.SlicedRNN`` over that cell (8 slices, 2 levels), any registered
  cell name included;
* ``srupp``                              -- ``parrnn.SRUpp`` (SRU++): causal attention in every layer,
  ``proj_size`` = H/4, heads of width 64, ``backend="auto"``;
* ``transformer``                        -- the baseline of the same width and depth: ``nn.TransformerEncoder``
  of pre-norm ``nn.TransformerEncoderLayer`` (d_model H, heads of width 64, feed-forward 4H), causal;
* ``<cell>``                             -- every cell of the cell registry by its name (`parrnn.cells`: ``qrnn``
  (fo-pooling, window 1), ``mingru``, ``minlstm``, ``hgrn``, ``rglru``), each with ``backend="auto"``, its
  defaults and `torch.nn.GRU`'s shapes (``Cell.build``);
* ``mingru-pytorch``                     -- ``num_layers`` layers of the reference ``minGRU-pytorch`` 0.2.1
  (log-space scan; only where it imports, e.g. from ``.venv/mingru``, see scripts/bootstrap.sh);
* ``rec-<backend>-<v1|v2>``              -- the SRU recurrence alone ([parrnn.ops.sru_recurrence][], no
  matrix products), for the kernel's bytes/s and fraction of copy bandwidth.

Every model is configured like the others of its size: ``input_size`` D, ``hidden_size`` H, ``num_layers``,
unidirectional, no dropout. The SRU models (parrnn and sru 2.6 alike) use ``highway_bias=-2`` and
``rescale=True``, parrnn's defaults, so both packages run the same math.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from parrnn.cells import cell_names, get_cell
from parrnn.experiments.baselines import CausalTransformer, LSTMCells, attention_sizes

PARRNN_BACKENDS = ("auto", "reference", "cpu", "cuda", "scan")
SLICED_CELLS = ("gru", "lstm", "sru", *cell_names())
SLICES, LEVELS = 8, 2
_SRU_RE = re.compile(r"^(sru|rec)-([a-z]+)-(v1|v2)$")

#: Every name the factory accepts, as patterns (for help texts and error messages).
#: parrnn's diagonal-recurrence cells by model name: the cell registry's names
CELL_MODELS = cell_names()
MODEL_PATTERNS = ("lstm", "lstm-nomkldnn", "lstm-cell", "gru", "gru-nomkldnn",
                  "sru", "sru-<backend>-<v1|v2>", "sru26", "sru26-v1", "srupp", "transformer",
                  "sliced-<gru|lstm|sru|cell>", "rec-<backend>-<v1|v2>", *CELL_MODELS, "mingru-pytorch")


#: nn.LSTM / nn.GRU configurations besides the default: name -> (family, backend label).
TORCH_RNN_CONFIGS = {"lstm-nomkldnn": ("lstm", "torch-no-onednn"), "gru-nomkldnn": ("gru", "torch-no-onednn"),
                     "lstm-cell": ("lstm", "lstmcell-loop")}


class ModelUnavailable(RuntimeError):
    """The model cannot run here (missing package, unavailable backend, unsupported dtype...)."""


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: ``family`` is lstm, gru, sru, sru26, sliced, rec, cell or mingru_pytorch."""

    name: str
    family: str
    backend: str = "torch"
    version: str = "v2"
    cell: str = ""


def parse_model_name(name: str) -> ModelName:
    """Parse ``name`` (see the module docstring); raise ``ValueError`` naming the accepted patterns."""
    if name in ("lstm", "gru", "transformer"):
        return ModelName(name, name)
    if name in TORCH_RNN_CONFIGS:
        family, backend = TORCH_RNN_CONFIGS[name]
        return ModelName(name, family, backend)
    if name == "srupp":
        return ModelName(name, "srupp", "auto", "v2")
    if name in cell_names():  # (read when asked: a cell registered after this import is a model too)
        return ModelName(name, "cell", "auto", cell=name)
    if name == "mingru-pytorch":
        return ModelName(name, "mingru_pytorch", "mingru-pytorch")
    if name == "sru":
        return ModelName(name, "sru", "auto", "v2")
    if name in ("sru26", "sru26-v1"):
        return ModelName(name, "sru26", "sru2.6", "v1" if name.endswith("v1") else "v2")
    if name.startswith("sliced-") and name[len("sliced-"):] in ("gru", "lstm", "sru", *cell_names()):
        return ModelName(name, "sliced", "parrnn", cell=name[len("sliced-"):])
    match = _SRU_RE.match(name)
    if match and match.group(2) in PARRNN_BACKENDS:
        family, backend, version = match.groups()
        if backend == "scan" and version != "v1":
            raise ValueError(f"model {name!r}: the scan backend runs the linear SRU only; "
                             f"use {family}-scan-v1")
        return ModelName(name, family, backend, version)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_PATTERNS)} "
                     f"with <backend> in {{{', '.join(PARRNN_BACKENDS)}}}")


@dataclass
class BenchModel:
    """A built model: ``run(*make_inputs(L, N, grad))`` returns the output tensor to time (and backprop)."""

    spec: ModelName
    module: nn.Module
    make_inputs: Callable[[int, int, bool], tuple[Tensor, ...]]
    run: Callable[..., Tensor]
    resolve_backend: Callable[[int, int], str] = field(default=lambda length, batch: "")
    notes: str = ""
    #: For ``rec-*`` models: state columns C per token (the recurrence touches L*N*C elements).
    columns: int = 0


def _randn(device: torch.device, dtype: torch.dtype) -> Callable[..., Tensor]:
    def make(*shape: int, grad: bool = False) -> Tensor:
        return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)
    return make


def _sequence_model(spec: ModelName, module: nn.Module, input_size: int, device: torch.device,
                    dtype: torch.dtype, notes: str = "",
                    resolve: Callable[[int, int], str] | None = None) -> BenchModel:
    """Wrap a module whose forward takes ``(L, N, D)`` and returns ``(output, state...)``.

    The input does not require grad (a first layer's input never does), so fwd+bwd is a training step's cost.
    """
    module = module.to(device=device, dtype=dtype)
    randn = _randn(device, dtype)
    return BenchModel(spec, module, lambda length, batch, grad: (randn(length, batch, input_size),),
                      lambda x: module(x)[0], resolve or (lambda length, batch: spec.backend), notes)


def _import_parrnn():
    try:
        return importlib.import_module("parrnn")
    except Exception as exc:  # parrnn itself must import for its models; say why when it does not
        raise ModelUnavailable(f"import parrnn failed: {type(exc).__name__}: {exc}") from exc


def _op_word(backend: str) -> str:
    """The op's backend word for a model name's backend (``sru-cpu-v1``, ``sru-cuda-v2``: ``"sequential"``)."""
    return "sequential" if backend in ("cpu", "cuda") else backend


def _check_parrnn_backend(backend: str, device: torch.device) -> None:
    if backend == "auto":
        return
    _import_parrnn()
    from parrnn.ops.sru.dispatch import backend_availability  # the SRU op's backend words and their aliases

    try:
        ok, why = backend_availability(backend, device)
    except ValueError:
        ok, why = False, "unknown backend"
    if not ok:
        raise ModelUnavailable(f"parrnn backend {backend!r} unavailable: {why}")
    if backend in ("cpu", "cuda") and device.type != backend:
        raise ModelUnavailable(f"parrnn backend {backend!r} does not run on device {device.type}")


def _parrnn_resolver(spec: ModelName, device: torch.device, hidden: int) -> Callable[[int, int], str]:
    """Which backend parrnn runs for a given (L, N): ``auto`` resolved, else the requested name."""
    def resolve(length: int, batch: int) -> str:
        try:
            from parrnn.ops.sru.dispatch import resolve_backend
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return resolve_backend(spec.backend, device, linear=spec.version == "v1",
                                       batch_columns=batch * hidden, length=length)
        except Exception:
            return spec.backend
    return resolve


def _build_sru(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
               dtype: torch.dtype) -> BenchModel:
    parrnn = _import_parrnn()
    _check_parrnn_backend(spec.backend, device)
    module = parrnn.SRU(input_size, hidden, num_layers=layers, version=spec.version, backend=_op_word(spec.backend))
    return _sequence_model(spec, module, input_size, device, dtype,
                           resolve=_parrnn_resolver(spec, device, hidden))


def _build_sru26(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                 dtype: torch.dtype) -> BenchModel:
    if importlib.util.find_spec("sru") is None:
        raise ModelUnavailable("the sru 2.6 package is not installed (pip install --no-deps sru==2.6.0)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sru warns on import when it cannot JIT its CUDA kernels
        sru = importlib.import_module("sru")
        module = sru.SRU(input_size, hidden, num_layers=layers, v1=spec.version == "v1",
                         highway_bias=-2.0, rescale=True)
    notes = "CPU backward is autograd through a Python loop" if device.type == "cpu" else ""
    return _sequence_model(spec, module, input_size, device, dtype, notes)


def _build_sliced(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                  dtype: torch.dtype) -> BenchModel:
    parrnn = _import_parrnn()
    sliced_rnn = getattr(parrnn, "SlicedRNN", None)
    if sliced_rnn is None:
        try:
            sliced_rnn = importlib.import_module("parrnn.sliced").SlicedRNN
        except (ImportError, AttributeError) as exc:
            raise ModelUnavailable(f"parrnn.SlicedRNN is not available: {exc}") from exc
    kwargs: dict[str, object] = {"slices": SLICES, "levels": LEVELS, "cell": spec.cell}
    notes = f"slices={SLICES}, levels={LEVELS}"
    if "num_layers" in inspect.signature(sliced_rnn).parameters:
        kwargs["num_layers"] = layers
    elif layers != 1:
        notes += "; SlicedRNN has no num_layers: 1 layer"
    module = sliced_rnn(input_size, hidden, **kwargs)
    return _sequence_model(spec, module, input_size, device, dtype, notes)


def _build_srupp(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                 dtype: torch.dtype) -> BenchModel:
    parrnn = _import_parrnn()
    proj, heads = attention_sizes(hidden)
    module = parrnn.SRUpp(input_size, hidden, proj, layers, num_heads=heads, backend=_op_word(spec.backend)).to(
        device=device, dtype=dtype)
    randn = _randn(device, dtype)
    return BenchModel(spec, module, lambda length, batch, grad: (randn(length, batch, input_size),),
                      lambda x: module(x, attn_mask="causal")[0], _parrnn_resolver(spec, device, hidden),
                      f"proj_size={proj}, num_heads={heads}, causal")


def _build_transformer(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                       dtype: torch.dtype) -> BenchModel:
    module = CausalTransformer(input_size, hidden, layers).to(device=device, dtype=dtype)
    randn = _randn(device, dtype)
    return BenchModel(spec, module, lambda length, batch, grad: (randn(length, batch, input_size),), module,
                      notes=f"pre-norm, heads={module.num_heads}, ff={4 * hidden}, causal")


def _build_cell(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                dtype: torch.dtype) -> BenchModel:
    module = get_cell(spec.cell).build(input_size, hidden, layers)
    return _sequence_model(spec, module, input_size, device, dtype)


class _MinGRUPytorch(nn.Module):
    """``minGRU-pytorch`` layers applied in turn to time-major ``(L, N, D)`` input (the package is batch first)."""

    def __init__(self, layer_class: type[nn.Module], input_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layer_class(input_size, expansion_factor=hidden / input_size)
                                    for _ in range(layers))

    def forward(self, x: Tensor) -> tuple[Tensor]:
        x = x.transpose(0, 1)
        for layer in self.layers:
            x = layer(x)
        return (x.transpose(0, 1),)


def _build_mingru_pytorch(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                          dtype: torch.dtype) -> BenchModel:
    import sys
    from pathlib import Path

    target = Path(sys.prefix) / "mingru"  # scripts/bootstrap.sh installs it there with pip --target
    if importlib.util.find_spec("minGRU_pytorch") is None and (target / "minGRU_pytorch").is_dir():
        sys.path.append(str(target))
    if importlib.util.find_spec("minGRU_pytorch") is None:
        raise ModelUnavailable("minGRU-pytorch is not installed (pip install --no-deps minGRU-pytorch==0.2.1)")
    layer_class = importlib.import_module("minGRU_pytorch.minGRU").minGRU
    return _sequence_model(spec, _MinGRUPytorch(layer_class, input_size, hidden, layers), input_size, device,
                           dtype, "log-space scan (logcumsumexp), no biases")


class _Recurrence(nn.Module):
    """The SRU recurrence alone, with the layer's own parameters (peephole weights for v2, gate biases)."""

    def __init__(self, hidden: int, version: str, backend: str) -> None:
        super().__init__()
        self.backend = backend
        self.bias = nn.Parameter(torch.zeros(2, hidden))
        self.weight_c = nn.Parameter(0.1 * torch.randn(2, hidden)) if version == "v2" else None

    def forward(self, u: Tensor, x: Tensor) -> Tensor:
        from parrnn.ops import sru_recurrence
        c0 = u.new_zeros(u.shape[1], u.shape[3])
        return sru_recurrence(u, x, self.weight_c, self.bias, c0, None, None, backend=self.backend)[0]


def _build_rec(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
               dtype: torch.dtype) -> BenchModel:
    _import_parrnn()
    _check_parrnn_backend(spec.backend, device)
    module = _Recurrence(hidden, spec.version, _op_word(spec.backend)).to(device=device, dtype=dtype)
    randn = _randn(device, dtype)

    def make_inputs(length: int, batch: int, grad: bool) -> tuple[Tensor, Tensor]:
        # u and x stand for the projections and the layer input: in a training step both get gradients.
        return randn(length, batch, 3, hidden, grad=grad), randn(length, batch, hidden, grad=grad)

    return BenchModel(spec, module, make_inputs, module, _parrnn_resolver(spec, device, hidden),
                      "recurrence only (one layer, no matrix products)", columns=hidden)


class NoOneDNN(nn.Module):
    """Run ``inner`` with torch's oneDNN (mkldnn) kernels disabled (``torch.backends.mkldnn.flags``)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: object) -> object:
        with torch.backends.mkldnn.flags(enabled=False):
            return self.inner(*args)


def _build_torch_rnn(spec: ModelName, input_size: int, hidden: int, layers: int, device: torch.device,
                     dtype: torch.dtype) -> BenchModel:
    """nn.LSTM / nn.GRU in the configuration ``spec.name`` names (see `TORCH_RNN_CONFIGS`)."""
    if spec.name == "lstm-cell":
        return _sequence_model(spec, LSTMCells(input_size, hidden, layers), input_size, device, dtype,
                               "nn.LSTMCell per layer, Python loop over time")
    layer = {"lstm": nn.LSTM, "gru": nn.GRU}[spec.family](input_size, hidden, layers)
    if spec.name.endswith("-nomkldnn"):
        return _sequence_model(spec, NoOneDNN(layer), input_size, device, dtype, "torch.backends.mkldnn off")
    return _sequence_model(spec, layer, input_size, device, dtype)


_BUILDERS = {
    "lstm": _build_torch_rnn,
    "gru": _build_torch_rnn,
    "sru": _build_sru,
    "sru26": _build_sru26,
    "srupp": _build_srupp,
    "transformer": _build_transformer,
    "sliced": _build_sliced,
    "rec": _build_rec,
    "cell": _build_cell,
    "mingru_pytorch": _build_mingru_pytorch,
}


def build_model(name: str, *, input_size: int, hidden: int, layers: int, device: torch.device | str,
                dtype: torch.dtype, seed: int = 0) -> BenchModel:
    """Build model ``name`` on ``device``/``dtype`` with a fixed seed.

    Raises ``ValueError`` for an unknown name and `ModelUnavailable` when it cannot run here.
    """
    spec = parse_model_name(name)
    torch.manual_seed(seed)
    try:
        return _BUILDERS[spec.family](spec, input_size, hidden, layers, torch.device(device), dtype)
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"{type(exc).__name__}: {exc}") from exc

"""One registry for the backend choice of every op: the SRU recurrence, the linear recurrence and ``gru_rows``.

An op is described once (`Op`): its name, its fused backend modules per ``(algorithm, device type)``, and the
``backend="auto"`` rules (`AutoRule`), each naming the measurement that justifies it. Everything else is shared
here, so no op carries its own copy:

* backend words, the same for every op: ``"auto"``, ``"reference"``, ``"sequential"``, ``"scan"`` (the algorithm;
  the device comes from the tensors); an op may accept deprecated aliases (SRU's ``"cpu"``/``"cuda"``), which
  warn once with the new word (`normalize`);
* availability per ``(op, backend, device, dtype)``: probed once, cached, thread-safe; `reprobe` forgets it
  (`backend_availability`, `available_backends`, `precompile`);
* the choice: `choose` for an eager call (``"auto"`` by the rules; nothing runnable: the reference with one
  warning), `graph_choice` while ``torch.compile``/``torch.export``/``torch.jit.trace`` trace (``"auto"`` is
  deferred: the custom op chooses at run time from the concrete shapes, by `run_time_choice`; no thread count or
  shape is read while tracing);
* how a call runs (`route`): the ONNX branch while exporting, the differentiable reference under ``torch.func``
  transforms and forward-mode AD (dual tensors), the custom op while tracing, a plain ``autograd.Function`` when
  a gradient is needed, and the fused forward called directly otherwise (no custom-op dispatch, and no import of
  ``torch._dynamo``: calling a ``torch.library`` op's kernel imports it);
* first-order-only fused backwards (`first_order_only`): differentiating their gradients again raises
  `DoubleBackwardError`, which names ``backend="reference"``.

A fused backend module has ``availability(device, dtype) -> (ok, reason)`` (or ``availability()`` when it does
not depend on them) and the op's own ``forward``/``backward`` contract (see each op's custom-op module). A new
backend is one module plus one entry in its op's ``modules`` (and, once measured, one rule).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd import forward_ad

from parrnn import _validation
from parrnn.ops import auto
from parrnn.ops.tracing import functorch_active, tracing

__all__ = ["ALGORITHMS", "OPS", "WORDS", "AutoRule", "DoubleBackwardError", "Op", "available_backends",
           "backend_availability", "backend_module", "choose", "first_order_only", "get_op", "graph_choice",
           "hand_written_ok", "normalize", "precompile", "register", "reprobe", "route", "run_time_choice"]

AUTO, REFERENCE = "auto", "reference"
#: The fused algorithms; each runs the kernel of the tensors' device.
ALGORITHMS = ("sequential", "scan")
#: The backend words every op takes.
WORDS = (AUTO, REFERENCE) + ALGORITHMS


@dataclass(frozen=True)
class AutoRule:
    """One row of an op's ``backend="auto"`` table: on ``device`` tensors, run ``backend`` when the call
    qualifies: at least ``min_length`` steps ``L``, ``min_columns`` columns ``N * C``, ``min_elements``
    ``L * N * C``, at most ``max_columns_per_thread`` times the thread count columns, at least ``min_threads``
    threads, and the linear recurrence where ``linear_only``.

    ``measurement`` names the run that justifies the row (its numbers live in the docs). A row without a
    measurement on its kind of device names only that device's default kernel (the last row of the device).
    """

    device: str
    backend: str
    measurement: str
    linear_only: bool = False
    min_length: int = 0
    min_columns: int = 0
    min_elements: int = 0
    max_columns_per_thread: int | None = None
    min_threads: int = 1

    def applies(self, device_type: str, *, length: int, columns: int, linear: bool = True) -> bool:
        """Whether the row applies to ``length`` steps of ``columns`` columns on ``device_type`` tensors. Reads
        ``torch.get_num_threads()`` only when a row needs it (never called while tracing: see `graph_choice`)."""
        if device_type != self.device or (self.linear_only and not linear):
            return False
        if length < self.min_length or columns < self.min_columns or length * columns < self.min_elements:
            return False
        if self.min_threads <= 1 and self.max_columns_per_thread is None:
            return True
        threads = torch.get_num_threads()
        if threads < self.min_threads:
            return False
        return self.max_columns_per_thread is None or columns <= self.max_columns_per_thread * threads


@dataclass(frozen=True)
class Op:
    """An op as the registry sees it.

    ``modules`` maps ``(algorithm, device type)`` to the import path of a fused backend module; ``rules`` is the
    ``backend="auto"`` table (first row that applies and whose backend runs; the last row of a device is its
    default kernel); ``aliases`` maps deprecated words to backend words; ``scan_needs_linear`` is the error for
    ``backend="scan"`` on a call that is not linear (``None``: the op is always linear); ``double_backward``
    names what supports a gradient of a gradient (in `DoubleBackwardError`).
    """

    name: str
    modules: Mapping[tuple[str, str], str]
    rules: tuple[AutoRule, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    scan_needs_linear: str | None = None
    double_backward: str = 'backend="reference"'

    @property
    def backends(self) -> tuple[str, ...]:
        """The backend words other than ``"auto"``: ``("reference", "sequential", "scan")``."""
        return (REFERENCE,) + ALGORITHMS


OPS: dict[str, Op] = {}
_availability: dict[tuple[str, str, str, torch.dtype], tuple[bool, str]] = {}
_lock = threading.Lock()
_warned: set[str] = set()


class DoubleBackwardError(RuntimeError):
    """A fused backward's gradient was differentiated again; ``backend="reference"`` supports that."""


def register(op: Op) -> Op:
    """Add ``op`` (its name must be new, or the same description again) and return it."""
    if OPS.get(op.name, op) != op:
        raise ValueError(f"an op named {op.name!r} is already registered")
    OPS[op.name] = op
    return op


def get_op(op: Op | str) -> Op:
    """The registered `Op` named ``op`` (an `Op` is returned as is)."""
    if isinstance(op, Op):
        return op
    _register_builtin()
    if op not in OPS:
        raise ValueError(f"op must be one of {tuple(OPS)}, got {op!r}")
    return OPS[op]


def normalize(op: Op | str, backend: str) -> str:
    """``backend`` as a backend word: a word as is, a deprecated alias of ``op`` with a ``DeprecationWarning``
    that names the new word (attributed to the user's line: the first caller outside parrnn and torch, so
    Python's default filters show it); anything else a ``ValueError``."""
    spec = get_op(op)
    if backend in WORDS:
        return backend
    if isinstance(backend, str) and backend in spec.aliases:
        new = spec.aliases[backend]
        warnings.warn(f"backend={backend!r} is deprecated: write backend={new!r} (the device comes from the "
                      "tensors)", DeprecationWarning, stacklevel=_validation.caller_stacklevel())
        return new
    raise ValueError(f"backend must be one of {WORDS}, got {backend!r}")


# ---- availability -------------------------------------------------------------------------------------------------

def backend_module(op: Op | str, backend: str, device_type: str) -> ModuleType:
    """The fused module of ``op``'s ``backend`` for ``device_type`` tensors (``KeyError`` when there is none)."""
    path = get_op(op).modules[(backend, device_type)]
    return sys.modules.get(path) or importlib.import_module(path)


def backend_availability(op: Op | str, backend: str, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether ``op``'s ``backend`` runs ``dtype`` tensors on ``device``, and why not.

    Probed once per ``(op, backend, device, dtype)`` and cached (thread-safe; the first probe of a compiled
    backend builds or compiles it); `reprobe` forgets the answers. Deprecated aliases are accepted silently.
    """
    spec = get_op(op)
    backend = spec.aliases.get(backend, backend)
    if backend == REFERENCE:
        return True, "pure PyTorch"
    if backend not in ALGORITHMS:
        raise ValueError(f"backend must be one of {spec.backends}, got {backend!r}")
    dev = device if isinstance(device, torch.device) else torch.device(device)
    key = (spec.name, backend, str(dev), dtype)
    hit = _availability.get(key)  # the per-call path: a dict read needs no lock
    if hit is not None:
        return hit
    with _lock:
        if key not in _availability:
            _availability[key] = _probe(spec, backend, dev, dtype)
        return _availability[key]


# torch.compile calls backend_availability once while tracing and treats its result as a constant (its lock and
# lazy builds cannot be traced): what torch.compiler.assume_constant_result does, without importing torch._dynamo
# at `import parrnn`. The fullgraph tests fail if a torch release changes the marker.
backend_availability._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _probe(op: Op, backend: str, device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    if (backend, device.type) not in op.modules:
        return False, f"{op.name} has no {backend} kernel for {device.type} tensors"
    try:
        check = backend_module(op, backend, device.type).availability
        return check(device, dtype) if check.__code__.co_argcount else check()
    except Exception as exc:  # a backend that cannot even be imported is unavailable, never fatal
        return False, f"{type(exc).__name__}: {exc}"


def reprobe(op: Op | str | None = None) -> None:
    """Forget the cached availability (and the fallback warnings already given) of ``op``, or of every op: the
    next call probes again (after installing a compiler or CuPy, say). A backend module with a ``reprobe()``
    function forgets its own state too."""
    names = set(OPS) if op is None else {get_op(op).name}
    with _lock:
        for key in [k for k in _availability if k[0] in names]:
            del _availability[key]
        for key in [k for k in _warned if k.split(" ", 1)[0] in names]:
            _warned.discard(key)
        for name in names:
            for path in OPS[name].modules.values():
                module = sys.modules.get(path)
                if module is not None and callable(getattr(module, "reprobe", None)):
                    module.reprobe()


def available_backends(device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> dict[str, tuple[bool, str]]:
    """Every op's every backend on ``device`` for ``dtype``: ``{"<op> <backend>": (works_here, reason)}``, e.g.
    ``available_backends()["sru sequential"]`` or ``available_backends("cuda")["linear_recurrence scan"]``.

    Checking a compiled backend builds it on first use (a few seconds, cached on disk; CUDA kernels compile for
    the device).
    """
    dev = _device(device)
    _register_builtin()
    return {f"{name} {backend}": backend_availability(op, backend, dev, dtype)
            for name, op in OPS.items() for backend in op.backends}


def precompile(device: torch.device | str = "cpu",
               dtypes: Sequence[torch.dtype] = (torch.float32,)) -> dict[str, tuple[bool, str]]:
    """Build and load every op's kernels for ``device`` and each storage dtype in ``dtypes`` now: before a timed
    loop, CUDA-graph capture or forking workers. Returns ``{"<op> <backend> <dtype>": (ok, reason)}`` for every
    fused backend of every op on that kind of device; a failure is reported, not raised (``backend="auto"``
    falls back; an explicit backend raises the same reason when used).

    Example: ``parrnn.precompile("cuda:0", dtypes=[torch.bfloat16])``.
    """
    dev = _device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"precompile: device must be a cpu or cuda device, got {dev}")
    _register_builtin()
    if dev.type == "cpu":  # every op's CPU library at once, compiled in parallel where one is missing
        from parrnn.ops import build

        # a failure is reported below, per backend, by the availability checks
        with contextlib.suppress(Exception):
            build.build_all_cpu_libraries()
    report = {}
    for dtype in dtypes:
        for name, op in OPS.items():
            for backend, device_type in op.modules:
                if device_type == dev.type:
                    key = f"{name} {backend} {str(dtype).removeprefix('torch.')}"
                    report[key] = backend_availability(op, backend, dev, dtype)
    return report


def _device(device: torch.device | str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


# ---- the choice ---------------------------------------------------------------------------------------------------

def _candidates(op: Op, device_type: str, *, length: int, columns: int, linear: bool) -> Iterator[str]:
    return (rule.backend for rule in op.rules
            if rule.applies(device_type, length=length, columns=columns, linear=linear))


def choose(op: Op | str, backend: str, device: torch.device, dtype: torch.dtype, *, length: int, columns: int,
           linear: bool = True) -> str:
    """The backend an eager call runs: ``"reference"``, or a fused algorithm.

    ``"auto"``: the first rule of ``op`` that applies to ``length`` steps of ``columns`` columns and whose backend
    runs; none runs: the reference, with one ``RuntimeWarning`` per (op, backend, device, dtype) naming the
    reason. An explicit backend that cannot run raises (``ValueError`` for ``"scan"`` on a recurrence that is
    not linear, ``RuntimeError`` with the reason otherwise).
    """
    spec = get_op(op)
    if backend == REFERENCE:
        return backend
    if backend == AUTO:
        candidates = _candidates(spec, device.type, length=length, columns=columns, linear=linear)
        return _first_or_reference(spec, candidates, device, dtype)
    _check_explicit(spec, backend, device, dtype, linear)
    return backend


def graph_choice(op: Op | str, backend: str, device: torch.device, dtype: torch.dtype, *,
                 linear: bool = True) -> str:
    """The backend a traced graph records (``torch.compile``, ``torch.export``, ``torch.jit.trace``).

    ``"auto"`` stays ``"auto"``: the custom op chooses at run time from the concrete shapes (`run_time_choice`;
    a graph with a dynamic length keeps the per-call choice, and no thread count is read while tracing), unless
    no fused kernel of the device runs here: then ``"reference"`` (traced as plain ops), with one warning.
    An explicit backend is checked as in `choose`.
    """
    spec = get_op(op)
    if backend == AUTO:
        candidates = (rule.backend for rule in spec.rules
                      if rule.device == device.type and (linear or not rule.linear_only))
        return AUTO if _first_or_reference(spec, candidates, device, dtype) != REFERENCE else REFERENCE
    return choose(spec, backend, device, dtype, length=0, columns=0, linear=linear)


def run_time_choice(op: Op | str, backend: str, device: torch.device, dtype: torch.dtype, *, length: int,
                    columns: int, linear: bool = True) -> str:
    """The fused backend a custom op runs: ``backend`` itself (aliases mapped), or for ``"auto"`` (deferred by
    `graph_choice`) the first rule that applies to the concrete shapes and whose kernel runs. A graph holds no
    reference to fall back to: no runnable kernel raises ``RuntimeError`` with the reason."""
    spec = get_op(op)
    backend = spec.aliases.get(backend, backend)
    if backend != AUTO:
        return backend
    candidates = _candidates(spec, device.type, length=length, columns=columns, linear=linear)
    name, unavailable = auto.first_runnable(candidates,
                                            lambda name: backend_availability(spec, name, device, dtype))
    if name is not None:
        return name
    why = unavailable[1] if unavailable is not None else f"no backend=\"auto\" rule for {device.type} tensors"
    raise RuntimeError(f"parrnn: {spec.name}: no fused kernel runs on {device} for {dtype} ({why}); a compiled, "
                       "exported or scripted graph has no reference fallback: run the model eagerly")


def _first_or_reference(op: Op, candidates: Iterator[str], device: torch.device, dtype: torch.dtype) -> str:
    return auto.first_available(candidates, lambda name: backend_availability(op, name, device, dtype),
                                op=op.name, device=device, dtype=dtype, warned=_warned, stacklevel=6)


def _check_explicit(op: Op, backend: str, device: torch.device, dtype: torch.dtype, linear: bool) -> None:
    if backend == "scan" and not linear and op.scan_needs_linear:
        raise ValueError(op.scan_needs_linear)
    ok, why = backend_availability(op, backend, device, dtype)
    if not ok:
        raise RuntimeError(f"parrnn: {op.name} backend {backend!r} is unavailable on {device} for {dtype}: {why}")


# ---- how a call runs ----------------------------------------------------------------------------------------------

def exporting_onnx() -> bool:
    """True while ``torch.onnx.export`` runs. Without ``torch.onnx`` imported nothing exports, so this never
    imports it (that import costs about a second)."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def check_onnx_exporter() -> None:
    """Raise a clear error under the TorchScript-based ONNX exporter (``dynamo=False``), which cannot trace the
    ops' ONNX scans; every op's ONNX branch calls it first."""
    if not getattr(torch.compiler, "is_exporting", lambda: True)():  # absent in older torch
        raise RuntimeError("parrnn models export to ONNX with torch.onnx.export(..., dynamo=True); the "
                           "TorchScript-based exporter (dynamo=False) cannot trace the recurrences")


def has_dual(tensors: Sequence[Tensor | None]) -> bool:
    """Whether a tensor of ``tensors`` carries a forward-mode AD tangent (``torch.autograd.forward_ad``). Outside
    a ``dual_level`` context no tensor does, and nothing is unpacked."""
    if getattr(forward_ad, "_current_level", 0) < 0:
        return False
    return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def route(tensors: Sequence[Tensor | None]) -> str:
    """How a call with differentiable inputs ``tensors`` runs:

    * ``"onnx"``      -- ``torch.onnx.export`` traces: the op written in ONNX-exportable ops;
    * ``"reference"`` -- a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ...) or a forward-mode AD dual
      tensor: the reference, whose plain ops every transform differentiates and batches;
    * ``"graph"``     -- ``torch.compile``/``torch.export``/``torch.jit.trace`` trace: the registered custom op
      (with its autograd formula; transforms that dynamo traces see it too);
    * ``"autograd"``  -- eager, a gradient is needed: the fused forward and backward in an ``autograd.Function``;
    * ``"direct"``    -- eager, no gradient: the fused forward, called directly.
    """
    if tracing():  # (dynamo answers functorch_active() with True while it traces: not asked here)
        return "onnx" if exporting_onnx() else "graph"
    if functorch_active() or has_dual(tensors):
        return "reference"
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return "autograd"
    return "direct"


def hand_written_ok(tensors: Sequence[Tensor | None]) -> bool:
    """Whether a hand-written ``autograd.Function`` (the cells' fused gates, ``gru_rows``) may run on ``tensors``:
    eager, outside ``torch.func`` transforms and without forward-mode AD dual tensors (`route` ``"direct"`` or
    ``"autograd"``). Otherwise the caller runs plain ops, which every transform differentiates and tracers see."""
    return route(tensors) in ("direct", "autograd")


# ---- first-order-only backwards -----------------------------------------------------------------------------------

class _FirstOrderOnly(torch.autograd.Function):
    """Identity on ``grad``, tied into the graph through ``anchor`` (an input of the fused op that requires grad),
    whose backward raises `DoubleBackwardError`: marks a fused backward's gradient under ``create_graph=True`` so
    that differentiating it again fails with a message instead of silently giving zero."""

    @staticmethod
    def forward(ctx, grad: Tensor, anchor: Tensor, message: str) -> Tensor:  # type: ignore[override]
        ctx.message = message
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, _grad: Tensor) -> tuple[None, None, None]:  # type: ignore[override]
        raise DoubleBackwardError(ctx.message)


def first_order_only(op: Op | str, backend: str, grads: Sequence[Tensor | None],
                     inputs: Sequence[Tensor | None]) -> tuple[Tensor | None, ...]:
    """``grads`` of a fused backward over ``inputs`` (the op's differentiable inputs), as they are; under
    ``create_graph=True`` (grad mode on in an eager backward) each is marked so that a second backward through it
    raises `DoubleBackwardError` naming what supports double backward (``backend="reference"``)."""
    if not torch.is_grad_enabled() or tracing():
        return tuple(grads)
    anchor = next((t for t in inputs if t is not None and t.requires_grad), None)
    if anchor is None:
        return tuple(grads)
    spec = get_op(op)
    message = (f"parrnn: {spec.name}: the fused {backend!r} backend computes first-order gradients only; a "
               f"gradient of its gradient (double backward, create_graph=True) needs {spec.double_backward}")
    return tuple(None if g is None else _FirstOrderOnly.apply(g, anchor, message) for g in grads)


# ---- the ops ------------------------------------------------------------------------------------------------------

SRU = Op(
    "sru",
    modules={("sequential", "cpu"): "parrnn.ops.sru.sequential_cpu",
             ("sequential", "cuda"): "parrnn.ops.sru.sequential_cuda",
             ("scan", "cpu"): "parrnn.ops.sru.scan", ("scan", "cuda"): "parrnn.ops.sru.scan"},
    rules=(
        AutoRule("cpu", "scan", linear_only=True, min_threads=2, min_elements=1 << 23,
                 measurement="docs/scan.md, 'Measurements (CPU)'"),
        AutoRule("cpu", "sequential", measurement="docs/cpu-speed.md (the default kernel of the CPU)"),
        # The CUDA scan has never run on a GPU: it gets a row (with its thresholds) only once
        # benchmarks/gpu_check.sh has measured it against the sequential kernel.
        AutoRule("cuda", "sequential", measurement="the default kernel of CUDA devices (not yet timed on a GPU)"),
    ),
    aliases={"cpu": "sequential", "cuda": "sequential"},
    scan_needs_linear="backend='scan' needs the linear recurrence (version='v1'); the v2 peephole makes f_t depend "
                      "on c_{t-1}",
)

LINEAR_RECURRENCE = Op(
    "linear_recurrence",
    modules={("sequential", "cpu"): "parrnn.ops.linear_recurrence.sequential_cpu",
             ("scan", "cpu"): "parrnn.ops.linear_recurrence.scan_cpu",
             ("sequential", "cuda"): "parrnn.ops.linear_recurrence.sequential_cuda",
             ("scan", "cuda"): "parrnn.ops.linear_recurrence.scan_cuda"},
    rules=(
        AutoRule("cpu", "scan", min_length=4096, min_columns=32, max_columns_per_thread=1024, min_threads=2,
                 measurement="docs/linear-recurrence.md, section backend=\"auto\": the scan/sequential sweep of "
                             "`python benchmarks/linear_recurrence_speed.py --sweep` on 2 threads"),
        AutoRule("cpu", "sequential", measurement="docs/linear-recurrence.md: the default CPU kernel"),
        AutoRule("cuda", "sequential", measurement="not yet measured on a GPU: the device's default kernel"),
    ),
)

GRU_ROWS = Op(
    "gru_rows",
    modules={("sequential", "cpu"): "parrnn.ops.gru_rows.fused_cpu"},
    rules=(AutoRule("cpu", "sequential", measurement="docs/sliced.md: SlicedRNN(GRU) against nn.GRU on CPU"),),
    double_backward=("torch.nn.GRU's own backward: take the gradients with torch.func.grad (SlicedRNN then runs "
                     "nn.GRU, as backend=\"reference\" does for the other ops)"),
)


def _register_builtin() -> None:
    if not OPS:
        for op in (SRU, LINEAR_RECURRENCE, GRU_ROWS):
            register(op)


_register_builtin()

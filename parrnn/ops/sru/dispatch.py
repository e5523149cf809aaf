"""Backend selection and the ``torch.library`` custom op for the SRU recurrence.

The layers call [sru_recurrence][parrnn.ops.sru.dispatch.sru_recurrence]; it validates every argument
([parrnn.ops.sru.contract.validate][]) and routes to

* ``"reference"`` -- `parrnn.ops.sru.reference`, autograd through a Python loop (any device, any dtype);
* ``"cpu"``       -- `parrnn.ops.sru.sequential_cpu`, fused C++ forward and backward (OpenMP + SIMD over columns);
* ``"cuda"``      -- `parrnn.ops.sru.sequential_cuda`, fused CUDA kernels launched through CuPy;
* ``"scan"``      -- `parrnn.ops.sru.scan`, time-parallel chunked scan for the linear (v1) SRU (CPU or CUDA);
* ``"auto"``      -- the first row of [AUTO_RULES][parrnn.ops.sru.dispatch.AUTO_RULES] that applies and works.

The fused backends share one contract (a *fused backend module*), over one structure of the recurrence's inputs,
`parrnn.ops.sru.contract.RecurrenceArgs`:

    availability(...) -> (ok: bool, reason: str)     # per device (and dtype, where kernels compile per dtype)
    forward(args) -> (h, c_n, c_all)                 # c_all (L, N, C): every c_t, saved for backward
    forward_validated(args) -> (h, c_n, c_all)       # forward without validating args again
    backward(args, grad_h, grad_c_n, c_all)
        -> (grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)   # None where the input was None

and are reached through the custom op ``parrnn::sru_forward`` (with autograd and a fake implementation; its
``backend`` argument is the same word the user passes), so ``torch.compile`` and ``torch.export`` trace SRU
models without graph breaks. The custom ops' schemas are flat (tensors and scalars, as ``torch.library`` needs):
`sru_forward_op` and `sru_backward_op` pack their inputs into a `RecurrenceArgs` for the backend; `_backward`
unpacks the saved one into `sru_backward_op`.
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

from parrnn.ops import auto
from parrnn.ops.sru import reference
from parrnn.ops.sru.contract import RecurrenceArgs, validate
from parrnn.ops.tracing import functorch_active

BACKENDS = ("reference", "cpu", "cuda", "scan")
_FUSED_MODULES = {"cpu": "parrnn.ops.sru.sequential_cpu", "cuda": "parrnn.ops.sru.sequential_cuda",
                  "scan": "parrnn.ops.sru.scan"}
_availability: dict[tuple[str, str, torch.dtype], tuple[bool, str]] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def check_backend(name: str) -> None:
    """``ValueError`` unless ``name`` is a backend word users may pass: one of `BACKENDS` or ``"auto"``."""
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {name!r}")


def _module(name: str) -> ModuleType:
    path = _FUSED_MODULES[name]
    return sys.modules.get(path) or importlib.import_module(path)


def _default_device(name: str) -> torch.device:
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda" if name == "cuda" else "cpu")


def backend_availability(name: str, device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether backend ``name`` works for tensors of ``dtype`` on ``device``, and why not (cached).

    ``device`` defaults to the backend's own kind (the current CUDA device for ``cuda``, the CPU otherwise).
    For ``cuda`` (and ``scan`` on a CUDA device) working means *compiled and loaded* for that device and dtype:
    the first check compiles the kernels; a failure's reason carries the NVRTC log.
    """
    if name == "reference":
        return True, "pure PyTorch"
    if name not in _FUSED_MODULES:
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {name!r}")
    if device is None:
        dev = _default_device(name)
    else:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    key = (name, str(dev), dtype)
    hit = _availability.get(key)  # the per-call path: a dict read needs no lock
    if hit is not None:
        return hit
    with _lock:
        if key not in _availability:
            _availability[key] = _check(name, dev, dtype)
        return _availability[key]


def _check(name: str, device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    if name in ("cpu", "cuda") and device.type != name:
        return False, f"the {name} backend runs on {name} tensors, not {device.type}"
    try:
        mod = _module(name)
        return mod.availability() if name == "cpu" else mod.availability(device, dtype)
    except Exception as exc:  # a backend that cannot even be imported is unavailable, never fatal
        return False, f"{type(exc).__name__}: {exc}"


# torch.compile must call backend_availability once while tracing and treat its result as a constant (its lock and
# lazy builds cannot be traced). This is exactly what torch.compiler.assume_constant_result does; setting the marker
# directly avoids importing torch._dynamo at `import parrnn` (~1.2 s). The fullgraph tests in
# tests/test_ecosystem.py fail if a torch release changes the marker.
backend_availability._dynamo_marked_constant = True  # type: ignore[attr-defined]


def available_backends() -> dict[str, tuple[bool, str]]:
    """Report every backend on its own kind of device (float32): ``{name: (works_here, reason)}``.

    Checking ``cpu`` compiles its C++ library on first use (a few seconds, cached on disk); checking ``cuda``
    compiles its kernels for the current GPU. ``scan`` is reported for the CPU.
    """
    return {name: backend_availability(name) for name in BACKENDS}


def precompile(device: torch.device | str = "cpu",
               dtypes: tuple[torch.dtype, ...] | list[torch.dtype] = (torch.float32,)) -> dict[str, tuple[bool, str]]:
    """Compile and load every kernel a model may run on ``device`` for each storage dtype in ``dtypes``, now:
    before CUDA-graph capture, a timed loop, or forking workers.

    On the CPU that is the ``cpu`` backend's library and the CPU scan; on a CUDA device the ``cuda`` kernels and
    the CUDA scan's kernels, per dtype. Returns ``{"<backend> <dtype>": (ok, reason)}``; a failure is reported,
    not raised (``backend="auto"`` falls back; an explicit backend raises with the same reason when used).

    Example: ``parrnn.precompile("cuda:0", dtypes=[torch.bfloat16])``.
    """
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"precompile: device must be a cpu or cuda device, got {dev}")
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    report = {}
    for dtype in dtypes:
        for name in (dev.type, "scan"):
            report[f"{name} {str(dtype).removeprefix('torch.')}"] = backend_availability(name, dev, dtype)
    return report


# ---- backend="auto" -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AutoRule:
    """One row of the ``backend="auto"`` table: on ``device`` tensors, run ``backend`` when the problem qualifies.

    ``measurement`` names the docs section with the run that justifies the row (the numbers live there). A row
    without a measurement on its kind of device may only name that device's default kernel (the one every input
    can run), never an alternative to it.
    """

    device: str
    backend: str
    measurement: str
    linear_only: bool = False
    min_threads: int = 1
    min_elements: int = 0  # L * N * C

    def applies(self, device: torch.device, *, linear: bool, batch_columns: int, length: int) -> bool:
        if device.type != self.device or (self.linear_only and not linear):
            return False
        if batch_columns * length < self.min_elements:
            return False
        # torch.get_num_threads() is asked only when a row needs it (torch.compile cannot trace it)
        return self.min_threads <= 1 or torch.get_num_threads() >= self.min_threads


#: ``backend="auto"``: the first row that applies to the call and whose backend works there (the last row of a
#: device is its default kernel; if that one does not work, one warning and the reference loop).
AUTO_RULES: tuple[AutoRule, ...] = (
    AutoRule("cpu", "scan", linear_only=True, min_threads=2, min_elements=1 << 23,
             measurement="docs/scan.md, 'Measurements (CPU)'"),
    AutoRule("cpu", "cpu", measurement="docs/cpu-speed.md (the default kernel of the CPU)"),
    # The CUDA scan has never run on a GPU: it gets a row (with its thresholds) only once benchmarks/gpu_check.sh
    # has measured it against the cuda backend.
    AutoRule("cuda", "cuda", measurement="the default kernel of CUDA devices (not yet timed on a GPU)"),
)


def auto_backend(device: torch.device, *, linear: bool, batch_columns: int, length: int,
                 dtype: torch.dtype = torch.float32) -> str:
    """The backend ``backend="auto"`` runs for this call (see [AUTO_RULES][parrnn.ops.sru.dispatch.AUTO_RULES])."""
    candidates = (rule.backend for rule in AUTO_RULES
                  if rule.applies(device, linear=linear, batch_columns=batch_columns, length=length))
    return auto.first_available(candidates, lambda name: backend_availability(name, device, dtype),
                                op="sru_recurrence", device=device, dtype=dtype, warned=_warned, stacklevel=4)


def resolve_backend(backend: str, device: torch.device, *, linear: bool, batch_columns: int, length: int,
                    dtype: torch.dtype = torch.float32) -> str:
    """Pick the backend for one call.

    ``backend="auto"``: [auto_backend][parrnn.ops.sru.dispatch.auto_backend]. An explicit backend that cannot run
    raises ``RuntimeError`` with the reason (for ``cuda``, the NVRTC log).
    """
    if backend == "reference":
        return backend
    if backend == "auto":
        return auto_backend(device, linear=linear, batch_columns=batch_columns, length=length, dtype=dtype)
    if backend in ("cpu", "cuda") and device.type != backend:
        raise ValueError(f"backend={backend!r} needs tensors on a {backend} device, got device {device}")
    if backend == "scan" and not linear:
        raise ValueError("backend='scan' needs the linear recurrence (version='v1'); "
                         "the v2 peephole makes f_t depend on c_{t-1}")
    ok, why = backend_availability(backend, device, dtype)
    if not ok:
        raise RuntimeError(f"parrnn: backend {backend!r} is unavailable on {device} for {dtype}: {why}")
    return backend


def _fused_module(backend: str) -> ModuleType:
    return _module(backend)


#: The custom ops' schemas are flat (``torch.library`` takes tensors and scalars): the fields of `RecurrenceArgs`,
#: its tensors then its options, written once here.
_ARG_TENSORS = "Tensor u, Tensor? x, Tensor? weight_c, Tensor bias, Tensor c0, Tensor? mask_pad, Tensor? drop_mask"
_ARG_OPTIONS = "bool bidirectional, bool use_tanh, float scale_x"


@torch.library.custom_op(
    "parrnn::sru_forward", mutates_args=(),
    schema=f"({_ARG_TENSORS}, {_ARG_OPTIONS}, str backend) -> (Tensor, Tensor, Tensor)")
def sru_forward_op(*inputs: object) -> tuple[Tensor, Tensor, Tensor]:
    """Fused forward of ``(*RecurrenceArgs, backend)``: ``(h, c_n, c_all)`` on ``backend`` (``"cpu"``, ``"cuda"``
    or ``"scan"``)."""
    *fields, backend = inputs
    return _fused_module(backend).forward(RecurrenceArgs(*fields))  # type: ignore[arg-type]


@sru_forward_op.register_fake
def _(*inputs):
    u, c0 = inputs[0], inputs[4]
    length, batch, _, cols = u.shape
    state_dtype = torch.promote_types(u.dtype, torch.float32)
    return (u.new_empty(length, batch, cols), u.new_empty(batch, cols, dtype=c0.dtype),
            u.new_empty(length, batch, cols, dtype=state_dtype))


@torch.library.custom_op(
    "parrnn::sru_backward", mutates_args=(),
    schema=f"(Tensor grad_h, Tensor grad_c_n, {_ARG_TENSORS}, Tensor c_all, {_ARG_OPTIONS}, str backend) -> "
           "(Tensor, Tensor, Tensor, Tensor, Tensor)")
def sru_backward_op(*inputs: object) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused backward of ``(grad_h, grad_c_n, *RecurrenceArgs tensors, c_all, *RecurrenceArgs options, backend)``.
    Returns ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)``; a gradient whose input was ``None`` comes
    back as an empty tensor (custom ops cannot return ``None``)."""
    args, grad_h, grad_c_n, c_all, backend = _backward_inputs(inputs)
    grads = _fused_module(backend).backward(args, grad_h, grad_c_n, c_all)
    return tuple(args.u.new_empty(0) if g is None else g for g in grads)  # type: ignore[return-value]


@sru_backward_op.register_fake
def _(*inputs):
    args = _backward_inputs(inputs)[0]

    def like(t: Tensor | None) -> Tensor:
        return args.u.new_empty(0) if t is None else torch.empty_like(t)
    return (torch.empty_like(args.u), like(args.x), like(args.weight_c), torch.empty_like(args.bias),
            torch.empty_like(args.c0))


def _backward_inputs(inputs: tuple) -> tuple[RecurrenceArgs, Tensor, Tensor, Tensor, str]:
    """`sru_backward_op`'s flat inputs as ``(args, grad_h, grad_c_n, c_all, backend)``."""
    grad_h, grad_c_n, *tensors, c_all, bidirectional, use_tanh, scale_x, backend = inputs
    return RecurrenceArgs(*tensors, bidirectional, use_tanh, scale_x), grad_h, grad_c_n, c_all, backend


def _setup_context(ctx, inputs, output):
    *fields, backend = inputs  # sru_forward_op's flat inputs: the RecurrenceArgs fields, then backend
    ctx.save_for_backward(*fields[:7], output[2])
    ctx.options = (*fields[7:], backend)


def _backward(ctx, grad_h, grad_c_n, _grad_c_all):
    *tensors, c_all = ctx.saved_tensors
    *options, backend = ctx.options
    args = RecurrenceArgs(*tensors, *options)
    grad_h = torch.zeros_like(c_all, dtype=args.u.dtype) if grad_h is None else grad_h
    grad_c_n = torch.zeros_like(args.c0) if grad_c_n is None else grad_c_n
    gu, gx, gwc, gb, gc0 = sru_backward_op(grad_h.contiguous(), grad_c_n.contiguous(), *tensors, c_all, *options,
                                           backend)
    return (gu, None if args.x is None else gx, None if args.weight_c is None else gwc, gb, gc0,
            None, None, None, None, None, None)


sru_forward_op.register_autograd(_backward, setup_context=_setup_context)


def sru_recurrence(
    u: Tensor,
    x: Tensor | None,
    weight_c: Tensor | None,
    bias: Tensor,
    c0: Tensor,
    mask_pad: Tensor | None,
    drop_mask: Tensor | None,
    bidirectional: bool = False,
    use_tanh: bool = False,
    scale_x: float = 1.0,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """The SRU recurrence on the chosen backend; same contract as [parrnn.ops.sru.reference.sru_recurrence][].

    Every argument is validated first (``ValueError``/``TypeError`` naming it), whatever the backend.
    Under TorchScript there is no backend choice and no validation (that is Python): ``backend="scan"`` runs the
    scan, every other backend the fused kernel of the tensors' device, through ``torch.ops.parrnn.sru_forward``.
    """
    if torch.jit.is_scripting():
        name = "scan" if backend == "scan" else ("cuda" if u.is_cuda else "cpu")
    else:
        args = RecurrenceArgs(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x)
        # ONNX export traces (TorchScript exporter) or compiles (dynamo exporter); is_in_onnx_export() costs more
        if (torch.jit.is_tracing() or torch.compiler.is_compiling()) and torch.onnx.is_in_onnx_export():
            return _export_recurrence(args)
        name = _validated_backend(args, backend)
        if name == "reference" or functorch_active():  # torch.func transforms: the ops they can differentiate
            return reference.sru_recurrence(*args[:7], bidirectional=bidirectional, use_tanh=use_tanh,
                                            scale_x=scale_x)
        if _direct_call_ok(args):  # inference: skip the custom op's per-call cost
            h, c_n, _ = _fused_module(name).forward_validated(args)  # (it makes its arguments contiguous itself)
            return h, c_n
    h, c_n, _ = torch.ops.parrnn.sru_forward(
        u.contiguous(), _contiguous(x), _contiguous(weight_c), bias.contiguous(), c0.contiguous(),
        _contiguous(mask_pad), _contiguous(drop_mask), bidirectional, use_tanh, float(scale_x), name)
    return h, c_n


@torch.jit.unused
def _export_recurrence(args: RecurrenceArgs) -> tuple[Tensor, Tensor]:
    """While ``torch.onnx.export`` traces: the recurrence as one scan (an ONNX ``Scan``), since ONNX runtimes
    cannot run ``parrnn::sru_forward``."""
    from parrnn.ops.sru import onnx as onnx_export

    onnx_export.check_exporter()
    return onnx_export.recurrence(args)


@torch.jit.unused
def _validated_backend(args: RecurrenceArgs, backend: str) -> str:
    """Validate every argument of [sru_recurrence][parrnn.ops.sru_recurrence] (once: the fused backends'
    ``forward_validated`` does not validate again) and resolve ``backend`` (eager only: TorchScript skips it)."""
    check_backend(backend)
    length, batch, _, cols = validate(args, check_dtype=backend not in ("reference", "auto"))
    return resolve_backend(backend, args.u.device, linear=args.weight_c is None, batch_columns=batch * cols,
                           length=length, dtype=args.u.dtype)


@torch.jit.unused
def _direct_call_ok(args: RecurrenceArgs) -> bool:
    """Whether the fused backend may be called without the custom op: nothing needs a gradient and nothing
    traces (torch.compile / export and ``torch.jit.trace``, and so ONNX export, must see ``parrnn::sru_forward``)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:5]))


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()

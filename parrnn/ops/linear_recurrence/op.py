"""`linear_recurrence`: backend choice and the ``torch.library`` custom op with autograd.

The fused backends share one contract (a *backend module*: `sequential_cpu`, `scan_cpu`, `sequential_cuda`,
`scan_cuda`), on validated arguments (`contract.Operands`; ``h0`` ``(N, C)`` in the state dtype or ``None``,
``lengths`` ``(N,)`` int64 or ``None``):

    availability(device, dtype) -> (ok: bool, reason: str)
    forward(a, b, h0, lengths, reverse) -> (h, h_n)              # h (L, N, C) storage dtype, h_n state dtype
    backward(grad_h, grad_h_n, a, h, h0, lengths, reverse)
        -> (grad_a, grad_b, grad_h0)                             # grad_h0 None when h0 is None

and are reached through the custom ops ``parrnn::linear_recurrence`` / ``parrnn::linear_recurrence_backward``
(autograd and fake implementations registered), so ``torch.compile(fullgraph=True)`` and ``torch.export`` trace
through. Under ``torch.onnx.export`` the recurrence becomes an ONNX ``Scan`` (`parrnn.ops.linear_recurrence.onnx`).
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
from parrnn.ops.linear_recurrence import reference
from parrnn.ops.linear_recurrence.contract import check_backend, state_dtype_for, validate

__all__ = ["AUTO_RULES", "AutoRule", "auto_backend", "backend_availability", "linear_recurrence", "resolve_backend"]

_MODULES = {
    ("sequential", "cpu"): "parrnn.ops.linear_recurrence.sequential_cpu",
    ("scan", "cpu"): "parrnn.ops.linear_recurrence.scan_cpu",
    ("sequential", "cuda"): "parrnn.ops.linear_recurrence.sequential_cuda",
    ("scan", "cuda"): "parrnn.ops.linear_recurrence.scan_cuda",
}
_availability: dict[tuple[str, str, torch.dtype], tuple[bool, str]] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def backend_module(backend: str, device_type: str) -> ModuleType:
    """The module of fused ``backend`` (``"sequential"`` or ``"scan"``) for ``device_type`` (``"cpu"``/``"cuda"``)."""
    path = _MODULES[(backend, device_type)]
    return sys.modules.get(path) or importlib.import_module(path)


def backend_availability(backend: str, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether ``backend`` runs ``dtype`` tensors on ``device``, and why not (cached; the first check of a
    compiled backend builds it)."""
    dev = torch.device(device)
    if backend == "reference":
        return True, "pure PyTorch"
    key = (backend, str(dev), dtype)
    hit = _availability.get(key)
    if hit is not None:
        return hit
    with _lock:
        if key not in _availability:
            if (backend, dev.type) not in _MODULES:
                _availability[key] = (False, f"no {backend} kernel for {dev.type} tensors")
            else:
                try:
                    _availability[key] = backend_module(backend, dev.type).availability(dev, dtype)
                except Exception as exc:  # a backend that cannot even be imported is unavailable, never fatal
                    _availability[key] = (False, f"{type(exc).__name__}: {exc}")
        return _availability[key]


# traced as a constant by torch.compile (see parrnn.ops.sru.dispatch.backend_availability)
backend_availability._dynamo_marked_constant = True  # type: ignore[attr-defined]


# ---- backend="auto" -----------------------------------------------------------------------------------------------

def _num_threads() -> int:
    """``torch.get_num_threads()``, which torch.compile reads once while tracing (a constant of the graph)."""
    return torch.get_num_threads()


_num_threads._dynamo_marked_constant = True  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AutoRule:
    """One row of the ``backend="auto"`` table: on ``device`` tensors, run ``backend`` when the call has at least
    ``min_length`` steps, at least ``min_columns`` and at most ``max_columns_per_thread`` times the thread count
    columns (``N * C``), and at least ``min_threads`` threads. ``measurement`` names the run that justifies the row
    (its numbers are in docs/linear-recurrence.md)."""

    device: str
    backend: str
    measurement: str
    min_length: int = 0
    min_columns: int = 0
    max_columns_per_thread: int | None = None
    min_threads: int = 1

    def applies(self, device: torch.device, columns: int, length: int) -> bool:
        if device.type != self.device or length < self.min_length or columns < self.min_columns:
            return False
        if self.max_columns_per_thread is None and self.min_threads <= 1:
            return True
        threads = _num_threads()
        if threads < self.min_threads:
            return False
        return self.max_columns_per_thread is None or columns <= self.max_columns_per_thread * threads


#: The first row that applies and whose backend works is used; the last row of a device is its default kernel.
AUTO_RULES: tuple[AutoRule, ...] = (
    AutoRule("cpu", "scan", min_length=4096, min_columns=32, max_columns_per_thread=1024, min_threads=2,
             measurement="docs/linear-recurrence.md, section backend=\"auto\": the scan/sequential sweep of "
                         "`python benchmarks/linear_recurrence_speed.py --sweep` on 2 threads"),
    AutoRule("cpu", "sequential", measurement="docs/linear-recurrence.md: the default CPU kernel"),
    AutoRule("cuda", "sequential", measurement="not yet measured on a GPU: the device's default kernel"),
)


def auto_backend(device: torch.device, columns: int, length: int, dtype: torch.dtype = torch.float32) -> str:
    """The backend ``backend="auto"`` runs for ``length`` steps of ``columns`` (``N * C``) columns."""
    candidates = (rule.backend for rule in AUTO_RULES if rule.applies(device, columns, length))
    return auto.first_available(candidates, lambda name: backend_availability(name, device, dtype),
                                op="linear_recurrence", device=device, dtype=dtype, warned=_warned, stacklevel=6)


def resolve_backend(backend: str, device: torch.device, columns: int, length: int, dtype: torch.dtype) -> str:
    """The backend one call runs: ``auto`` by `AUTO_RULES`; an explicit one that cannot run raises
    ``RuntimeError`` with the reason."""
    check_backend(backend)
    if backend == "reference":
        return backend
    if backend == "auto":
        return auto_backend(device, columns, length, dtype)
    ok, why = backend_availability(backend, device, dtype)
    if not ok:
        raise RuntimeError(f"parrnn: linear_recurrence backend {backend!r} is unavailable on {device} for {dtype}: "
                           f"{why}")
    return backend


def _deferred_auto(device: torch.device, dtype: torch.dtype) -> str:
    """``backend="auto"`` while torch.compile, torch.export or TorchScript tracing reads the call: the lengths may
    be symbolic, so the choice is left to the custom op at run time (``"auto"``), unless no fused kernel runs here
    (then the reference, traced as plain ops)."""
    candidates = (rule.backend for rule in AUTO_RULES if rule.device == device.type)
    name = auto.first_available(candidates, lambda name: backend_availability(name, device, dtype),
                                op="linear_recurrence", device=device, dtype=dtype, warned=_warned, stacklevel=5)
    return "reference" if name == "reference" else "auto"


def _concrete(backend: str, a: Tensor) -> str:
    """The fused backend the custom op runs for ``a`` ``(L, N, C)``: ``backend``, or for ``"auto"`` (a deferred
    choice) the first `AUTO_RULES` row that applies and whose kernel runs. A graph holds no reference to fall
    back to, so no runnable kernel raises ``RuntimeError`` with the reason."""
    if backend != "auto":
        return backend
    columns, length = a.size(1) * a.size(2), a.size(0)
    candidates = (rule.backend for rule in AUTO_RULES if rule.applies(a.device, columns, length))
    name, unavailable = auto.first_runnable(candidates,
                                            lambda name: backend_availability(name, a.device, a.dtype))
    if name is not None:
        return name
    why = unavailable[1] if unavailable is not None else f"no backend=\"auto\" rule for {a.device.type} tensors"
    raise RuntimeError(f"parrnn: linear_recurrence: no fused kernel runs on {a.device} for {a.dtype} ({why}); a "
                       "compiled, exported or scripted graph has no reference fallback: run the model eagerly")


# ---- the custom op ------------------------------------------------------------------------------------------------

@torch.library.custom_op("parrnn::linear_recurrence", mutates_args=())
def linear_recurrence_op(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool,
                         backend: str) -> tuple[Tensor, Tensor]:
    """Fused forward on ``backend`` (``"sequential"``/``"scan"``, or ``"auto"``: chosen here, from the concrete
    shapes, so a compiled or exported graph keeps the choice per call): ``(h, h_n)``, ``h_n`` in the state dtype."""
    return backend_module(_concrete(backend, a), a.device.type).forward(a, b, h0, lengths, reverse)


@linear_recurrence_op.register_fake
def _(a, b, h0, lengths, reverse, backend):
    return torch.empty_like(a), a.new_empty(a.shape[1:], dtype=state_dtype_for(a.dtype))


@torch.library.custom_op("parrnn::linear_recurrence_backward", mutates_args=())
def linear_recurrence_backward_op(grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None,
                                  lengths: Tensor | None, reverse: bool, backend: str
                                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Fused backward: ``(grad_a, grad_b, grad_h0)``; ``grad_h0`` is an empty tensor when ``h0`` is None."""
    grad_a, grad_b, grad_h0 = backend_module(_concrete(backend, a), a.device.type).backward(
        grad_h, grad_h_n, a, h, h0, lengths, reverse)
    return grad_a, grad_b, a.new_empty(0) if grad_h0 is None else grad_h0


@linear_recurrence_backward_op.register_fake
def _(grad_h, grad_h_n, a, h, h0, lengths, reverse, backend):
    return torch.empty_like(a), torch.empty_like(a), a.new_empty(0) if h0 is None else torch.empty_like(h0)


def _setup_context(ctx, inputs, output):
    a, _b, h0, lengths, reverse, backend = inputs
    ctx.save_for_backward(a, output[0], h0, lengths)
    ctx.options = (reverse, backend)


def _backward(ctx, grad_h, grad_h_n):
    a, h, h0, lengths = ctx.saved_tensors
    reverse, backend = ctx.options
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h.contiguous()
    if grad_h_n is None:
        grad_h_n = a.new_zeros(a.shape[1:], dtype=state_dtype_for(a.dtype))
    grad_a, grad_b, grad_h0 = linear_recurrence_backward_op(grad_h, grad_h_n.contiguous(), a, h, h0, lengths,
                                                            reverse, backend)
    return grad_a, grad_b, None if h0 is None else grad_h0, None, None, None


linear_recurrence_op.register_autograd(_backward, setup_context=_setup_context)


# ---- the public function ------------------------------------------------------------------------------------------

def linear_recurrence(a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None,
                      mask: Tensor | None = None, reverse: bool = False, backend: str = "auto"
                      ) -> tuple[Tensor, Tensor]:
    """``h_t = a_t * h_{t-1} + b_t`` per column, fused forward and backward: ``(h, h_n)``.

    Same contract as [parrnn.ops.linear_recurrence.reference.linear_recurrence][] (math, padding, dtypes).

    Args:
        a: ``(L, N, C)`` decay; float32, float64, bfloat16 or float16 (the state is float32, float64 for float64).
        b: ``(L, N, C)`` input, ``a``'s dtype and device.
        h0: ``(N, C)`` initial state (``a``'s dtype or the state dtype), or ``None`` for zeros.
        lengths: ``(N,)`` integers in ``[1, L]``: steps ``t >= lengths[n]`` are padding (identity steps, output
            0, zero gradients; NaN/inf stored there never leaks). Or ``None``.
        mask: ``(L, N)`` bool, ``True`` on padded steps (a suffix of each sequence); the alternative to ``lengths``.
        reverse: run each sequence backwards, from its last valid step to step 0.
        backend: ``"auto"`` (by `AUTO_RULES`), ``"reference"``, ``"sequential"`` (fused, threads over columns) or
            ``"scan"`` (chunked time-parallel scan); the last two run the kernel of the tensors' device.

    Returns:
        ``h`` ``(L, N, C)`` in ``a``'s dtype and ``h_n`` ``(N, C)`` (state after each sequence's last valid step) in
        ``h0``'s dtype (``a``'s when ``h0`` is None).

    Under torch.compile, torch.export and TorchScript, ``"auto"`` is chosen by the custom op at run time from the
    concrete shapes (a graph with a dynamic length keeps the per-call choice). Under TorchScript there is no
    validation, ``"reference"`` runs the sequential kernel of the tensors' device, and ``mask`` is not accepted
    (give ``lengths``).

    Batch-first data ``(N, L, C)``: pass ``a.transpose(0, 1)`` and ``b.transpose(0, 1)`` and transpose ``h`` back;
    the kernels read time-major contiguous memory, so non-contiguous inputs are copied once.
    """
    if torch.jit.is_scripting():
        return _scripted(a, b, h0, lengths, mask, reverse, backend)
    else:  # noqa: RET505 (TorchScript compiles only the branch above)
        return _eager(a, b, h0, lengths, mask, reverse, backend)


def _eager(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, mask: Tensor | None, reverse: bool,
           backend: str) -> tuple[Tensor, Tensor]:
    """`linear_recurrence` outside TorchScript: validated, exported as ONNX ops, or run on the chosen backend."""
    ops = validate(a, b, h0, lengths, mask, reverse)
    if (torch.jit.is_tracing() or torch.compiler.is_compiling()) and torch.onnx.is_in_onnx_export():
        from parrnn.ops.linear_recurrence import onnx as onnx_export
        from parrnn.ops.sru import onnx as sru_onnx

        sru_onnx.check_exporter()  # the same clear error under the TorchScript-based exporter
        return onnx_export.run(ops, reverse)
    length, batch, cols = a.shape
    if backend == "auto" and (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        name = _deferred_auto(a.device, a.dtype)
    else:
        name = resolve_backend(backend, a.device, batch * cols, length, a.dtype)
    if name == "reference":
        return reference.run(ops, reverse)
    acc = state_dtype_for(a.dtype)
    h0_ = None if ops.h0 is None else ops.h0.to(acc).contiguous()
    a_, b_ = a.contiguous(), b.contiguous()
    if _direct_call_ok(a, b, ops.h0):  # inference: skip the custom op's per-call cost
        h, h_n = backend_module(name, a.device.type).forward(a_, b_, h0_, ops.lengths, reverse)
    else:
        h, h_n = torch.ops.parrnn.linear_recurrence(a_, b_, h0_, ops.lengths, reverse, name)
    return h, h_n.to(ops.state_dtype)


def _scripted(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, mask: Tensor | None, reverse: bool,
              backend: str) -> tuple[Tensor, Tensor]:
    """`linear_recurrence` under TorchScript, through the custom op and without validation (Python): ``"scan"``
    runs the scan, ``"auto"`` is chosen by the op per call, ``"reference"`` runs the sequential kernel."""
    if mask is not None:
        raise ValueError("linear_recurrence under TorchScript takes lengths, not mask")
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    out_dtype = a.dtype if h0 is None else h0.dtype
    h0_: Tensor | None = None
    if h0 is not None:
        h0_ = h0.to(acc).contiguous()
    counts: Tensor | None = None
    if lengths is not None:
        counts = lengths.to(device=a.device, dtype=torch.int64).contiguous()
    name = backend if backend == "scan" or backend == "auto" else "sequential"  # "auto": chosen by the op per call
    h, h_n = torch.ops.parrnn.linear_recurrence(a.contiguous(), b.contiguous(), h0_, counts, reverse, name)
    return h, h_n.to(out_dtype)


def _direct_call_ok(a: Tensor, b: Tensor, h0: Tensor | None) -> bool:
    """Nothing needs a gradient and nothing traces: the fused forward may run without the custom op."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, b, h0)))

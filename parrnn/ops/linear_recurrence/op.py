"""`linear_recurrence`: the op over the shared backend choice of `parrnn.ops.registry` (op
``"linear_recurrence"``), its ``torch.library`` custom op and autograd.

The fused backends share one contract (a *backend module*: `sequential_cpu`, `scan_cpu`, `sequential_cuda`,
`scan_cuda`), on validated arguments (`contract.Operands`; ``h0`` ``(N, C)`` in the state dtype or ``None``,
``lengths`` ``(N,)`` int64 or ``None``):

    availability(device, dtype) -> (ok: bool, reason: str)
    forward(a, b, h0, lengths, reverse) -> (h, h_n)              # h (L, N, C) storage dtype, h_n state dtype
    backward(grad_h, grad_h_n, a, h, h0, lengths, reverse)
        -> (grad_a, grad_b, grad_h0)                             # grad_h0 None when h0 is None

How a call runs is `parrnn.ops.registry.route`'s: eager calls use the module directly (an ``autograd.Function``
when a gradient is needed); ``torch.compile(fullgraph=True)``, ``torch.export`` and TorchScript go through the
custom ops ``parrnn::linear_recurrence`` / ``parrnn::linear_recurrence_backward`` (autograd and fake
implementations registered; ``"auto"`` chosen inside the op from the concrete shapes); ``torch.func`` transforms
and forward-mode AD run the reference; under ``torch.onnx.export`` the recurrence becomes an ONNX ``Scan``
(`parrnn.ops.linear_recurrence.onnx`).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from parrnn.ops import registry
from parrnn.ops.linear_recurrence import reference
from parrnn.ops.linear_recurrence.contract import Operands, check_backend, state_dtype_for, validate

__all__ = ["AUTO_RULES", "backend_availability", "backend_module", "linear_recurrence", "resolve_backend"]

OP = registry.LINEAR_RECURRENCE
#: The ``backend="auto"`` table (`parrnn.ops.registry.AutoRule`): the first row that applies and whose backend
#: works is used; the last row of a device is its default kernel.
AUTO_RULES = OP.rules


def backend_module(backend: str, device_type: str) -> ModuleType:
    """The module of fused ``backend`` (``"sequential"`` or ``"scan"``) for ``device_type`` (``"cpu"``/``"cuda"``)."""
    return registry.backend_module(OP, backend, device_type)


def backend_availability(backend: str, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether ``backend`` runs ``dtype`` tensors on ``device``, and why not (cached; the first check of a
    compiled backend builds it). See `parrnn.ops.registry.backend_availability`."""
    return registry.backend_availability(OP, backend, device, dtype)


def auto_backend(device: torch.device, columns: int, length: int, dtype: torch.dtype = torch.float32) -> str:
    """The backend an eager ``backend="auto"`` call runs for ``length`` steps of ``columns`` (``N * C``) columns."""
    return registry.choose(OP, "auto", device, dtype, length=length, columns=columns)


def resolve_backend(backend: str, device: torch.device, columns: int, length: int, dtype: torch.dtype) -> str:
    """The backend one eager call runs: ``auto`` by `AUTO_RULES`; an explicit one that cannot run raises
    ``RuntimeError`` with the reason."""
    check_backend(backend)
    return registry.choose(OP, backend, device, dtype, length=length, columns=columns)


def _module(backend: str, a: Tensor) -> ModuleType:
    """The module the custom op runs for ``a`` ``(L, N, C)``: ``backend``, or for ``"auto"`` the choice from the
    concrete shapes (`parrnn.ops.registry.run_time_choice`)."""
    name = registry.run_time_choice(OP, backend, a.device, a.dtype, length=a.size(0), columns=a.size(1) * a.size(2))
    return backend_module(name, a.device.type)


# ---- the custom op (graphs and TorchScript) -----------------------------------------------------------------------

@torch.library.custom_op("parrnn::linear_recurrence", mutates_args=())
def linear_recurrence_op(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, reverse: bool,
                         backend: str) -> tuple[Tensor, Tensor]:
    """Fused forward on ``backend`` (``"sequential"``/``"scan"``, or ``"auto"``: chosen here, from the concrete
    shapes, so a compiled or exported graph keeps the choice per call): ``(h, h_n)``, ``h_n`` in the state dtype."""
    return _module(backend, a).forward(a, b, h0, lengths, reverse)


@linear_recurrence_op.register_fake
def _(a, b, h0, lengths, reverse, backend):
    return torch.empty_like(a), a.new_empty(a.shape[1:], dtype=state_dtype_for(a.dtype))


@torch.library.custom_op("parrnn::linear_recurrence_backward", mutates_args=())
def linear_recurrence_backward_op(grad_h: Tensor, grad_h_n: Tensor, a: Tensor, h: Tensor, h0: Tensor | None,
                                  lengths: Tensor | None, reverse: bool, backend: str
                                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Fused backward: ``(grad_a, grad_b, grad_h0)``; ``grad_h0`` is an empty tensor when ``h0`` is None."""
    grad_a, grad_b, grad_h0 = _module(backend, a).backward(grad_h, grad_h_n, a, h, h0, lengths, reverse)
    return grad_a, grad_b, a.new_empty(0) if grad_h0 is None else grad_h0


@linear_recurrence_backward_op.register_fake
def _(grad_h, grad_h_n, a, h, h0, lengths, reverse, backend):
    return torch.empty_like(a), torch.empty_like(a), a.new_empty(0) if h0 is None else torch.empty_like(h0)


def _gradients(a: Tensor, h: Tensor, h0: Tensor | None, grad_h: Tensor | None, grad_h_n: Tensor | None,
               backend: str, fused_backward) -> tuple[Tensor | None, ...]:
    """``(grad_a, grad_b, grad_h0)`` from the outputs' gradients (``None``: zeros) by
    ``fused_backward(grad_h, grad_h_n)``. Shared by the custom op and the eager ``autograd.Function``."""
    grad_h = torch.zeros_like(h) if grad_h is None else grad_h.contiguous()
    if grad_h_n is None:
        grad_h_n = a.new_zeros(a.shape[1:], dtype=state_dtype_for(a.dtype))
    grad_a, grad_b, grad_h0 = fused_backward(grad_h, grad_h_n.contiguous())
    return registry.first_order_only(OP, backend, (grad_a, grad_b, None if h0 is None else grad_h0), (a, h, h0))


def _setup_context(ctx, inputs, output):
    a, _b, h0, lengths, reverse, backend = inputs
    ctx.save_for_backward(a, output[0], h0, lengths)
    ctx.options = (reverse, backend)


def _backward(ctx, grad_h, grad_h_n):
    a, h, h0, lengths = ctx.saved_tensors
    reverse, backend = ctx.options
    grads = _gradients(a, h, h0, grad_h, grad_h_n, backend, lambda gh, ghn: linear_recurrence_backward_op(
        gh, ghn, a, h, h0, lengths, reverse, backend))
    return (*grads, None, None, None)


linear_recurrence_op.register_autograd(_backward, setup_context=_setup_context)


class _Fused(torch.autograd.Function):
    """The eager path with a gradient: the fused forward and backward without the custom op's dispatch."""

    @staticmethod
    def forward(ctx, module: ModuleType, backend: str, a: Tensor, b: Tensor, h0: Tensor | None,  # type: ignore[override]
                lengths: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        h, h_n = module.forward(a, b, h0, lengths, reverse)
        ctx.save_for_backward(a, h, h0, lengths)
        ctx.module, ctx.backend, ctx.reverse = module, backend, reverse
        return h, h_n

    @staticmethod
    def backward(ctx, grad_h: Tensor | None, grad_h_n: Tensor | None):  # type: ignore[override]
        a, h, h0, lengths = ctx.saved_tensors
        grads = _gradients(a, h, h0, grad_h, grad_h_n, ctx.backend, lambda gh, ghn: ctx.module.backward(
            gh, ghn, a, h, h0, lengths, ctx.reverse))
        return (None, None, *grads, None, None)


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

    ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``) and forward-mode AD run the reference. The fused
    backward is first-order: a double backward raises `parrnn.ops.registry.DoubleBackwardError` (use
    ``backend="reference"``). Under torch.compile, torch.export and TorchScript, ``"auto"`` is chosen by the custom
    op at run time from the concrete shapes (a graph with a dynamic length keeps the per-call choice). Under
    TorchScript there is no validation, ``"reference"`` runs the sequential kernel of the tensors' device, and
    ``mask`` is not accepted (give ``lengths``).

    Batch-first data ``(N, L, C)``: pass ``a.transpose(0, 1)`` and ``b.transpose(0, 1)`` and transpose ``h`` back;
    the kernels read time-major contiguous memory, so non-contiguous inputs are copied once.
    """
    if torch.jit.is_scripting():
        return _scripted(a, b, h0, lengths, mask, reverse, backend)
    else:  # noqa: RET505 (TorchScript compiles only the branch above)
        return _eager(a, b, h0, lengths, mask, reverse, backend)


def _eager(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, mask: Tensor | None, reverse: bool,
           backend: str) -> tuple[Tensor, Tensor]:
    """`linear_recurrence` outside TorchScript: validated once, then run as `parrnn.ops.registry.route` says."""
    check_backend(backend)
    ops = validate(a, b, h0, lengths, mask, reverse)
    way = registry.route((a, b, h0))
    if way == "onnx":
        return _export(ops, reverse)
    length, batch, cols = a.shape
    if way == "graph":
        name = registry.graph_choice(OP, backend, a.device, a.dtype)
    else:
        name = registry.choose(OP, backend, a.device, a.dtype, length=length, columns=batch * cols)
    if name == "reference" or way == "reference":
        return reference.run(ops, reverse)
    acc = state_dtype_for(a.dtype)
    h0_ = None if ops.h0 is None else ops.h0.to(acc).contiguous()
    a_, b_ = a.contiguous(), b.contiguous()
    if way == "direct":  # inference: the kernel itself
        h, h_n = backend_module(name, a.device.type).forward(a_, b_, h0_, ops.lengths, reverse)
    elif way == "autograd":
        h, h_n = _Fused.apply(backend_module(name, a.device.type), name, a_, b_, h0_, ops.lengths, reverse)
    else:
        h, h_n = torch.ops.parrnn.linear_recurrence(a_, b_, h0_, ops.lengths, reverse, name)
    return h, h_n.to(ops.state_dtype)


def _export(ops: Operands, reverse: bool) -> tuple[Tensor, Tensor]:
    """While ``torch.onnx.export`` traces: the recurrence as an ONNX ``Scan``."""
    from parrnn.ops.linear_recurrence import onnx as onnx_export

    registry.check_onnx_exporter()  # the same clear error under the TorchScript-based exporter
    return onnx_export.run(ops, reverse)


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

"""Backend selection and the ``torch.library`` custom op for the SRU recurrence.

The layers call :func:`sru_recurrence`; it validates nothing (the layers do) and routes to

* ``"reference"`` -- :mod:`parrnn.ops.reference`, autograd through a Python loop (any device, any dtype);
* ``"cpu"``       -- :mod:`parrnn.ops.cpu`, fused C++ forward and backward (OpenMP + SIMD over columns);
* ``"cuda"``      -- :mod:`parrnn.ops.cuda`, fused CUDA kernels launched through CuPy;
* ``"scan"``      -- :mod:`parrnn.ops.scan`, time-parallel chunked scan for the linear (v1) SRU;
* ``"auto"``      -- the fastest backend that works for the input's device and options.

The fused backends share one contract (a *fused backend module*)::

    availability() -> (ok: bool, reason: str)
    forward(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x)
        -> (h, c_n, c_all)                      # c_all (L, N, C): every c_t, saved for backward
    backward(grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all,
             bidirectional, use_tanh, scale_x)
        -> (grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)   # None where the input was None

and are reached through the custom op ``parrnn::sru_forward`` (with autograd and a fake implementation), so
``torch.compile`` and ``torch.export`` trace SRU models without graph breaks.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from types import ModuleType

import torch
from torch import Tensor

from parrnn.ops import reference

BACKENDS = ("reference", "cpu", "cuda", "scan")
_FUSED_MODULES = {"cpu": "parrnn.ops.cpu", "cuda": "parrnn.ops.cuda", "scan": "parrnn.ops.scan"}
_availability: dict[str, tuple[bool, str]] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def _module(name: str) -> ModuleType:
    return importlib.import_module(_FUSED_MODULES[name])


def backend_availability(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` works on this machine, and why not (cached after the first check)."""
    if name == "reference":
        return True, "pure PyTorch"
    if name not in _FUSED_MODULES:
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {name!r}")
    with _lock:
        if name not in _availability:
            try:
                _availability[name] = _module(name).availability()
            except Exception as exc:  # a backend that cannot even be imported is unavailable, never fatal
                _availability[name] = (False, f"{type(exc).__name__}: {exc}")
        return _availability[name]


# torch.compile must call backend_availability once while tracing and treat its result as a constant (its lock and
# lazy builds cannot be traced). This is exactly what torch.compiler.assume_constant_result does; setting the marker
# directly avoids importing torch._dynamo at `import parrnn` (~1.2 s). The fullgraph tests in
# tests/test_ecosystem.py fail if a torch release changes the marker.
backend_availability._dynamo_marked_constant = True  # type: ignore[attr-defined]


def available_backends() -> dict[str, tuple[bool, str]]:
    """Report every backend: ``{name: (works_here, reason)}``.

    Checking the ``cpu`` backend compiles its C++ library on first use (a few seconds, cached on disk).
    """
    return {name: backend_availability(name) for name in BACKENDS}


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, device: torch.device, *, linear: bool, batch_columns: int, length: int) -> str:
    """Pick the backend for one call.

    ``backend="auto"`` uses the fused kernel for the device (cuda on GPU, cpu on CPU) and falls back to the
    reference loop with one warning when that backend is unavailable. The time-parallel scan is chosen for the
    linear SRU only where it was measured faster (see :func:`parrnn.ops.scan.prefer_scan`).
    An explicit backend that cannot run raises ``RuntimeError`` with the reason.
    """
    if backend == "reference":
        return backend
    if backend == "auto":
        native = "cuda" if device.type == "cuda" else "cpu" if device.type == "cpu" else None
        if native is None:
            return "reference"
        ok, why = backend_availability(native)
        if not ok:
            _warn_once(native, f"parrnn: the {native!r} backend is unavailable ({why}); "
                               "falling back to the slow pure-PyTorch reference recurrence.")
            return "reference"
        if linear and backend_availability("scan")[0] and _module("scan").prefer_scan(
                device, batch_columns=batch_columns, length=length):
            return "scan"
        return native
    ok, why = backend_availability(backend)
    if not ok:
        raise RuntimeError(f"parrnn: backend {backend!r} is unavailable here: {why}")
    if backend in ("cpu", "cuda") and device.type != backend:
        raise ValueError(f"backend={backend!r} needs tensors on a {backend} device, got device {device}")
    if backend == "scan" and not linear:
        raise ValueError("backend='scan' needs the linear recurrence (version='v1'); "
                         "the v2 peephole makes f_t depend on c_{t-1}")
    return backend


def _fused_module(device: torch.device, algorithm: str) -> ModuleType:
    if algorithm == "scan":
        return _module("scan")
    return _module("cuda" if device.type == "cuda" else "cpu")


@torch.library.custom_op("parrnn::sru_forward", mutates_args=())
def sru_forward_op(
    u: Tensor,
    x: Tensor | None,
    weight_c: Tensor | None,
    bias: Tensor,
    c0: Tensor,
    mask_pad: Tensor | None,
    drop_mask: Tensor | None,
    bidirectional: bool,
    use_tanh: bool,
    scale_x: float,
    algorithm: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused forward: ``(h, c_n, c_all)``. ``algorithm`` is ``"sequential"`` or ``"scan"``."""
    mod = _fused_module(u.device, algorithm)
    return mod.forward(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x)


@sru_forward_op.register_fake
def _(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x, algorithm):
    length, batch, _, cols = u.shape
    state_dtype = torch.promote_types(u.dtype, torch.float32)
    return (u.new_empty(length, batch, cols), u.new_empty(batch, cols, dtype=c0.dtype),
            u.new_empty(length, batch, cols, dtype=state_dtype))


@torch.library.custom_op("parrnn::sru_backward", mutates_args=())
def sru_backward_op(
    grad_h: Tensor,
    grad_c_n: Tensor,
    u: Tensor,
    x: Tensor | None,
    weight_c: Tensor | None,
    bias: Tensor,
    c0: Tensor,
    mask_pad: Tensor | None,
    drop_mask: Tensor | None,
    c_all: Tensor,
    bidirectional: bool,
    use_tanh: bool,
    scale_x: float,
    algorithm: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused backward. Returns ``(grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)``; a gradient whose input
    was ``None`` comes back as an empty tensor (custom ops cannot return ``None``)."""
    mod = _fused_module(u.device, algorithm)
    grads = mod.backward(grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all,
                         bidirectional, use_tanh, scale_x)
    return tuple(u.new_empty(0) if g is None else g for g in grads)  # type: ignore[return-value]


@sru_backward_op.register_fake
def _(grad_h, grad_c_n, u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all, bidirectional, use_tanh,
      scale_x, algorithm):
    def like(t: Tensor | None) -> Tensor:
        return u.new_empty(0) if t is None else torch.empty_like(t)
    return torch.empty_like(u), like(x), like(weight_c), torch.empty_like(bias), torch.empty_like(c0)


def _setup_context(ctx, inputs, output):
    u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x, algorithm = inputs
    ctx.save_for_backward(u, x, weight_c, bias, c0, mask_pad, drop_mask, output[2])
    ctx.options = (bidirectional, use_tanh, scale_x, algorithm)


def _backward(ctx, grad_h, grad_c_n, _grad_c_all):
    u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all = ctx.saved_tensors
    bidirectional, use_tanh, scale_x, algorithm = ctx.options
    grad_h = torch.zeros_like(c_all, dtype=u.dtype) if grad_h is None else grad_h
    grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
    gu, gx, gwc, gb, gc0 = sru_backward_op(
        grad_h.contiguous(), grad_c_n.contiguous(), u, x, weight_c, bias, c0, mask_pad, drop_mask, c_all,
        bidirectional, use_tanh, scale_x, algorithm)
    return (gu, None if x is None else gx, None if weight_c is None else gwc, gb, gc0,
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
    *,
    bidirectional: bool = False,
    use_tanh: bool = False,
    scale_x: float = 1.0,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """The SRU recurrence on the chosen backend; same contract as :func:`parrnn.ops.reference.sru_recurrence`."""
    length, batch, _, cols = u.shape
    name = resolve_backend(backend, u.device, linear=weight_c is None, batch_columns=batch * cols,
                           length=length)
    if name == "reference":
        return reference.sru_recurrence(u, x, weight_c, bias, c0, mask_pad, drop_mask,
                                        bidirectional=bidirectional, use_tanh=use_tanh, scale_x=scale_x)

    def contiguous(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.contiguous()

    h, c_n, _ = sru_forward_op(
        u.contiguous(), contiguous(x), contiguous(weight_c), bias.contiguous(), c0.contiguous(),
        contiguous(mask_pad), contiguous(drop_mask), bidirectional, use_tanh, float(scale_x),
        "scan" if name == "scan" else "sequential")
    return h, c_n

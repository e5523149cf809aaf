"""The SRU recurrence as an op: [sru_recurrence][parrnn.ops.sru.dispatch.sru_recurrence] and its custom op
``parrnn::sru_forward``, over the shared backend choice of `parrnn.ops.registry` (op ``"sru"``).

[sru_recurrence][parrnn.ops.sru.dispatch.sru_recurrence] validates every argument once
([parrnn.ops.sru.contract.validate][]) and runs

* ``"reference"``  -- `parrnn.ops.sru.reference`, autograd through a Python loop (any device, any dtype);
* ``"sequential"`` -- the fused kernel of the tensors' device: `parrnn.ops.sru.sequential_cpu` (C++, OpenMP + SIMD
  over columns) or `parrnn.ops.sru.sequential_cuda` (CUDA through CuPy);
* ``"scan"``       -- `parrnn.ops.sru.scan`, the time-parallel chunked scan of the linear (v1) SRU (CPU or CUDA);
* ``"auto"``       -- the first row of [AUTO_RULES][parrnn.ops.sru.dispatch.AUTO_RULES] that applies and runs.

``"cpu"`` and ``"cuda"`` are deprecated aliases of ``"sequential"``.

The fused backends share one contract (a *fused backend module*), over one structure of the recurrence's inputs,
`parrnn.ops.sru.contract.RecurrenceArgs`:

    availability(...) -> (ok: bool, reason: str)     # per device (and dtype, where kernels compile per dtype)
    forward(args) -> (h, c_n, c_all)                 # c_all (L, N, C): every c_t, saved for backward
    forward_validated(args) -> (h, c_n, c_all)       # forward without validating args again
    backward(args, grad_h, grad_c_n, c_all)
        -> (grad_u, grad_x, grad_weight_c, grad_bias, grad_c0)   # None where the input was None

How a call runs is `parrnn.ops.registry.route`'s: eager calls use the module directly (an ``autograd.Function``
when a gradient is needed); ``torch.compile``/``torch.export``/``torch.jit.trace`` record the custom op
``parrnn::sru_forward`` (autograd and fake implementations registered; its ``backend`` argument is a backend word,
``"auto"`` chosen inside the op from the concrete shapes); ``torch.func`` transforms and forward-mode AD run the
reference; ``torch.onnx.export`` the ONNX scan (`parrnn.ops.sru.onnx`).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from parrnn.ops import registry
from parrnn.ops.sru import reference
from parrnn.ops.sru.contract import RecurrenceArgs, validate

OP = registry.SRU
#: The backend words (``"auto"`` too); ``"cpu"``/``"cuda"`` are accepted as deprecated aliases of ``"sequential"``.
BACKENDS = OP.backends
#: ``backend="auto"``: the first row that applies and whose backend works (the last row of a device is its default
#: kernel; if that one does not work, one warning and the reference loop). See `parrnn.ops.registry.AutoRule`.
AUTO_RULES = OP.rules
AutoRule = registry.AutoRule


def check_backend(name: str) -> str:
    """``name`` as a backend word: ``ValueError`` unless it is one of `BACKENDS` or ``"auto"``; the deprecated
    ``"cpu"``/``"cuda"`` give ``"sequential"`` with a ``DeprecationWarning``."""
    return registry.normalize(OP, name)


def backend_availability(name: str, device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> tuple[bool, str]:
    """Whether backend ``name`` works for tensors of ``dtype`` on ``device``, and why not (cached; see
    `parrnn.ops.registry.backend_availability`). ``device`` defaults to the CPU (the current CUDA device for the
    deprecated ``"cuda"``, whose kernels run on CUDA tensors only, as ``"cpu"``'s on CPU tensors)."""
    if device is None:
        device = "cuda" if name == "cuda" else "cpu"
    dev = registry._device(device)
    if name in ("cpu", "cuda") and dev.type != name:
        return False, f"the {name} backend runs on {name} tensors, not {dev.type}"
    return registry.backend_availability(OP, name, dev, dtype)


def available_backends(device: torch.device | str = "cpu") -> dict[str, tuple[bool, str]]:
    """The SRU op's backends on ``device``: ``{backend: (works_here, reason)}`` (every op's:
    `parrnn.available_backends`)."""
    return {name: registry.backend_availability(OP, name, device) for name in BACKENDS}


def auto_backend(device: torch.device, *, linear: bool, batch_columns: int, length: int,
                 dtype: torch.dtype = torch.float32) -> str:
    """The backend ``backend="auto"`` runs for this eager call (see `AUTO_RULES`)."""
    return registry.choose(OP, "auto", device, dtype, length=length, columns=batch_columns, linear=linear)


def resolve_backend(backend: str, device: torch.device, *, linear: bool, batch_columns: int, length: int,
                    dtype: torch.dtype = torch.float32) -> str:
    """The backend one eager call runs (`parrnn.ops.registry.choose`): ``"auto"`` by `AUTO_RULES`; an explicit
    backend that cannot run raises ``RuntimeError`` with the reason (for CUDA, the NVRTC log)."""
    return registry.choose(OP, check_backend(backend), device, dtype, length=length, columns=batch_columns,
                           linear=linear)


def _fused_module(backend: str, device_type: str) -> ModuleType:
    """The fused module of ``backend`` (``"sequential"``/``"scan"``) for ``device_type`` tensors."""
    return registry.backend_module(OP, backend, device_type)


def _module(args: RecurrenceArgs, backend: str) -> ModuleType:
    """The fused module the custom op runs: ``backend``, or for ``"auto"`` the choice from the concrete shapes
    (`parrnn.ops.registry.run_time_choice`)."""
    u = args.u
    name = registry.run_time_choice(OP, backend, u.device, u.dtype, length=u.shape[0],
                                    columns=u.shape[1] * u.shape[3], linear=args.weight_c is None)
    return _fused_module(name, u.device.type)


# ---- the custom op (graphs and TorchScript) -----------------------------------------------------------------------

#: The custom ops' schemas are flat (``torch.library`` takes tensors and scalars): the fields of `RecurrenceArgs`,
#: its tensors then its options, written once here.
_ARG_TENSORS = "Tensor u, Tensor? x, Tensor? weight_c, Tensor bias, Tensor c0, Tensor? mask_pad, Tensor? drop_mask"
_ARG_OPTIONS = "bool bidirectional, bool use_tanh, float scale_x"


@torch.library.custom_op(
    "parrnn::sru_forward", mutates_args=(),
    schema=f"({_ARG_TENSORS}, {_ARG_OPTIONS}, str backend) -> (Tensor, Tensor, Tensor)")
def sru_forward_op(*inputs: object) -> tuple[Tensor, Tensor, Tensor]:
    """Fused forward of ``(*RecurrenceArgs, backend)``: ``(h, c_n, c_all)`` on ``backend`` (``"sequential"``,
    ``"scan"``, or ``"auto"``: chosen here from the concrete shapes)."""
    *fields, backend = inputs
    args = RecurrenceArgs(*fields)  # type: ignore[arg-type]
    return _module(args, backend).forward(args)  # type: ignore[arg-type]


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
    grads = _module(args, backend).backward(args, grad_h, grad_c_n, c_all)
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


def _gradients(args: RecurrenceArgs, grad_h: Tensor | None, grad_c_n: Tensor | None, c_all: Tensor,
               backend: str, fused_backward) -> tuple[Tensor | None, ...]:
    """The 5 input gradients from the outputs' (``None``: zeros), by ``fused_backward(grad_h, grad_c_n)``;
    ``None`` for an input that was ``None``. Shared by the custom op and the eager ``autograd.Function``."""
    grad_h = torch.zeros_like(c_all, dtype=args.u.dtype) if grad_h is None else grad_h.contiguous()
    grad_c_n = torch.zeros_like(args.c0) if grad_c_n is None else grad_c_n.contiguous()
    gu, gx, gwc, gb, gc0 = fused_backward(grad_h, grad_c_n)
    grads = (gu, None if args.x is None else gx, None if args.weight_c is None else gwc, gb, gc0)
    return registry.first_order_only(OP, backend, grads, args[:5])


def _setup_context(ctx, inputs, output):
    *fields, backend = inputs  # sru_forward_op's flat inputs: the RecurrenceArgs fields, then backend
    ctx.save_for_backward(*fields[:7], output[2])
    ctx.options = (*fields[7:], backend)


def _backward(ctx, grad_h, grad_c_n, _grad_c_all):
    *tensors, c_all = ctx.saved_tensors
    *options, backend = ctx.options
    args = RecurrenceArgs(*tensors, *options)
    grads = _gradients(args, grad_h, grad_c_n, c_all, backend,
                       lambda gh, gc: sru_backward_op(gh, gc, *tensors, c_all, *options, backend))
    return (*grads, None, None, None, None, None, None)


sru_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _Fused(torch.autograd.Function):
    """The eager path with a gradient: the fused forward and backward without the custom op's dispatch."""

    @staticmethod
    def forward(ctx, backend: str, options: tuple, *tensors: Tensor | None):  # type: ignore[override]
        args = RecurrenceArgs(*tensors, *options)  # type: ignore[arg-type]
        module = _fused_module(backend, args.u.device.type)
        h, c_n, c_all = module.forward_validated(args)
        ctx.save_for_backward(*tensors, c_all)
        ctx.backend, ctx.options, ctx.module = backend, options, module
        return h, c_n

    @staticmethod
    def backward(ctx, grad_h: Tensor | None, grad_c_n: Tensor | None):  # type: ignore[override]
        *tensors, c_all = ctx.saved_tensors
        args = RecurrenceArgs(*tensors, *ctx.options)
        grads = _gradients(args, grad_h, grad_c_n, c_all, ctx.backend,
                           lambda gh, gc: ctx.module.backward(args, gh, gc, c_all))
        return (None, None, *grads, None, None)


# ---- the public function ------------------------------------------------------------------------------------------

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
    Under TorchScript there is no validation (that is Python): ``"scan"`` and ``"auto"`` reach the custom op as
    they are (``"auto"`` chosen per call from the shapes), every other backend runs the sequential kernel of the
    tensors' device, through ``torch.ops.parrnn.sru_forward``.
    """
    if torch.jit.is_scripting():
        name = backend if backend == "scan" or backend == "auto" else "sequential"
        h, c_n, _ = torch.ops.parrnn.sru_forward(
            u.contiguous(), _contiguous(x), _contiguous(weight_c), bias.contiguous(), c0.contiguous(),
            _contiguous(mask_pad), _contiguous(drop_mask), bidirectional, use_tanh, float(scale_x), name)
        return h, c_n
    else:  # noqa: RET505 (TorchScript compiles only the branch above)
        args = RecurrenceArgs(u, x, weight_c, bias, c0, mask_pad, drop_mask, bidirectional, use_tanh, scale_x)
        return _eager(args, backend)


def _eager(args: RecurrenceArgs, backend: str) -> tuple[Tensor, Tensor]:
    """`sru_recurrence` outside TorchScript: validated once (not while exporting to ONNX), then run as
    `parrnn.ops.registry.route` says."""
    backend = check_backend(backend)
    way = registry.route(args[:5])
    if way == "onnx":  # (its checks would specialize the exported graph's symbolic sizes)
        return _export_recurrence(args)
    length, batch, _, cols = validate(args, check_dtype=backend not in ("reference", "auto"))
    u, linear = args.u, args.weight_c is None
    if way == "graph":
        name = registry.graph_choice(OP, backend, u.device, u.dtype, linear=linear)
    else:
        name = registry.choose(OP, backend, u.device, u.dtype, length=length, columns=batch * cols, linear=linear)
    if name == "reference" or way == "reference":
        return reference.sru_recurrence(*args[:7], bidirectional=args.bidirectional, use_tanh=args.use_tanh,
                                        scale_x=args.scale_x)
    if way == "direct":  # inference: the kernel itself (it makes its arguments contiguous)
        h, c_n, _ = _fused_module(name, u.device.type).forward_validated(args)
        return h, c_n
    if way == "autograd":
        return _Fused.apply(name, tuple(args[7:]), *(_contiguous(t) for t in args[:7]))
    h, c_n, _ = torch.ops.parrnn.sru_forward(
        u.contiguous(), _contiguous(args.x), _contiguous(args.weight_c), args.bias.contiguous(),
        args.c0.contiguous(), _contiguous(args.mask_pad), _contiguous(args.drop_mask), args.bidirectional,
        args.use_tanh, float(args.scale_x), name)
    return h, c_n


def _export_recurrence(args: RecurrenceArgs) -> tuple[Tensor, Tensor]:
    """While ``torch.onnx.export`` traces: the recurrence as one scan (an ONNX ``Scan``), since ONNX runtimes
    cannot run ``parrnn::sru_forward``."""
    from parrnn.ops.sru import onnx as onnx_export

    registry.check_onnx_exporter()
    return onnx_export.recurrence(args)


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()

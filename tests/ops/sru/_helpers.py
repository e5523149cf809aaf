"""Helpers shared by the backend tests in ``tests/ops/sru``: one set of recurrence inputs (`Case`, `make_case`),
random output gradients, the float64 reference with autograd gradients, tolerance checks, the backends as the tests
run them (`Backend`, `BACKENDS`) and the one comparison of a backend against the reference (`check_backend`).

Shapes follow :mod:`parrnn.ops.sru.reference`: ``u`` (L, N, K, C), ``x`` (L, N, C), ``weight_c``/``bias`` (2, C),
``c0``/``drop_mask`` (N, C), ``mask_pad`` (L, N).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from parrnn.ops.sru import reference, scan_cpu, scan_cuda
from parrnn.ops.sru import sequential_cpu as cpu
from parrnn.ops.sru import sequential_cuda as cuda
from parrnn.ops.sru.contract import RecurrenceArgs

#: The differentiable inputs, in the order of the backends' contract.
GRAD_NAMES = ("u", "x", "weight_c", "bias", "c0")


@dataclass
class Case:
    """One set of recurrence inputs (``weight_c`` last, ``None`` for the linear / v1 recurrence)."""

    u: Tensor
    x: Tensor | None
    bias: Tensor
    c0: Tensor
    mask_pad: Tensor | None
    drop_mask: Tensor | None
    bidirectional: bool
    use_tanh: bool
    scale_x: float
    weight_c: Tensor | None = None

    def args(self) -> RecurrenceArgs:
        """The backends' argument: every input and option as one `RecurrenceArgs`."""
        return RecurrenceArgs(self.u, self.x, self.weight_c, self.bias, self.c0, self.mask_pad, self.drop_mask,
                              self.bidirectional, self.use_tanh, self.scale_x)

    def tensors(self) -> list[Tensor | None]:
        """``(u, x, weight_c, bias, c0, mask_pad, drop_mask)``: the fused backends' tensor arguments."""
        return [self.u, self.x, self.weight_c, self.bias, self.c0, self.mask_pad, self.drop_mask]

    def inputs(self) -> tuple:
        """``(u, x, bias, c0, mask_pad, drop_mask)``: the scan's tensor arguments (no ``weight_c``)."""
        return (self.u, self.x, self.bias, self.c0, self.mask_pad, self.drop_mask)

    def flags(self) -> tuple:
        return (self.bidirectional, self.use_tanh, self.scale_x)

    def options(self) -> dict[str, object]:
        return {"bidirectional": self.bidirectional, "use_tanh": self.use_tanh, "scale_x": self.scale_x}


def random_grads(length: int, batch: int, cols: int, dtype: torch.dtype, seed: int) -> tuple[Tensor, Tensor]:
    """``(grad_h (L, N, C), grad_c_n (N, C))``: standard normal (drawn in float64) stored in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    grad_h = torch.randn(length, batch, cols, generator=gen, dtype=torch.float64).to(dtype)
    grad_c_n = torch.randn(batch, cols, generator=gen, dtype=torch.float64).to(dtype)
    return grad_h, grad_c_n


def reference_values_and_grads(u: Tensor, x: Tensor | None, weight_c: Tensor | None, bias: Tensor, c0: Tensor,
                               mask_pad: Tensor | None, drop_mask: Tensor | None, grad_h: Tensor,
                               grad_c_n: Tensor, *, bidirectional: bool, use_tanh: bool, scale_x: float,
                               ) -> tuple[Tensor, Tensor, dict[str, Tensor | None]]:
    """Reference ``h``, ``c_n`` and the gradients of ``loss = <h, grad_h> + <c_n, grad_c_n>``, all in float64
    from the exact stored input values (16-bit inputs are exact in float64). The gradients are keyed by
    :data:`GRAD_NAMES`, ``None`` where the input is ``None``."""
    leaves = {n: None if t is None else t.detach().to(torch.float64).requires_grad_()
              for n, t in zip(GRAD_NAMES, (u, x, weight_c, bias, c0), strict=True)}
    drop = None if drop_mask is None else drop_mask.to(torch.float64)
    h, c_n = reference.sru_recurrence(*leaves.values(), mask_pad, drop, bidirectional=bidirectional,  # type: ignore[arg-type]
                                      use_tanh=use_tanh, scale_x=scale_x)
    loss = (h * grad_h.to(torch.float64)).sum() + (c_n * grad_c_n.to(torch.float64)).sum()
    present = [n for n in GRAD_NAMES if leaves[n] is not None]
    grads: dict[str, Tensor | None] = dict.fromkeys(GRAD_NAMES)
    grads.update(zip(present, torch.autograd.grad(loss, [leaves[n] for n in present]), strict=True))
    return h.detach(), c_n.detach(), grads


def assert_close(actual: Tensor | None, expected: Tensor | None, tol: tuple[float, float], what: str,
                 atol_scale: float = 1.0) -> None:
    """``actual`` within ``tol = (rtol, atol * atol_scale)`` of ``expected``, compared in float64; both or
    neither ``None``."""
    if expected is None:
        assert actual is None, f"{what}: expected None"
        return
    assert actual is not None, f"{what}: got None"
    rtol, atol = tol
    torch.testing.assert_close(actual.to(torch.float64), expected.to(torch.float64), rtol=rtol,
                               atol=atol * atol_scale, msg=lambda m: f"{what}: {m}")


def assert_grads(grads: Mapping[str, Tensor | None], expected: Mapping[str, Tensor | None],
                 inputs: Mapping[str, Tensor | None], tol: tuple[float, float],
                 atol_scale: Mapping[str, float] | None = None) -> None:
    """For each input ``name`` in ``inputs``: ``grads[name]`` is ``None`` for a ``None`` input, else has the
    input's dtype and shape and is within ``tol`` (atol times ``atol_scale[name]``) of ``expected[name]``."""
    for name, inp in inputs.items():
        got = grads[name]
        if inp is not None:
            assert got is not None and got.dtype == inp.dtype and got.shape == inp.shape, f"grad_{name}"
        assert_close(got, expected[name], tol, f"grad_{name}", (atol_scale or {}).get(name, 1.0))


def mixed_mask(length: int, batch: int, gen: torch.Generator) -> Tensor:
    """Padding patterns: none, trailing, leading, the whole sequence, both ends, then random rows."""
    mask = torch.zeros(length, batch, dtype=torch.bool)
    for n in range(batch):
        kind = n % 6
        if kind == 1:
            mask[length - max(1, length // 3):, n] = True
        elif kind == 2:
            mask[: max(1, length // 3), n] = True
        elif kind == 3:
            mask[:, n] = True
        elif kind == 4:
            mask[: max(1, length // 4), n] = True
            mask[length - max(1, length // 4):, n] = True
        elif kind == 5:
            mask[:, n] = torch.rand(length, generator=gen) < 0.3
    return mask


def make_case(length: int, batch: int, hidden: int, *, skip: str = "x", v2: bool = True,
              bidirectional: bool = False, use_tanh: bool = False, mask: str = "none", drop: bool = False,
              dtype: torch.dtype = torch.float32, seed: int = 0) -> Case:
    """Random inputs stored in ``dtype``: ``skip`` ``"none"`` (K = 3, no x), ``"x"`` (K = 3 with x) or ``"u3"``
    (K = 4); ``v2`` peephole weights; ``mask`` ``"none"`` or ``"mixed"`` (`mixed_mask`); ``drop`` a dropout mask."""
    gen = torch.Generator().manual_seed(seed)
    cols = hidden * (2 if bidirectional else 1)
    k = 4 if skip == "u3" else 3

    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    mask_pad = None if mask == "none" else mixed_mask(length, batch, gen)
    drop_mask = None
    if drop:
        keep = torch.rand(batch, cols, generator=gen) > 0.3
        drop_mask = (keep.to(torch.float64) / 0.7).to(dtype)
    return Case(u=randn(length, batch, k, cols), x=randn(length, batch, cols) if skip == "x" else None,
                weight_c=randn(2, cols, scale=0.5) if v2 else None, bias=randn(2, cols, scale=0.5),
                c0=randn(batch, cols), mask_pad=mask_pad, drop_mask=drop_mask, bidirectional=bidirectional,
                use_tanh=use_tanh, scale_x=1.7 if skip == "x" else 1.0)


# ---- the backends, as the tests run them -------------------------------------------------------------------------

#: (rtol, atol) of a backend against the float64 reference, by storage dtype
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 1e-2),
       torch.float16: (1e-2, 1e-2)}
#: the scan reassociates the recurrence: bfloat16 needs more room
SCAN_TOL = {**TOL, torch.bfloat16: (2e-2, 2e-2)}
#: the CUDA kernels on the host against the reference; gradient atol times the length of their sums. float32: the
#: cpu kernel's (the same step header), since over every option one h in 780 is 1.4e-6 off (rel. 6e-5)
KERNEL_TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-5), torch.float16: (4e-3, 4e-3),
              torch.bfloat16: (2e-2, 2e-2)}
#: on a GPU: relative error ||got - want|| / ||want||
GPU_REL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}

Result = tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor | None, ...]]


@dataclass(frozen=True)
class Backend:
    """One backend as the tests run it: ``run(args, grad_h, grad_c_n, **variant)`` gives
    ``((h, c_n, c_all), (grad_u, grad_x, grad_weight_c, grad_bias, grad_c0))``; each of ``variants`` (threads,
    chunk lengths) is checked against the one reference."""

    name: str
    run: Callable[..., Result]
    variants: tuple[dict, ...] = ({},)
    linear_only: bool = False  #: the scan: weight_c must be None
    device: str = "cpu"
    tol: Mapping[torch.dtype, tuple[float, float]] = field(default_factory=lambda: TOL)
    grad_atol_by_length: bool = False  #: gradient atol times the length of the sums (time, and batch for params)
    rel: Mapping[torch.dtype, float] | None = None  #: compare by relative norm error instead (GPU)
    c_n_is_stored_c_all: bool = True  #: c_n is exactly c_all at each direction's last step, rounded to dtype
    gpu: bool = False


def _fused(module) -> Callable[..., Result]:
    def run(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor, **variant) -> Result:
        fwd = module.forward(args, **variant)
        return fwd, module.backward(args, grad_h, grad_c_n, fwd[2], **variant)
    return run


def launched(module, launcher: Callable[[], object]) -> Callable[..., Result]:
    """``module.forward_with`` / ``backward_with`` (sequential_cuda or scan_cuda) through ``launcher()``."""
    def run(args: RecurrenceArgs, grad_h: Tensor, grad_c_n: Tensor, **variant) -> Result:
        launch = launcher()
        fwd = module.forward_with(launch, args, **variant)
        return fwd, module.backward_with(launch, args, grad_h, grad_c_n, fwd[2], **variant)
    return run


_HOST: dict[str, object] = {}


def host_launcher(module) -> Callable[[], object]:
    """``module.make_host_launcher()`` built once (the CUDA source compiled as C++ on first use)."""
    def get() -> object:
        if module.__name__ not in _HOST:
            _HOST[module.__name__] = module.make_host_launcher()
        return _HOST[module.__name__]
    return get


#: every backend: the C++ sequential kernel, the CPU scan (1 to 3 threads), the CUDA sequential and scan kernels
#: run on the host (the very .cu files, several chunk lengths), and both on a GPU
BACKENDS = {
    "cpu": Backend("cpu", _fused(cpu)),
    "scan cpu": Backend("scan cpu", _fused(scan_cpu), ({"threads": 1}, {"threads": 2}, {"threads": 3}),
                        linear_only=True, tol=SCAN_TOL, c_n_is_stored_c_all=False),
    "cuda kernels on host": Backend("cuda kernels on host", launched(cuda, host_launcher(cuda)),
                                    tol=KERNEL_TOL, grad_atol_by_length=True),
    "scan kernels on host": Backend("scan kernels on host", launched(scan_cuda, host_launcher(scan_cuda)),
                                    ({"chunk_len": 1}, {"chunk_len": 4}, {"chunk_len": 13}), linear_only=True,
                                    tol=SCAN_TOL, c_n_is_stored_c_all=False),
    "cuda": Backend("cuda", _fused(cuda), device="cuda", rel=GPU_REL, gpu=True),
    "scan cuda": Backend("scan cuda", launched(scan_cuda, lambda: scan_cuda.cupy_launcher),
                         ({"chunk_len": None}, {"chunk_len": 1}, {"chunk_len": 7}), linear_only=True,
                         device="cuda", rel=GPU_REL, gpu=True),
}


def rel_err(got: Tensor, want: Tensor) -> float:
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def _to(t: object, device: str) -> object:
    return t.to(device) if isinstance(t, Tensor) else t


def check_backend(backend: Backend, case: Case, seed: int = 1) -> None:
    """Forward values, ``c_all`` and every gradient of ``backend`` (each of its variants) against the float64
    reference on the same stored inputs, with ``backend``'s tolerances."""
    args = case.args()
    dtype = case.u.dtype
    length, batch, _, cols = case.u.shape
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad_h, grad_c_n = random_grads(length, batch, cols, dtype, seed)
    h_ref, c_ref, g_ref = reference_values_and_grads(*case.tensors(), grad_h, grad_c_n, **case.options())
    inputs = dict(zip(GRAD_NAMES, args[:5], strict=True))
    if backend.device != "cpu":
        args = RecurrenceArgs(*(_to(t, backend.device) for t in args))
        grad_h, grad_c_n = grad_h.to(backend.device), grad_c_n.to(backend.device)
    tol = backend.tol[dtype]
    scale = {n: length * batch if n in ("weight_c", "bias") else length for n in GRAD_NAMES}
    for variant in backend.variants:
        (h, c_n, c_all), grads = backend.run(args, grad_h, grad_c_n, **variant)
        for t in (h, c_n, c_all, *grads):
            assert t is None or t.device == args.u.device, f"{backend.name} {variant}: an output on {t.device}"
        (h, c_n, c_all), grads = (h.cpu(), c_n.cpu(), c_all.cpu()), tuple(_to(g, "cpu") for g in grads)
        assert h.dtype == dtype and c_n.dtype == dtype and h.shape == (length, batch, cols)
        assert c_all.dtype == acc and c_all.shape == (length, batch, cols)
        got = dict(zip(GRAD_NAMES, grads, strict=True))
        if backend.rel is not None:
            for what, a, b in (("h", h, h_ref), ("c_n", c_n, c_ref),
                               *((f"grad_{n}", got[n], g) for n, g in g_ref.items() if g is not None)):
                assert a is not None, what
                err = rel_err(a, b)
                assert err < backend.rel[dtype], f"{backend.name} {variant} {what}: relative error {err:.3g}"
            assert_grads(got, dict.fromkeys(GRAD_NAMES), {n: t for n, t in inputs.items() if t is None}, tol)
            continue
        assert_close(h, h_ref, tol, "h")
        assert_close(c_n, c_ref, tol, "c_n")
        if length:  # c_n is c_all at each direction's last step (the first step of the reverse direction)
            hidden = cols // (2 if case.bidirectional else 1)
            last = c_all[-1, :, :hidden]
            if case.bidirectional:
                last = torch.cat([last, c_all[0, :, hidden:]], dim=1)
            assert_close(last, c_ref, tol, "c_all at the last step")
            if backend.c_n_is_stored_c_all:  # stored from the same float: bit-exact rounding
                assert torch.equal(c_n, last.to(dtype)), f"{backend.name}: c_n is not c_all's last step"
        assert_grads(got, g_ref, inputs, tol, scale if backend.grad_atol_by_length else None)

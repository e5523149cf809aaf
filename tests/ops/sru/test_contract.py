"""parrnn.ops.sru.contract.validate: every recurrence argument with a wrong shape (or device) is a ValueError naming it,
raised before any kernel runs -- for every backend and for the public ``parrnn.ops.sru_recurrence``.

Shapes: ``u`` (L, N, K, C), ``x`` (L, N, C), ``weight_c``/``bias`` (2, C), ``c0``/``drop_mask`` (N, C),
``mask_pad`` (L, N); backward adds ``grad_h`` (L, N, C), ``grad_c_n`` (N, C), ``c_all`` (L, N, C).
"""

from __future__ import annotations

import pytest
import torch

from parrnn.ops.sru import contract, dispatch, scan, scan_cuda
from parrnn.ops.sru import sequential_cpu as cpu
from parrnn.ops.sru import sequential_cuda as cuda
from parrnn.ops.sru.contract import RecurrenceArgs

L, N, C = 5, 3, 4
BAD = {  # argument -> a wrong shape for it
    "x": (L, N, C + 1), "weight_c": (2, C + 1), "bias": (3, C), "c0": (N + 1, C), "mask_pad": (L, N + 1),
    "drop_mask": (N, C + 1), "grad_h": (L, N + 1, C), "grad_c_n": (N, C + 1), "c_all": (L + 1, N, C),
}
FORWARD_ARGS = ("x", "weight_c", "bias", "c0", "mask_pad", "drop_mask")


def _inputs(linear: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"u": torch.randn(L, N, 3, C, generator=g), "x": torch.randn(L, N, C, generator=g),
            "weight_c": None if linear else torch.randn(2, C, generator=g), "bias": torch.randn(2, C, generator=g),
            "c0": torch.randn(N, C, generator=g), "mask_pad": torch.zeros(L, N, dtype=torch.bool),
            "drop_mask": torch.ones(N, C), "grad_h": torch.randn(L, N, C, generator=g),
            "grad_c_n": torch.randn(N, C, generator=g), "c_all": torch.randn(L, N, C, generator=g)}


def _never(*args: object) -> None:
    raise AssertionError("a kernel was launched with invalid arguments")


def _forward(name: str, a: dict) -> None:
    tensors = (a["u"], a["x"], a["weight_c"], a["bias"], a["c0"], a["mask_pad"], a["drop_mask"])
    args = RecurrenceArgs(*tensors)
    if name == "cpu":
        cpu.forward(args)
    elif name == "scan":
        scan.forward(args)
    elif name == "cuda glue":
        cuda.forward_with(_never, args)
    elif name == "scan_cuda glue":
        scan_cuda.forward_with(_never, args)
    else:  # the public op, name = "public <backend>"
        dispatch.sru_recurrence(*tensors, backend=name.split()[1])


def _backward(name: str, a: dict) -> None:
    args = RecurrenceArgs(a["u"], a["x"], a["weight_c"], a["bias"], a["c0"], a["mask_pad"], a["drop_mask"])
    grads = (a["grad_h"], a["grad_c_n"], a["c_all"])
    if name == "cpu":
        cpu.backward(args, *grads)
    elif name == "scan":
        scan.backward(args, *grads)
    elif name == "cuda glue":
        cuda.backward_with(_never, args, *grads)
    else:
        scan_cuda.backward_with(_never, args, *grads)


LINEAR = {"scan", "scan_cuda glue", "public scan"}
FORWARD_BACKENDS = ["cpu", "scan", "cuda glue", "scan_cuda glue", "public reference", "public cpu", "public scan",
                    "public auto"]


def _cases(backends: list[str], args: tuple[str, ...]) -> list[tuple[str, str]]:
    """(backend, argument) pairs; the scan takes no weight_c."""
    return [(b, a) for b in backends for a in args if not (a == "weight_c" and b in LINEAR)]


@pytest.mark.parametrize(("backend", "arg"), _cases(FORWARD_BACKENDS, FORWARD_ARGS))
def test_forward_rejects_every_wrong_shape(backend: str, arg: str) -> None:
    linear = backend in LINEAR
    a = _inputs(linear)
    a[arg] = torch.zeros(BAD[arg], dtype=torch.bool if arg == "mask_pad" else torch.float32)
    with pytest.raises(ValueError, match=f"{arg} must have shape"):
        _forward(backend, a)


@pytest.mark.parametrize(("backend", "arg"), _cases(["cpu", "scan", "cuda glue", "scan_cuda glue"], tuple(BAD)))
def test_backward_rejects_every_wrong_shape(backend: str, arg: str) -> None:
    linear = backend in LINEAR
    a = _inputs(linear)
    a[arg] = torch.zeros(BAD[arg], dtype=torch.bool if arg == "mask_pad" else torch.float32)
    with pytest.raises(ValueError, match=f"{arg} must have shape"):
        _backward(backend, a)


def test_validate_messages() -> None:
    a = _inputs(False)
    args = RecurrenceArgs(a["u"], a["x"], a["weight_c"], a["bias"], a["c0"], a["mask_pad"], a["drop_mask"])
    assert contract.validate(args) == (L, N, 3, C)
    with pytest.raises(ValueError, match=r"parrnn cuda backend: u must have shape \(L, N, K, C\)"):
        contract.validate(args._replace(u=a["u"][0]), backend="cuda")
    with pytest.raises(TypeError, match="int32"):
        contract.validate(args._replace(u=a["u"].int()))
    contract.validate(args._replace(u=a["u"].to(torch.complex64)), check_dtype=False)  # the reference's case
    with pytest.raises(ValueError, match="x must be None when u has K = 4"):
        contract.validate(args._replace(u=torch.zeros(L, N, 4, C)))
    with pytest.raises(ValueError, match="even number of columns"):
        contract.validate(RecurrenceArgs(torch.zeros(L, N, 3, 3), None, None, torch.zeros(2, 3), torch.zeros(N, 3),
                                         None, None, bidirectional=True))
    with pytest.raises(ValueError, match="bias must be on u's device"):
        contract.validate(args._replace(bias=a["bias"].to("meta")))
    with pytest.raises(TypeError, match="c0 must be a tensor"):
        contract.validate(args._replace(c0=None))

"""Bad inputs give named errors: a ``ValueError`` or ``TypeError`` whose message names the argument, for every
layer (compat layers with `sru`'s argument names)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import parrnn

from .registry import BY_NAME, I, L, N, call, layers


@dataclass(frozen=True)
class Bad:
    """One bad call: ``run(layer, model)`` must raise one of ``errors`` with a message matching ``names``."""

    run: Callable
    names: str
    families: tuple[str, ...] = ("parrnn", "sliced", "compat")
    errors: tuple[type[Exception], ...] = (ValueError, TypeError)


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype)


def _mask(shape: tuple[int, int]) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.bool)


def _state_of_wrong_shape(layer, model):
    with torch.no_grad():
        state = call(layer, model, _x(L, N, I), **layer.forward_kwargs)[1]
    if isinstance(state, torch.Tensor):
        bad = state[:, :1]  # batch 1 instead of N
    elif isinstance(state, tuple):
        bad = tuple(s[:, :1] for s in state)
    else:  # a state object: its cell state's batch cut
        import dataclasses

        bad = dataclasses.replace(state, c=state.c[:, :1])
    return call(layer, model, _x(L, N, I), bad, **layer.forward_kwargs)


def _step_and_forward_with_empty_batch(layer, model):
    """step() with N = 0 must do what forward with N = 0 does: both raise (named), or both return empty."""
    outcomes = []
    for run in (lambda: call(layer, model, _x(L, 0, I), **layer.forward_kwargs),
                lambda: model.step(_x(0, I), None)):
        try:
            outcomes.append(("ok", tuple(run()[0].shape[1:])))
        except (ValueError, TypeError) as exc:
            outcomes.append(("raised", type(exc).__name__, str(exc)))
    forward, step = outcomes
    assert forward[0] == step[0], f"forward with N=0: {forward}; step with N=0: {step}"
    if forward[0] == "raised":
        raise ValueError(forward[2])
    raise ValueError("input: both accept N=0 (consistent)")  # named, so the case passes


def _bidirectional_step(layer, model):
    return model.step(_x(N, I), None)


BAD: dict[str, Bad] = {
    "input-2d": Bad(lambda la, m: call(la, m, _x(L, I)), r"input"),
    "input-4d": Bad(lambda la, m: call(la, m, _x(L, N, I, 1)), r"input"),
    "input-features": Bad(lambda la, m: call(la, m, _x(L, N, I + 1)), r"input|input_size"),
    "input-dtype": Bad(lambda la, m: call(la, m, _x(L, N, I, dtype=torch.float64)), r"input|dtype"),
    "input-int": Bad(lambda la, m: call(la, m, torch.ones(L, N, I, dtype=torch.int64)), r"input|dtype"),
    "lengths-too-long": Bad(lambda la, m: call(la, m, _x(L, N, I), lengths=[L + 1, 1, 1]), r"lengths",
                            ("parrnn", "sliced")),
    "lengths-zero": Bad(lambda la, m: call(la, m, _x(L, N, I), lengths=[0, 1, 1]), r"lengths", ("parrnn", "sliced")),
    "lengths-count": Bad(lambda la, m: call(la, m, _x(L, N, I), lengths=[L, 1]), r"lengths", ("parrnn", "sliced")),
    "lengths-None-entry": Bad(lambda la, m: call(la, m, _x(L, 2, I), lengths=[None, 2]), r"lengths",
                              ("parrnn", "sliced")),
    "lengths-float": Bad(lambda la, m: call(la, m, _x(L, N, I), lengths=torch.tensor([2.0, 1.0, 1.0])), r"lengths",
                         ("parrnn", "sliced")),
    "lengths-meta": Bad(lambda la, m: call(la, m, _x(L, N, I), lengths=torch.ones(N, dtype=torch.int64,
                                                                                   device="meta")),
                        r"lengths", ("parrnn", "sliced")),
    "mask-shape": Bad(lambda la, m: call(la, m, _x(L, N, I), mask=_mask((L + 1, N))), r"mask"),
    "mask-batch-first": Bad(lambda la, m: call(la, m, _x(L, N, I), mask=_mask((N, L))), r"mask"),
    "mask-and-lengths": Bad(lambda la, m: call(la, m, _x(L, N, I), lengths=[L, 1, 1], mask=_mask((L, N))),
                            r"mask|lengths", ("parrnn", "sliced")),
    "state-shape": Bad(_state_of_wrong_shape, r"state|c0|hx", ("parrnn", "compat")),
    "step-empty-batch": Bad(_step_and_forward_with_empty_batch, r"input|batch|N", ("parrnn",)),
    "step-bidirectional": Bad(_bidirectional_step, r"bidirectional", ("parrnn",), (ValueError,)),
}


def _cases() -> list:
    cases = [pytest.param(la.name, "step-bidirectional", id=f"{la.name}-step-bidirectional")
             for la in layers(bidirectional=True) if la.family == "parrnn"]
    for la in layers():
        for key, bad in BAD.items():
            if key == "step-bidirectional":
                continue  # the bidirectional variants, above
            if la.family not in bad.families or (key.startswith("step-") and not la.step):
                continue
            cases.append(pytest.param(la.name, key, id=f"{la.name}-{key}"))
    return cases


@pytest.mark.parametrize(("name", "case"), _cases())
def test_bad_input_gives_a_named_error(name: str, case: str) -> None:
    layer, bad = BY_NAME[name], BAD[case]
    model = layer.make()
    with pytest.raises(bad.errors) as info:
        bad.run(layer, model)
    message = str(info.value)
    assert "unexpected keyword argument" not in message, f"the protocol's argument is missing: {message}"
    assert re.search(bad.names, message), f"the message must name {bad.names!r}: {message}"


@pytest.mark.parametrize("window", [2.0, "2", 3])
def test_qrnn_window_must_be_the_int_1_or_2(window) -> None:
    with pytest.raises((ValueError, TypeError), match="window"):
        parrnn.QRNN(I, 6, window=window)


def test_an_unknown_parrnn_gemm_engine_is_an_error_naming_the_variable() -> None:
    """``PARRNN_GEMM=bogus`` (read at the first matrix product) fails with an error that names the variable, in
    every layer's first forward, rather than an unnamed error or a silent default."""
    code = ("import torch, parrnn\n"
            "for make in (lambda: parrnn.SRU(5, 6, num_layers=1), lambda: parrnn.MinGRU(5, 6)):\n"
            "    try:\n"
            "        make()(torch.randn(3, 2, 5))\n"
            "    except (ValueError, RuntimeError) as exc:\n"
            "        assert 'PARRNN_GEMM' in str(exc), exc\n"
            "    else:\n"
            "        raise AssertionError('PARRNN_GEMM=bogus was accepted')\n")
    env = {**os.environ, "PARRNN_GEMM": "bogus"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

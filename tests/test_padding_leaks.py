"""Padding never leaks: NaN or inf in padded steps (and in padded memory of SRU++) changes no output and no gradient.

Every layer type on every CPU backend that runs it: the outputs, the final states and all gradients (parameters
and input) are finite and equal to those of the same batch with zeros in the padded positions (issue 21,
section 3).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import parrnn
import parrnn.compat.sru as compat

LENGTHS = [5, 3, 2]  # the reproduction: L = 6, three sequences
L, N, D = 6, len(LENGTHS), 8


def _backends(linear: bool) -> list[str]:
    names = ["reference", "sequential"] + (["scan"] if linear else [])
    return [name for name in names if parrnn.available_backends()[f"sru {name}"][0]]


def _poison(x: torch.Tensor, pad: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` ``(L, N, D)`` with NaN, +inf or -inf (drawn per element) where ``pad`` ``(L, N)`` is True."""
    g = torch.Generator().manual_seed(seed)
    bad = torch.tensor([float("nan"), float("inf"), -float("inf")])[torch.randint(0, 3, x.shape, generator=g)]
    return torch.where(pad.unsqueeze(-1), bad, x)


def _pad_mask(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length).unsqueeze(1) >= torch.tensor(lengths).unsqueeze(0)


# id -> (build(backend), call(model, x, memory) -> (output, state), linear, uses memory)
Call = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
PAD = _pad_mask(LENGTHS, L)
MEMORY_PAD = _pad_mask([4, 2, 1], 4)  # (M, N) = (4, 3)


def _sru_call(model, x, memory):
    return model(x, lengths=torch.tensor(LENGTHS))[:2]


def _mask_call(model, x, memory):
    return model(x, mask_pad=PAD)[:2]


def _srupp_call(model, x, memory):
    mems = None if memory is None else [memory, memory.new_zeros(4, N, model.output_size)]
    out, c_n, _ = model(x, lengths=torch.tensor(LENGTHS), attn_mask="causal", memory=mems,
                        memory_mask_pad=None if memory is None else MEMORY_PAD)
    return out, c_n


def _srupp_cell_call(model, x, memory):
    out, c_n, _ = model(x, mask_pad=PAD, memory=memory, memory_mask_pad=None if memory is None else MEMORY_PAD)
    return out, c_n


def _with_alpha(model: nn.Module, alpha: float) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.fill_(alpha)
    return model


CASES: dict[str, tuple[Callable[[str], nn.Module], Call, bool, bool]] = {
    "SRU-v2": (lambda b: parrnn.SRU(D, D, 2, backend=b), _sru_call, False, False),
    "SRU-v1": (lambda b: parrnn.SRU(D, D, 2, version="v1", backend=b), _sru_call, True, False),
    "SRU-bidir-layernorm-proj": (lambda b: parrnn.SRU(D, 5, 2, bidirectional=True, layer_norm=True,
                                                      projection_size=4, backend=b), _sru_call, False, False),
    "SRU-normalize_after": (lambda b: parrnn.SRU(D, 6, 2, layer_norm=True, normalize_after=True, backend=b),
                            _sru_call, False, False),
    "SRUCell": (lambda b: parrnn.SRUCell(D, 6, backend=b), _mask_call, False, False),
    "SRUpp-alpha0": (lambda b: parrnn.SRUpp(D, D, 4, 2, num_heads=2, backend=b), _srupp_call, False, False),
    "SRUpp-alpha": (lambda b: _with_alpha(parrnn.SRUpp(D, D, 4, 2, num_heads=2, layer_norm=True, backend=b), 0.7),
                    _srupp_call, False, False),
    "SRUpp-memory": (lambda b: _with_alpha(parrnn.SRUpp(D, D, 4, 2, backend=b), 0.7), _srupp_call, False, True),
    "SRUpp-bidir-noattention": (lambda b: parrnn.SRUpp(D, 5, 4, 2, bidirectional=True, attention_last_n_layers=1,
                                                       backend=b), _srupp_call, False, False),
    "SRUppCell-memory": (lambda b: _with_alpha(parrnn.SRUppCell(D, 6, 4, backend=b), 0.7), _srupp_cell_call,
                         False, True),
    "compat.SRU": (lambda b: compat.SRU(D, D, 2, layer_norm=True), _mask_call, False, False),
    "compat.SRU-v1-bidir": (lambda b: compat.SRU(D, 5, 2, v1=True, bidirectional=True), _mask_call, True, False),
    "compat.SRUCell": (lambda b: compat.SRUCell(D, 6), _mask_call, False, False),
}
PARAMS = [pytest.param(case, backend, id=f"{case}-{backend}")
          for case, (_, _, linear, _) in CASES.items() for backend in _backends(linear)]


def _set_backend(model: nn.Module, backend: str) -> None:
    for module in model.modules():  # the compat classes take the backend as an attribute of each cell
        if isinstance(module, compat.SRUCell):
            module.backend = backend


def _run(model: nn.Module, call: Call, x: torch.Tensor, memory: torch.Tensor | None) -> dict[str, torch.Tensor]:
    model.zero_grad()
    x = x.clone().requires_grad_()
    memory = None if memory is None else memory.clone().requires_grad_()
    out, state = call(model, x, memory)
    g = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, generator=g)).sum() + state.sin().sum()
    loss.backward()
    result = {"output": out.detach(), "state": state.detach(), "grad input": x.grad}
    if memory is not None:
        result["grad memory"] = memory.grad
    result.update({f"grad {name}": p.grad for name, p in model.named_parameters() if p.grad is not None})
    return result


@pytest.mark.parametrize(("case", "backend"), PARAMS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_nan_and_inf_in_padding_reach_no_value_and_no_gradient(case: str, backend: str, training: bool) -> None:
    build, call, _, uses_memory = CASES[case]
    torch.manual_seed(0)
    model = build(backend).train(training)
    _set_backend(model, backend)
    x = torch.randn(L, N, D)
    memory = torch.randn(4, N, D) if uses_memory else None
    torch.manual_seed(1)  # the same dropout masks in both runs
    clean = _run(model, call, torch.where(PAD.unsqueeze(-1), 0.0, x),
                 None if memory is None else torch.where(MEMORY_PAD.unsqueeze(-1), 0.0, memory))
    for seed in range(2):
        torch.manual_seed(1)
        poisoned = _run(model, call, _poison(x, PAD, seed), None if memory is None else _poison(memory, MEMORY_PAD,
                                                                                               seed + 7))
        assert poisoned.keys() == clean.keys()
        for name, value in poisoned.items():
            assert torch.isfinite(value).all(), f"{name}: {int((~torch.isfinite(value)).sum())} non-finite"
            torch.testing.assert_close(value, clean[name], rtol=0, atol=0, msg=name)

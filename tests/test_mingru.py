"""MinGRU/MinLSTM against the reference package ``minGRU-pytorch`` 0.2.1 (skipped when it is absent: it is
installed by scripts/bootstrap.sh with ``pip install --no-deps --target .venv/mingru``), and the accuracy of
parrnn's linear form against the paper's log-space form, both against float64."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import parrnn

ROOT = Path(__file__).resolve().parents[1]


def _mingru_path() -> Path | None:
    candidates = [os.environ.get("PARRNN_MINGRU_PATH"), Path(sys.prefix) / "mingru", ROOT / ".venv" / "mingru"]
    for c in candidates:
        if c and (Path(c) / "minGRU_pytorch" / "minGRU.py").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="module")
def reference():
    """The reference layer classes ``{"minGRU": ..., "minLSTM": ...}`` (imported from its --target folder)."""
    path = _mingru_path()
    if path is None:
        pytest.skip("minGRU-pytorch 0.2.1 is not installed (scripts/bootstrap.sh installs it into .venv/mingru)")
    sys.path.insert(0, str(path))
    try:
        return {name: getattr(importlib.import_module(f"minGRU_pytorch.{name}"), name)
                for name in ("minGRU", "minLSTM")}
    finally:
        sys.path.remove(str(path))


@pytest.mark.parametrize("expansion", [1.0, 1.5])
@pytest.mark.parametrize("kind", ["minGRU", "minLSTM"])
def test_a_user_switching_from_mingru_pytorch_gets_the_same_numbers(reference, kind: str, expansion: float) -> None:
    """Two reference layers applied in turn == parrnn's 2-layer stack built from their weights (batch first)."""
    torch.manual_seed(0)
    module_class = reference[kind]
    layers = [module_class(8, expansion_factor=expansion) for _ in range(2)]
    x = torch.randn(3, 20, 8)
    expected = layers[1](layers[0](x))
    cls = parrnn.MinGRU if kind == "minGRU" else parrnn.MinLSTM
    model = cls.from_mingru_pytorch(*layers)
    assert model.hidden_size == int(8 * expansion) and model.output_projection_size == (8 if expansion != 1.0 else 0)
    out, h_n = model(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # the reference's sequential mode, one token at a time with its hidden state
    state, step_out = None, []
    first = layers[0]
    for t in range(x.size(1)):
        y, state = first(x[:, t:t + 1], state, return_next_prev_hidden=True)
        step_out.append(y)
    single = cls.from_mingru_pytorch(first)
    out_1, h_1 = single(x)
    torch.testing.assert_close(out_1, torch.cat(step_out, dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_1[0], state[:, 0], rtol=1e-4, atol=1e-5)


def test_mingru_state_passing_matches_the_reference(reference) -> None:
    """minGRU-pytorch's ``prev_hidden`` is the state itself (``h_n`` in, its log in the scan): same numbers."""
    torch.manual_seed(0)
    layer = reference["minGRU"](6)
    x = torch.randn(2, 9, 6)
    _, hidden = layer(x[:, :4], return_next_prev_hidden=True)
    expected = layer(x[:, 4:], hidden)
    model = parrnn.MinGRU.from_mingru_pytorch(layer)
    _, h_n = model(x[:, :4])
    torch.testing.assert_close(h_n[0], hidden[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x[:, 4:], h_n)[0], expected, rtol=1e-4, atol=1e-5)


def test_conversion_checks_the_layers(reference) -> None:
    with pytest.raises(ValueError, match="at least one"):
        parrnn.MinGRU.from_mingru_pytorch()
    with pytest.raises(ValueError, match="must all have dim 8"):
        parrnn.MinGRU.from_mingru_pytorch(reference["minGRU"](8), reference["minGRU"](8, 2.0))


# ---- linear form vs log-space form ----------------------------------------------------------------------------------

def _log_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


def log_space_mingru(model: parrnn.MinGRU, x: torch.Tensor) -> torch.Tensor:
    """The paper's parallel mode for one layer from a zero state (appendix B: Heinsen's log-space scan)."""
    u = model.layers[0].project(x)
    gate, candidate = u[:, :, 1], u[:, :, 0]
    log_coeffs, log_values = -F.softplus(gate), -F.softplus(-gate) + _log_g(candidate)
    a_star = log_coeffs.cumsum(0)
    return (a_star + (log_values - a_star).logcumsumexp(0)).exp()


def test_linear_form_is_more_accurate_than_log_space_in_float32() -> None:
    """float32 against the same layer in float64: the fused linear form stays at rounding level (3.7e-7 relative
    at L=4096 here) while the log-space form's cumulative sums drift (3.4e-4); docs/cells.md quotes these."""
    torch.manual_seed(0)
    model = parrnn.MinGRU(32, 32, activation="g")
    x = torch.randn(4096, 2, 32)
    with torch.no_grad():
        exact = model.double()(x.double())[0]
        model.float()
        linear = model(x)[0].double()
        log_space = log_space_mingru(model, x).double()
    linear_err = ((linear - exact).abs() / exact.abs()).max().item()
    log_err = ((log_space - exact).abs() / exact.abs()).max().item()
    assert linear_err < 2e-6
    assert log_err > 20 * linear_err

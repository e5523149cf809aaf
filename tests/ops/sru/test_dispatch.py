"""parrnn.ops.sru.dispatch: the SRU op over the registry -- availability per (backend, device, dtype), the
``auto`` table, precompile()."""

from __future__ import annotations

import pytest
import torch

import parrnn
from parrnn.ops import build
from parrnn.ops.sru import dispatch


def _compiler_or_skip() -> None:
    try:
        build.find_compiler()
    except build.BuildError as exc:  # pragma: no cover
        pytest.skip(str(exc))


def test_precompile_cpu() -> None:
    _compiler_or_skip()
    report = parrnn.precompile("cpu", dtypes=[torch.float32, torch.bfloat16])
    assert {"sru sequential float32", "sru scan float32", "sru sequential bfloat16", "sru scan bfloat16",
            "linear_recurrence sequential float32", "gru_rows sequential bfloat16"} <= set(report)
    assert all(ok for ok, _ in report.values()), report


def test_precompile_rejects_other_devices() -> None:
    with pytest.raises(ValueError, match="cpu or cuda"):
        parrnn.precompile("meta")


def test_availability_is_per_device() -> None:
    ok, why = dispatch.backend_availability("cpu", "cuda:0")
    assert not ok and "cpu tensors" in why
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.backend_availability("triton")


def test_auto_table() -> None:
    """Every row names its measurement; per device the last row is the default kernel (no conditions); the only
    alternative rows are on the CPU, where they were measured."""
    for device in ("cpu", "cuda"):
        rows = [r for r in dispatch.AUTO_RULES if r.device == device]
        default = rows[-1]
        assert default.backend == "sequential" and not default.linear_only and default.min_elements == 0
        assert all(r.measurement for r in rows)
    assert [r.backend for r in dispatch.AUTO_RULES if r.device == "cuda"] == ["sequential"]
    assert dispatch.auto_backend(torch.device("meta"), linear=True, batch_columns=1, length=1) == "reference"


def test_unknown_backend_is_a_clear_error() -> None:
    u = torch.zeros(2, 1, 3, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.sru_recurrence(u, None, None, torch.zeros(2, 4), torch.zeros(1, 4), None, None, backend="seq")

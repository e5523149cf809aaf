"""The kernels' shared dtype table and argument helpers (parrnn/ops/launch.py)."""

from __future__ import annotations

import pytest
import torch

from parrnn.ops import launch


def test_dtype_table() -> None:
    assert launch.dtype_suffix(torch.bfloat16) == "bf16"
    assert launch.DTYPE_SUFFIXES == ("f32", "f64", "f16", "bf16")
    assert launch.acc_dtype(torch.float16) == torch.float32 and launch.acc_dtype(torch.float64) == torch.float64
    with pytest.raises(TypeError, match="unsupported dtype"):
        launch.dtype_suffix(torch.int8)

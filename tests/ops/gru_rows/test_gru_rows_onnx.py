"""The GRU levels of SlicedRNN written for ONNX export (parrnn/ops/gru_rows/onnx.py) equal ``torch.nn.GRU``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from parrnn.ops.gru_rows import onnx as onnx_export


@pytest.mark.parametrize(("num_layers", "bidirectional", "bias"), [(1, False, True), (2, True, False)])
def test_gru_equals_nn_gru(num_layers, bidirectional, bias) -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(5, 4, num_layers, bias=bias, bidirectional=bidirectional).double().eval()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = rnn(x)[0]
    torch.testing.assert_close(onnx_export.gru(rnn, x), expected, rtol=1e-12, atol=1e-12)

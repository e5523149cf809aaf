"""The export-path recurrences of parrnn.ops.sru.onnx, called eagerly, against the reference (no onnxruntime needed)."""

from __future__ import annotations

import pytest
import torch

from parrnn.ops.sru import onnx as onnx_export
from parrnn.ops.sru import reference
from parrnn.ops.sru.contract import RecurrenceArgs

# (bidirectional, K, v2 peephole, mask_pad, use_tanh, drop_mask): every option at least once, both directions
CASES = [
    (False, 3, True, False, False, False),
    (False, 4, False, True, True, False),
    (False, 3, False, False, False, True),
    (True, 4, True, True, False, True),
    (True, 3, False, True, True, False),
    (True, 3, True, False, False, False),
]


@pytest.mark.parametrize(("bidirectional", "k", "v2", "masked", "use_tanh", "dropped"), CASES)
def test_recurrence_equals_reference(bidirectional, k, v2, masked, use_tanh, dropped) -> None:
    gen = torch.Generator().manual_seed(0)
    length, batch, hidden = 6, 3, 4
    cols = 2 * hidden if bidirectional else hidden

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u, bias, c0 = randn(length, batch, k, cols), randn(2, cols), randn(batch, cols)
    x = randn(length, batch, cols) if k == 3 else None
    weight_c = randn(2, cols) if v2 else None
    mask_pad = torch.arange(length).unsqueeze(1) >= torch.tensor([6, 2, 4]) if masked else None
    drop_mask = torch.rand(batch, cols, generator=gen, dtype=torch.float64) if dropped else None
    args = (u, x, weight_c, bias, c0, mask_pad, drop_mask)
    options = {"bidirectional": bidirectional, "use_tanh": use_tanh, "scale_x": 1.3}
    h, c_n = onnx_export.recurrence(RecurrenceArgs(*args, **options))
    h_ref, c_ref = reference.sru_recurrence(*args, **options)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_n, c_ref, rtol=1e-12, atol=1e-12)


def test_recurrence_half_storage_computes_in_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(5, 2, 3, 4, generator=gen).to(torch.bfloat16)
    x, bias, c0 = torch.randn(5, 2, 4).to(torch.bfloat16), torch.zeros(2, 4), torch.zeros(2, 4)
    h, c_n = onnx_export.recurrence(RecurrenceArgs(u, x, None, bias, c0, None, None))
    h_ref, c_ref = reference.sru_recurrence(u, x, None, bias, c0, None, None)
    assert h.dtype == torch.bfloat16 and c_n.dtype == torch.float32  # c_n in the state's (c0's) dtype
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c_n, c_ref)

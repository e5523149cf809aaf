"""QRNN (parrnn/qrnn.py): zoneout's evaluation formula.

While training, zoneout keeps a unit's state with probability ``p`` (``f = 1``, no input); in evaluation it uses
the expectation, ``f' = p + (1 - p) f`` and ``b' = (1 - p) b``. At ``p = 0.5`` the formula and its mirror
(``p`` and ``1 - p`` swapped) agree, so the test uses ``p = 0.2`` and writes the recurrence out by hand.
"""

from __future__ import annotations

import pytest
import torch

import parrnn

D, H, L, N = 3, 4, 6, 2


@pytest.mark.parametrize("pooling", ["f", "fo"])
def test_eval_zoneout_uses_the_expected_gates(pooling: str) -> None:
    p = 0.2
    torch.manual_seed(0)
    model = parrnn.QRNN(D, H, 1, pooling=pooling, zoneout=p).double().eval()
    x = torch.randn(L, N, D, dtype=torch.float64)
    layer = model.layers[0]
    u = x @ layer.weight + layer.bias  # (L, N, gates * H), blocks z, f[, o]
    z, f = torch.tanh(u[..., :H]), torch.sigmoid(u[..., H:2 * H])
    o = torch.sigmoid(u[..., 2 * H:3 * H]) if pooling == "fo" else torch.ones_like(z)
    a, b = p + (1 - p) * f, (1 - p) * (1 - f) * z  # the expectation of zoneout's (f, b)
    c, outputs = torch.zeros(N, H, dtype=torch.float64), []
    for t in range(L):
        c = a[t] * c + b[t]
        outputs.append(o[t] * c)
    with torch.no_grad():
        out, c_n = model(x)
    torch.testing.assert_close(out, torch.stack(outputs), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c_n[0], c, rtol=1e-10, atol=1e-12)

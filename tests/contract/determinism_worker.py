"""Run every contract layer's seeded forward and backward once and save the results (run as a script):

    python tests/contract/determinism_worker.py OUT.pt

tests/contract/test_determinism.py runs two of these processes and compares their files bitwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry  # noqa: E402  (by path: this file runs as a script)


def run_all() -> dict[str, list[torch.Tensor] | str]:
    results: dict[str, list[torch.Tensor] | str] = {}
    for layer in registry.layers():
        try:
            model = layer.make(seed=0)
            torch.manual_seed(1)
            x = torch.randn(registry.L, registry.N, registry.I, requires_grad=True)
            out, _ = registry.call(layer, model, x, lengths=[registry.L, 4, 2] if layer.family != "compat" else None)
            out.sin().sum().backward()
            results[layer.name] = [out.detach(), x.grad, *[p.grad for p in model.parameters()]]
        except Exception as exc:  # noqa: BLE001 - recorded; the test reports it for this layer
            results[layer.name] = f"{type(exc).__name__}: {exc}"
    return results


if __name__ == "__main__":
    torch.save(run_all(), sys.argv[1])

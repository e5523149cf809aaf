"""Shared helpers for the transformers integration tests (imported by test modules after their
``pytest.importorskip("transformers")``)."""

from __future__ import annotations

import torch

import parrnn.hf

CELLS = parrnn.hf.available_cells()

#: cell options that give each cell its stateful variant worth testing (QRNN window 2 carries its last input)
OPTIONS = {"qrnn": {"window": 2}, "srupp": {"proj_size": 8, "num_heads": 2}}


def tiny_model(cell: str, *, seed: int = 0, vocab_size: int = 29, hidden_size: int = 16, num_layers: int = 2,
               **overrides) -> parrnn.hf.ParrnnForCausalLM:
    """A small random ParrnnForCausalLM in eval mode (float64 where asked through ``dtype``)."""
    torch.manual_seed(seed)
    dtype = overrides.pop("dtype", torch.float32)
    options = overrides.pop("cell_options", OPTIONS.get(cell, {}))
    config = parrnn.hf.ParrnnConfig(cell=cell, vocab_size=vocab_size, hidden_size=hidden_size,
                                    num_layers=num_layers, intermediate_size=24, cell_options=options, **overrides)
    return parrnn.hf.ParrnnForCausalLM(config).to(dtype).eval()

"""Replacing nn.LSTM in an existing model with parrnn.SRU: the two lines that change, and the speed-up.

    python examples/replace_lstm.py           # times both encoders on one training step
    python examples/replace_lstm.py --tiny    # tiny sizes (used by the test suite)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import parrnn


class Tagger(nn.Module):
    """A sequence tagger written for nn.LSTM; ``use_sru`` swaps the encoder."""

    def __init__(self, vocab: int, dim: int, tags: int, use_sru: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        if use_sru:
            self.encoder = parrnn.SRU(dim, dim // 2, num_layers=2, bidirectional=True, batch_first=True)
        else:
            self.encoder = nn.LSTM(dim, dim // 2, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(dim, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        output, _ = self.encoder(self.embed(tokens))  # both return (output, state); output is (N, L, dim)
        return self.out(output)


def step_time(model: nn.Module, tokens: torch.Tensor, tags: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(tokens).flatten(0, 1), tags.flatten())
        loss.backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    batch, length, dim, repeats = (2, 8, 8, 1) if args.tiny else (32, 256, 512, 3)
    torch.manual_seed(0)
    tokens = torch.randint(0, 1000, (batch, length))
    tags = torch.randint(0, 10, (batch, length))
    result = {}
    for name, use_sru in (("nn.LSTM", False), ("parrnn.SRU", True)):
        result[name] = step_time(Tagger(1000, dim, 10, use_sru), tokens, tags, repeats)
        print(f"{name:11s} training step: {result[name] * 1000:8.1f} ms")
    print(f"speed-up: {result['nn.LSTM'] / result['parrnn.SRU']:.2f}x")
    return result


if __name__ == "__main__":
    main()

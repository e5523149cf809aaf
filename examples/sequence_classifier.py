"""A sequence classifier with a bidirectional SRU encoder, trained on a synthetic task.

The task: is the number of positive values in a noisy sequence above its median? Variable lengths are
handled with ``lengths=``; the classifier pools the encoder output over valid steps.

    python examples/sequence_classifier.py            # ~1 minute on a laptop CPU
    python examples/sequence_classifier.py --tiny     # a few seconds (used by the test suite)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import parrnn


class SRUClassifier(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = parrnn.SRU(input_size, hidden_size, num_layers=2, bidirectional=True, dropout=0.1)
        self.head = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        output, _ = self.encoder(x, lengths=lengths)  # (L, N, 2H), zeros on padded steps
        pooled = output.sum(0) / lengths.unsqueeze(1).to(output.dtype)
        return self.head(pooled)


def make_batch(batch: int, max_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    lengths = torch.randint(max_len // 2, max_len + 1, (batch,), generator=generator)
    x = torch.randn(max_len, batch, 1, generator=generator)
    valid = torch.arange(max_len).unsqueeze(1) < lengths.unsqueeze(0)
    positive_fraction = ((x.squeeze(-1) > 0) & valid).sum(0).float() / lengths.float()
    return x, lengths, (positive_fraction > 0.5).long()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few steps on tiny sizes")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    steps, hidden, max_len = (20, 8, 16) if args.tiny else (args.steps, 64, 100)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = SRUClassifier(1, hidden, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        x, lengths, y = make_batch(32, max_len, gen)
        loss = nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        x, lengths, y = make_batch(512, max_len, gen)
        accuracy = (model(x, lengths).argmax(1) == y).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()

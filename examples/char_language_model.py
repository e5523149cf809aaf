"""A character-level language model with a stacked SRU, trained on a small built-in text.

    python examples/char_language_model.py            # a minute or two on a CPU
    python examples/char_language_model.py --tiny     # a few seconds (used by the test suite)
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import parrnn

TEXT = (
    "Recurrent networks are slow because each step waits for a matrix product on the previous hidden state. "
    "A simple recurrent unit keeps every matrix product outside the recurrence, so the products run for all "
    "time steps at once and only a cheap elementwise recurrence stays sequential. "
) * 20


class CharLM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = parrnn.SRU(hidden, hidden, num_layers=layers, layer_norm=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, c0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        output, c_n = self.rnn(self.embed(tokens), c0)  # tokens (L, N)
        return self.out(output), c_n

    @torch.no_grad()
    def sample(self, prefix: torch.Tensor, steps: int) -> list[int]:
        logits, c = self(prefix.unsqueeze(1))
        token = logits[-1, 0].argmax()
        generated = [int(token)]
        for _ in range(steps - 1):
            logits, c = self(token.view(1, 1), c)
            token = logits[-1, 0].argmax()
            generated.append(int(token))
        return generated


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    steps, hidden, seq = (15, 16, 32) if args.tiny else (args.steps, 128, 128)
    torch.manual_seed(0)
    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(ch) for ch in TEXT])
    model = CharLM(len(chars), hidden, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (16,))
        batch = torch.stack([data[s : s + seq + 1] for s in starts.tolist()], dim=1)  # (seq + 1, 16)
        logits, _ = model(batch[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), batch[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, steps // 8) == 0 or step == steps - 1:  # about 8 lines, the last step included
            print(f"step {step:4d}  loss {loss.item():.3f}  (uniform: {math.log(len(chars)):.3f})")
    model.eval()
    prompt = "Recurrent "
    text = "".join(chars[i] for i in model.sample(torch.tensor([chars.index(c) for c in prompt]), 60))
    print(f"sample: {prompt}{text}")
    return loss.item()


if __name__ == "__main__":
    main()

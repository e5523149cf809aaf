"""ListOps (Nangia & Bowman 2018; the long-range version of Tay et al. 2021): evaluate nested list operations.

An expression such as ``[MAX 2 9 [MIN 4 7 ] 0 ]`` is a tree of operators over digits 0-9:

* ``MAX`` / ``MIN`` -- largest / smallest argument; ``MED`` -- median (rounded down to an integer, as in LRA);
* ``SM`` -- sum modulo 10 (``SUM_MOD``).

The answer is a digit, so this is 10-way classification of a token sequence. Expressions are generated with
depth at most ``max_depth`` (10) and 2..``max_args`` (5) arguments per operator, with a token length drawn
uniformly from ``[min_len, max_len]`` (500-2000 by default) and then generated to about that size.

Tokens: 0 is padding, digits ``d`` are ``d + 1``, then ``[MAX [MIN [MED [SM`` and ``]``.
"""

from __future__ import annotations

import random
import statistics

import torch

from parrnn.experiments.tasks.base import Example, GeneratedDataset, Task

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
CLOSE = "]"
VOCAB = ["<pad>", *(str(d) for d in range(10)), *OPERATORS, CLOSE]
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
NUM_CLASSES = 10


def apply_operator(op: str, args: list[int]) -> int:
    """Value of one operator over integer arguments."""
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(statistics.median(args))
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(tokens: list[str]) -> int:
    """Evaluate a token list (the inverse check of the generator; iterative, so deep trees are fine)."""
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append((tok, []))
        elif tok == CLOSE:
            op, args = stack.pop()
            value = apply_operator(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif stack:
            stack[-1][1].append(int(tok))
        else:
            result = int(tok)
    if stack or result is None:
        raise ValueError("unbalanced ListOps expression")
    return result


def _expression(rng: random.Random, budget: int, depth: int, max_depth: int, max_args: int) -> list[str]:
    """An operator expression of about ``budget`` tokens (at least 4: operator, two digits, close)."""
    op = rng.choice(OPERATORS)
    inner = budget - 2
    if depth >= max_depth or inner <= max_args:
        count = max(2, min(max_args, inner))
        return [op, *(str(rng.randrange(10)) for _ in range(count)), CLOSE]
    n_args = rng.randint(2, max_args)
    weights = [rng.random() + 0.05 for _ in range(n_args)]
    scale = inner / sum(weights)
    out = [op]
    for w in weights:
        share = round(w * scale)
        if share < 4:
            out.append(str(rng.randrange(10)))
        else:
            out.extend(_expression(rng, share, depth + 1, max_depth, max_args))
    out.append(CLOSE)
    return out


def generate_expression(
    rng: random.Random, min_len: int = 500, max_len: int = 2000, *, max_depth: int = 10, max_args: int = 5
) -> list[str]:
    """A random expression whose token length lies in ``[min_len, max_len]``."""
    if not 4 <= min_len <= max_len:
        raise ValueError(f"need 4 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    for _ in range(100):
        tokens = _expression(rng, rng.randint(min_len, max_len), 1, max_depth, max_args)
        if min_len <= len(tokens) <= max_len:
            return tokens
    raise RuntimeError(f"could not generate a ListOps expression with {min_len}..{max_len} tokens")


def listops_example(rng: random.Random, min_len: int = 500, max_len: int = 2000) -> Example:
    """One tokenized example: token ids ``(length,)`` and the answer (0-9)."""
    tokens = generate_expression(rng, min_len, max_len)
    ids = torch.tensor([TOKEN_ID[t] for t in tokens], dtype=torch.int64)
    return ids, torch.tensor(evaluate(tokens))


def listops_task(
    min_len: int = 500, max_len: int = 2000, *, train_size: int = 96_000, test_size: int = 2000, seed: int = 0
) -> Task:
    """ListOps with expressions of ``min_len``..``max_len`` tokens (generated on first use, then cached)."""

    def make(rng: random.Random) -> Example:
        return listops_example(rng, min_len, max_len)

    return Task(
        name="listops",
        input_size=len(VOCAB),
        vocab_size=len(VOCAB),
        num_outputs=NUM_CLASSES,
        readout="last",
        metric="accuracy",
        baseline=None,
        max_length=max_len,
        train=GeneratedDataset(make, train_size, seed, cache=True),
        test=GeneratedDataset(make, test_size, seed + 1_000_003, cache=True),
        description=f"ListOps, {min_len}-{max_len} tokens, depth <= 10",
    )

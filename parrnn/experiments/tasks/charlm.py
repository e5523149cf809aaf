"""Character-level language modelling on Python's reference documentation, with state carried across segments.

The text is the English prose of the Python Language Reference and library topics that every CPython ships in
its standard library, ``pydoc_data/topics.py`` (what ``help("assert")`` prints; about 465,000 characters on
Python 3.11, mostly prose with some code samples). It needs no download and no extra package; it differs a
little between Python versions, so the task description records the version. The topics are joined in sorted
order; the first 90% of the characters train, the last 10% test.

Tokens are UTF-8 bytes (vocabulary 256; the text is nearly all ASCII, so a byte is a character). The metric is
bits per character (``bpc``: mean cross-entropy / ln 2, lower is better).

Batches are *streams*, as in Transformer-XL: the text is cut into ``streams`` contiguous rows, and segment
``k`` of every row forms batch ``k``. A model reads the segments in order and carries its state (recurrent
state; for SRU++ also the previous segment's layer inputs as attention memory) from one batch to the next.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

from parrnn.experiments.tasks.base import Batch, Task

VOCAB_SIZE = 256
TEST_FRACTION = 0.1


@lru_cache(maxsize=1)
def load_text() -> str:
    """The joined topics of ``pydoc_data.topics`` (Python's own reference documentation)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def encode(text: str) -> Tensor:
    """UTF-8 bytes of ``text`` as int64 token ids in ``[0, 256)``."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).to(torch.int64)


class StreamDataset:
    """A token stream cut into ``streams`` rows and consecutive segments of ``seg_len`` tokens.

    ``batch([k])`` is segment ``k`` of every row: inputs ``(streams, seg_len)`` and the next-token targets
    ``(streams, seg_len)``; several indices are stacked along the batch. ``len`` is the number of segments.
    """

    def __init__(self, ids: Tensor, streams: int, seg_len: int) -> None:
        if streams < 1 or seg_len < 1:
            raise ValueError(f"streams and seg_len must be positive, got {streams} and {seg_len}")
        per_row = ids.numel() // streams
        segments = (per_row - 1) // seg_len
        if segments < 1:
            raise ValueError(f"a stream of {ids.numel()} tokens is too short for {streams} rows of at least "
                             f"{seg_len + 1} tokens")
        self.rows = ids[: streams * per_row].view(streams, per_row)
        self.streams, self.seg_len, self.segments = streams, seg_len, segments

    def __len__(self) -> int:
        return self.segments

    def batch(self, indices: Sequence[int]) -> Batch:
        inputs, targets = [], []
        for k in indices:
            if not 0 <= k < self.segments:
                raise IndexError(f"segment {k} out of range for {self.segments} segments")
            start = k * self.seg_len
            inputs.append(self.rows[:, start:start + self.seg_len])
            targets.append(self.rows[:, start + 1:start + self.seg_len + 1])
        return Batch(torch.cat(inputs), torch.cat(targets))


def charlm_task(*, seg_len: int = 256, streams: int = 16, eval_streams: int = 8, limit: int | None = None,
                text: str | None = None) -> Task:
    """Character-level LM on Python's reference documentation (see the module docstring).

    Args:
        seg_len: characters per segment (one training step reads one segment of every stream).
        streams: parallel training streams (the training batch size).
        eval_streams: parallel test streams.
        limit: keep only the first ``limit`` characters of the text (quick runs and tests).
        text: another text instead (tests).
    """
    text = load_text() if text is None else text
    ids = encode(text[:limit] if limit else text)
    split = int(ids.numel() * (1 - TEST_FRACTION))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Task(
        name="charlm",
        train=StreamDataset(ids[:split], streams, seg_len),
        test=StreamDataset(ids[split:], eval_streams, seg_len),
        input_size=VOCAB_SIZE,
        vocab_size=VOCAB_SIZE,
        num_outputs=VOCAB_SIZE,
        readout="every",
        metric="bpc",
        stateful=True,
        description=(f"char-LM on Python {version}'s pydoc_data topics ({ids.numel():,} bytes), "
                     f"segments of {seg_len}, {streams} streams"),
    )

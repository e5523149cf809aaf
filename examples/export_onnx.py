"""Exporting a parrnn SRU model to ONNX and running it in onnxruntime, whole and chunk by chunk (streaming).

    pip install ".[onnx]"                     # from a parrnn checkout: onnx, onnxruntime, onnxscript
    python examples/export_onnx.py            # writes sru_tagger.onnx next to this script's working directory
    python examples/export_onnx.py --tiny     # tiny sizes in a temporary directory (used by the test suite)

The exported model takes any sequence length and batch size, per-sequence ``lengths`` (padded batches), and a
state ``c0`` so it can stream. The graph does not check its inputs: `check_inputs` does, before every run (the
graph runs a length above L as L and a length <= 0 as all padding, silently). See docs/deploying.md for running the
file from C, C++, C#, Java or JavaScript.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

import parrnn


class Tagger(nn.Module):
    """Per-step tags from feature vectors: a unidirectional SRU (so it can stream) and a linear head."""

    def __init__(self, features: int, hidden: int, tags: int, layers: int) -> None:
        super().__init__()
        self.rnn = parrnn.SRU(features, hidden, num_layers=layers, layer_norm=True)
        self.head = nn.Linear(hidden, tags)

    def forward(self, x: torch.Tensor, c0: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(L, N, features)``, ``c0`` ``(layers, N, hidden)``, ``lengths`` ``(N,)`` int64 in ``[1, L]``
        -> logits ``(L, N, tags)`` (padded steps: the head's bias), ``c_n`` (each sequence's state at its end)."""
        out, c_n = self.rnn(x, c0, lengths)
        return self.head(out), c_n


def check_inputs(x: np.ndarray, c0: np.ndarray, lengths: np.ndarray, features: int, hidden: int,
                 layers: int) -> None:
    """The checks the exported graph does not make (PyTorch makes them; ONNX Runtime only checks ranks and dtypes).

    Without them a wrong input runs silently: the graph pads step ``t`` of sequence ``n`` where
    ``t >= lengths[n]``, so a length above ``L`` runs as ``L`` and a length ``<= 0`` pads every step (its logits
    are the head's bias and its ``c_n`` is its ``c0``). Raises ``ValueError`` naming the input.
    """
    if x.ndim != 3 or x.shape[2] != features or x.dtype != np.float32:
        raise ValueError(f"x must be float32 (L, N, {features}), got {x.dtype} {x.shape}")
    length, batch = x.shape[0], x.shape[1]
    if c0.shape != (layers, batch, hidden) or c0.dtype != np.float32:
        raise ValueError(f"c0 must be float32 {(layers, batch, hidden)}, got {c0.dtype} {c0.shape}")
    if lengths.shape != (batch,) or lengths.dtype != np.int64:
        raise ValueError(f"lengths must be int64 ({batch},), got {lengths.dtype} {lengths.shape}")
    if batch and not (lengths.min() >= 1 and lengths.max() <= length):
        raise ValueError(f"lengths must lie in [1, {length}] (the padded length L), got min {lengths.min()}, "
                         f"max {lengths.max()}")


def run_checked(session, x: torch.Tensor, c0: torch.Tensor, lengths: torch.Tensor,
                sizes: tuple[int, int, int]) -> list[np.ndarray]:
    """`check_inputs`, then one run of the exported model in ONNX Runtime."""
    feed = {"x": x.numpy(), "c0": c0.numpy(), "lengths": lengths.numpy()}
    check_inputs(feed["x"], feed["c0"], feed["lengths"], *sizes)
    return session.run(None, feed)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("sru_tagger.onnx"))
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        print("this example needs onnxruntime, onnx and onnxscript: pip install '.[onnx]' from a parrnn checkout")
        return {}
    features, hidden, tags, layers, length, batch = (4, 8, 3, 2, 10, 2) if args.tiny else (40, 256, 20, 3, 500, 8)
    torch.manual_seed(0)
    model = Tagger(features, hidden, tags, layers).eval()  # eval: dropout does not export

    # 1. export once, with the sequence length and the batch size dynamic
    steps, n = Dim("steps"), Dim("batch")
    example = (torch.randn(5, 2, features), torch.zeros(layers, 2, hidden), torch.tensor([5, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, example, dynamo=True, input_names=["x", "c0", "lengths"],
                                    output_names=["logits", "c_n"],
                                    dynamic_shapes={"x": {0: steps, 1: n}, "c0": {1: n}, "lengths": {0: n}})
    path = Path(tempfile.mkdtemp()) / args.out.name if args.tiny else args.out
    program.save(str(path))
    print(f"exported to {path} (opset {program.model_proto.opset_import[0].version})")

    # 2. run a padded batch in onnxruntime, at a length and batch the export never saw
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sizes = (features, hidden, layers)
    x, c0 = torch.randn(length, batch, features), torch.zeros(layers, batch, hidden)
    lengths = torch.full((batch,), length)
    lengths[-1] = max(1, length // 2)
    logits, c_n = run_checked(session, x, c0, lengths, sizes)
    with torch.no_grad():
        expected, c_expected = model(x, c0, lengths)
    whole = float((torch.from_numpy(logits) - expected).abs().max())
    print(f"onnxruntime vs PyTorch, padded batch: max abs difference {whole:.2e}")

    # 3. lengths outside [1, L] would run silently (as L, or as all padding): the input check refuses them
    for bad in (length + 1, 0, -1):
        try:
            run_checked(session, x, c0, torch.full((batch,), bad), sizes)
        except ValueError as exc:
            print(f"lengths {bad} refused: {exc}")
        else:
            raise AssertionError(f"lengths {bad} was not refused")

    # 4. stream: feed chunks of full sequences, each starting from the previous chunk's c_n
    with torch.no_grad():
        expected, c_expected = model(x, c0, torch.full((batch,), length))
    state, pieces = c0, []
    for chunk in x.split(max(1, length // 4)):
        out, c_n = run_checked(session, chunk, state, torch.full((batch,), chunk.size(0)), sizes)
        state = torch.from_numpy(c_n)
        pieces.append(torch.from_numpy(out))
    streamed = float((torch.cat(pieces) - expected).abs().max())
    print(f"onnxruntime chunk by chunk vs whole sequence: max abs difference {streamed:.2e}")
    return {"whole": whole, "streamed": streamed}


if __name__ == "__main__":
    main()

"""Exporting a parrnn SRU model to ONNX and running it in onnxruntime, whole and chunk by chunk (streaming).

    pip install "parrnn[onnx]"                # onnx, onnxruntime, onnxscript
    python examples/export_onnx.py            # writes sru_tagger.onnx next to this script's working directory
    python examples/export_onnx.py --tiny     # tiny sizes in a temporary directory (used by the test suite)

The exported model takes any sequence length and batch size, and a state ``c0`` so it can stream. See
docs/deploying.md for running the file from C, C++, C#, Java or JavaScript.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

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

    def forward(self, x: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(L, N, features)``, ``c0`` ``(layers, N, hidden)`` -> logits ``(L, N, tags)``, ``c_n``."""
        out, c_n = self.rnn(x, c0)
        return self.head(out), c_n


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("sru_tagger.onnx"))
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        print("this example needs onnxruntime, onnx and onnxscript: pip install 'parrnn[onnx]'")
        return {}
    features, hidden, tags, layers, length, batch = (4, 8, 3, 2, 10, 2) if args.tiny else (40, 256, 20, 3, 500, 8)
    torch.manual_seed(0)
    model = Tagger(features, hidden, tags, layers).eval()  # eval: dropout does not export

    # 1. export once, with the sequence length and the batch size dynamic
    steps, n = Dim("steps"), Dim("batch")
    example = (torch.randn(5, 2, features), torch.zeros(layers, 2, hidden))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, example, dynamo=True, input_names=["x", "c0"],
                                    output_names=["logits", "c_n"],
                                    dynamic_shapes={"x": {0: steps, 1: n}, "c0": {1: n}})
    path = Path(tempfile.mkdtemp()) / args.out.name if args.tiny else args.out
    program.save(str(path))
    print(f"exported to {path} (opset {program.model_proto.opset_import[0].version})")

    # 2. run the whole sequence in onnxruntime, at a length and batch the export never saw
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, c0 = torch.randn(length, batch, features), torch.zeros(layers, batch, hidden)
    logits, c_n = session.run(None, {"x": x.numpy(), "c0": c0.numpy()})
    with torch.no_grad():
        expected, c_expected = model(x, c0)
    whole = float((torch.from_numpy(logits) - expected).abs().max())
    print(f"onnxruntime vs PyTorch, whole sequence: max abs difference {whole:.2e}")

    # 3. stream: feed chunks, each starting from the previous chunk's c_n
    state, pieces = c0.numpy(), []
    for chunk in x.split(max(1, length // 4)):
        out, state = session.run(None, {"x": chunk.numpy(), "c0": state})
        pieces.append(torch.from_numpy(out))
    streamed = float((torch.cat(pieces) - expected).abs().max())
    print(f"onnxruntime chunk by chunk vs whole sequence: max abs difference {streamed:.2e}")
    return {"whole": whole, "streamed": streamed}


if __name__ == "__main__":
    main()

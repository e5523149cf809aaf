"""An sru 3.0.0.dev6 SRU++ stack, converted with parrnn's converters, as a ParrnnForCausalLM: saved, loaded with
the Auto classes, its hidden states equal sru's causal output (run in a subprocess: sru 3 and sru 2.6 cannot share
one process)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import parrnn  # noqa: E402
from parrnn.hf.convert import causal_lm_from_srupp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _sru3_path() -> Path | None:
    candidates = [os.environ.get("PARRNN_SRU3_PATH"), Path(sys.prefix) / "sru3", ROOT / ".venv" / "sru3"]
    for c in candidates:
        if c and (Path(c) / "sru" / "__init__.py").exists():
            return Path(c)
    return None


def test_sru3_srupp_stack_round_trips_as_a_causal_lm(tmp_path: Path) -> None:
    path = _sru3_path()
    if path is None:
        pytest.skip("sru 3.0.0.dev6 is not installed (scripts/bootstrap.sh puts it in .venv/sru3)")
    extensions = Path(tempfile.gettempdir()) / "parrnn-sru3-torch-extensions"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(path), str(ROOT)]),
               TORCH_EXTENSIONS_DIR=str(extensions))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "hf" / "_sru3_lm.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["type"] == "ParrnnForCausalLM"
    assert result["hidden"] <= 1e-5 * max(1.0, result["scale"]), result
    assert result["generate_equal"]


def test_a_parrnn_stack_converts_with_its_attention_placement() -> None:
    stack = parrnn.SRUpp(16, 16, 8, num_layers=4, attention_last_n_layers=1).eval()
    model = causal_lm_from_srupp(stack, torch.nn.Embedding(10, 16))
    assert [b.mixer.layer.layers[0].has_attention for b in model.model.layers] == [False, False, False, True]
    ids = torch.randint(0, 10, (2, 6))
    with torch.no_grad():
        expected, _, _ = stack(model.model.embed_tokens(ids).transpose(0, 1), attn_mask="causal")
        hidden = model.model(ids).last_hidden_state.transpose(0, 1)
    torch.testing.assert_close(hidden, expected)
    with pytest.raises(ValueError, match="input_size"):
        causal_lm_from_srupp(parrnn.SRUpp(8, 16, 8, num_layers=1), torch.nn.Embedding(10, 8))

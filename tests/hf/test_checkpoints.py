"""save_pretrained / from_pretrained (safetensors) through the Auto classes in a fresh process; the checkpoint
records the parrnn version; a checkpoint for another cell or size fails with a named error."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import parrnn  # noqa: E402
import parrnn.hf  # noqa: E402
from tests.hf._models import tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

LOAD = """
import json, sys, torch
import parrnn.hf
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(path).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
with torch.no_grad():
    logits = model(ids).logits
out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
print(json.dumps({"type": type(model).__name__, "tokenizer": type(tokenizer).__name__,
                  "logits": logits.flatten().tolist(), "generated": out[0].tolist()}))
"""


@pytest.mark.parametrize("cell", ["srupp"])
def test_round_trip_in_a_fresh_process(cell: str, tmp_path: Path) -> None:
    model = tiny_model(cell)
    model.save_pretrained(tmp_path)
    parrnn.hf.ByteTokenizer().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "parrnn" and saved["cell"] == cell
    assert saved["parrnn_version"] == parrnn.__version__
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["type"] == "ParrnnForCausalLM" and result["tokenizer"] == "ByteTokenizer"
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        expected = model(ids).logits.flatten()
    torch.testing.assert_close(torch.tensor(result["logits"]), expected)
    assert result["generated"] == model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)[0].tolist()


def test_the_version_of_the_checkpoint_is_kept_on_load(tmp_path: Path) -> None:
    model = tiny_model("mingru")
    model.config.parrnn_version = "0.0.9"
    model.save_pretrained(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.parrnn_version == "0.0.9"


@pytest.mark.parametrize("change", [{"cell": "sru"}, {"hidden_size": 24}, {"num_layers": 3},
                                    {"cell": "qrnn", "cell_options": {}}])
def test_a_checkpoint_for_another_cell_or_size_fails_with_a_named_error(change: dict, tmp_path: Path) -> None:
    tiny_model("mingru").save_pretrained(tmp_path)
    config = parrnn.hf.ParrnnConfig.from_pretrained(tmp_path)
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(parrnn.hf.CheckpointMismatchError, match="does not fit ParrnnForCausalLM"):
        AutoModelForCausalLM.from_pretrained(tmp_path, config=config)
    with pytest.raises(parrnn.hf.CheckpointMismatchError, match="'cell': 'mingru'"):
        parrnn.hf.ParrnnForCausalLM.from_pretrained(tmp_path, config=config)


def test_config_overrides_that_change_the_architecture_fail_with_a_named_error(tmp_path: Path) -> None:
    tiny_model("mingru").save_pretrained(tmp_path)
    with pytest.raises(parrnn.hf.CheckpointMismatchError, match="'hidden_size': 24"):
        AutoModelForCausalLM.from_pretrained(tmp_path, hidden_size=24)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dropout=0.1)  # not an architecture field
    assert model.config.dropout == 0.1

"""benchmarks/train_step.py: side-by-side training-step timing and its table, on a tiny generated task."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_every_model_and_writes_ratios(tmp_path) -> None:
    module = _load()
    out = tmp_path / "res"
    argv = ["--task", "adding", "--seq-len", "24", "--models", "gru,sliced-gru,sru", "--hidden", "8",
            "--batch-size", "4", "--threads", "1", "--steps", "4", "--warmup", "1", "--out", str(out)]
    assert module.main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    row = data["threads"]["1"]
    assert set(row) == {"gru", "sliced-gru", "sru"} and all(ms > 0 for ms in row.values())
    assert all(len(s) == 3 for s in data["samples"]["1"].values())
    table = (out / "results.md").read_text()
    assert "gru / sliced-gru" in table and "fastest thread count" in table and data["meta"]["command"] in table


def test_rejects_too_few_steps() -> None:
    with pytest.raises(SystemExit):
        _load().main(["--task", "adding", "--steps", "2", "--warmup", "3"])

"""benchmarks/hf_speed.py: models of matched size, the timers, the summary and resuming (tiny, no timing claims)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import importlib.util  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hf_speed():
    spec = importlib.util.spec_from_file_location("hf_speed", ROOT / "benchmarks" / "hf_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_have_the_same_width_depth_and_parameters_within_10_percent(hf_speed) -> None:
    models, info = hf_speed.build_models(64, 2, 2, 50, 176)
    target = info["llama"]["params"]
    for cell in hf_speed.PARRNN_CELLS:
        assert models[cell].config.hidden_size == 64 and models[cell].config.num_layers == 2
        assert abs(info[cell]["params"] - target) <= 0.1 * target
        assert info[cell]["params"] == hf_speed.count(models[cell])


def test_a_tiny_run_writes_the_table_and_resumes(hf_speed, tmp_path: Path, capsys) -> None:
    argv = ["--tiny", "--threads", "1", "--out", str(tmp_path), "--cells", "mingru", "--lengths", "16",
            "--batches", "2", "--rounds", "1"]
    rows = hf_speed.main(argv)
    lines = (tmp_path / "raw.jsonl").read_text().splitlines()
    assert len(lines) == 6  # 3 models x (generate, raw loop)
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"llama", "llama-static", "mingru"}
    mingru = by_model["mingru"]
    assert mingru["state_bytes"] == 2 * 2 * 32 * 4  # 2 blocks, N=2, H=32, float32
    assert mingru["state_vs_kv"] < 1 and "decode_speedup" in mingru and "generate_overhead_ms" in mingru
    assert "| mingru | 16 | 2 |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["cpu"]
    capsys.readouterr()
    hf_speed.main(argv)  # resumes: nothing measured again
    assert "6 measurements, 6 already in" in capsys.readouterr().out
    assert len((tmp_path / "raw.jsonl").read_text().splitlines()) == 6
    with pytest.raises(SystemExit, match="other settings"):
        hf_speed.main([*argv, "--threads", "2"])

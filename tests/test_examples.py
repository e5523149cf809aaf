"""Every script in examples/ runs on tiny sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_tiny(path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--tiny"])
    assert result is not None
    assert capsys.readouterr().out.strip()


def test_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"sequence_classifier", "char_language_model", "replace_lstm"}

"""The native build cache (``parrnn.ops._cbuild``): its key covers every kernel header, ``.h`` and ``.cuh``."""

from __future__ import annotations

import pytest

from parrnn.ops import _cbuild


@pytest.mark.parametrize("header", ["host_shim.h", "sru_step.cuh"])
def test_digest_changes_with_every_header(tmp_path, monkeypatch, header):
    """A library that includes a changed header must be rebuilt, not loaded stale from the cache."""
    monkeypatch.setattr(_cbuild, "kernel_dir", lambda: tmp_path)
    source = tmp_path / "lib.cpp"
    source.write_text('#include "sru_step.cuh"\n')
    for name in ("host_shim.h", "sru_step.cuh"):
        (tmp_path / name).write_text("// v1\n")
    before = _cbuild._digest([source], ["-O3"], "g++")
    assert _cbuild._digest([source], ["-O3"], "g++") == before  # deterministic
    (tmp_path / header).write_text("// v2\n")
    assert _cbuild._digest([source], ["-O3"], "g++") != before

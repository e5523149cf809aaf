"""parrnn.experiments.allocator: glibc malloc tuning applies once, and stays out of the way of a user's own tuning."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from parrnn.experiments import allocator as _allocator

_PROBE = "import parrnn.experiments.allocator as a; print(a.retain_freed_memory(), a.retain_freed_memory())"


def _probe(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_applies_once_on_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _probe({}) == "True True"


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX_": "2"}, {"MALLOC_TRIM_THRESHOLD_": "0"},
                                 {"LD_PRELOAD": "/nonexistent/libjemalloc.so.2"}])
def test_user_tuning_is_respected(env) -> None:
    assert _probe(env) == "False False"


def test_result_is_cached(monkeypatch) -> None:
    monkeypatch.setattr(_allocator, "_applied", True)
    assert _allocator.retain_freed_memory() is True
    monkeypatch.setattr(_allocator, "_applied", False)
    assert _allocator.retain_freed_memory() is False

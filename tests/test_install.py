"""Install as a user does: build the wheel and the sdist, install the wheel into a fresh folder with the checkout
off the path, and run the README's usage example there -- on the prebuilt CPU libraries, compiling nothing.

Building reuses the on-disk library cache (``$PARRNN_CACHE_DIR``), so with a warm cache the whole module takes
seconds of compiling, not a minute.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

from parrnn.ops import build

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BUILD_MESSAGE = "parrnn: compiling the C++ CPU library"

pytestmark = pytest.mark.slow


def _has_compiler() -> bool:
    try:
        build.find_compiler()
    except build.BuildError:
        return False
    return True


def _copy_checkout(dest: Path) -> Path:
    """The tracked and untracked-but-not-ignored files of the checkout (no build/, egg-info or libraries)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("docs/", "benchmarks/results/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@functools.cache
def build_dists() -> tuple[Path, Path, str]:
    """``(wheel, sdist, build stderr)`` built once per test process from a copy of the checkout."""
    if shutil.which("git") is None:
        pytest.skip("needs git to copy the checkout")
    work = Path(tempfile.mkdtemp(prefix="parrnn-dist-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    src = _copy_checkout(work / "src")
    out = work / "dist"
    wheel = _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-v", "-w",
                  str(out)])
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"],
         cwd=src)
    (found_wheel,) = out.glob("parrnn-*.whl")
    (found_sdist,) = out.glob("parrnn-*.tar.gz")
    return found_wheel, found_sdist, wheel.stdout + wheel.stderr


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    return blocks[0]


def test_wheel_ships_every_cpu_library_for_this_machine() -> None:
    wheel, _, log = build_dists()
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    libs = {n.split("/")[-1] for n in names if n.startswith("parrnn/_lib/")}
    if not _has_compiler():  # pragma: no cover - a machine without a C++ compiler: skipped with a message
        assert not libs and "no C++ compiler" in log
        return
    assert libs == {f"lib{name}.so" for name in build.CPU_LIBRARIES} | {build.MANIFEST}
    assert wheel.name.endswith(f"-py3-none-{wheel.name.rsplit('-', 1)[-1]}") and "-any.whl" not in wheel.name


def test_sdist_has_the_sources_and_no_build_outputs() -> None:
    _, sdist, _ = build_dists()
    with tarfile.open(sdist) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    kernels = {p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh", ".cpp", ".h")}
    assert {n.split("/")[-1] for n in names if n.startswith("kernels/")} >= kernels
    assert "setup.py" in names and "pyproject.toml" in names
    assert not [n for n in names if n.startswith(("parrnn/_lib", "parrnn/_kernels")) or n.endswith(".so")]


def test_readme_example_runs_from_the_installed_wheel_without_compiling(tmp_path) -> None:
    """The README's example in a fresh target with an empty cache: the prebuilt libraries load, nothing is
    compiled (no build message), nothing lands in the cache."""
    wheel, _, _ = build_dists()
    target, cache, cwd = tmp_path / "site", tmp_path / "cache", tmp_path / "cwd"
    cwd.mkdir()
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)])
    script = cwd / "readme_example.py"
    script.write_text(_readme_example() + "\nimport parrnn, json\nprint('PARRNN_FILE=' + parrnn.__file__)\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PARRNN_CACHE_DIR")}
    env.update(PYTHONPATH=str(target), PARRNN_CACHE_DIR=str(cache))
    proc = _run([sys.executable, str(script)], cwd=cwd, env=env)
    assert f"PARRNN_FILE={target}" in proc.stdout, proc.stdout[-2000:]
    if not _has_compiler():  # pragma: no cover
        return
    assert BUILD_MESSAGE not in proc.stderr, proc.stderr[-3000:]
    assert not list(cache.glob("*.so")), sorted(p.name for p in cache.iterdir())


def test_installed_wheel_without_prebuilt_libraries_builds_once_with_a_message(tmp_path) -> None:
    """Where the prebuilt libraries do not fit (here: removed, as after an install without a compiler), the first
    call compiles into the cache and says so once, with what and why."""
    if not _has_compiler():
        pytest.skip("needs a C++ compiler")
    wheel, _, _ = build_dists()
    target, cache = tmp_path / "site", tmp_path / "cache"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)])
    shutil.rmtree(target / "parrnn" / "_lib")
    # gru_rows: the quickest library to compile (a few seconds); loaded twice, announced once
    code = ("import torch\nfrom parrnn.ops.gru_rows import fused_cpu\n"
            "assert fused_cpu.availability()[0]\nassert fused_cpu.availability()[0]\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), PARRNN_CACHE_DIR=str(cache))
    proc = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert proc.stderr.count(BUILD_MESSAGE) == 1, proc.stderr
    assert "'gru_rows_cpu'" in proc.stderr and "no prebuilt libraries are installed" in proc.stderr
    assert "s on 2 cores" in proc.stderr

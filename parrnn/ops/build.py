"""Compile C++ sources into a shared library, lazily, with an on-disk cache; load it with ctypes.

Used by the CPU backend (``kernels/sru_cpu.cpp``) and by the tests that run the CUDA ``.cu`` kernels on the
CPU behind ``kernels/host_shim.h``. No torch headers are involved, so a build takes a second or two; the
library is cached under ``$PARRNN_CACHE_DIR`` (default ``~/.cache/parrnn``) keyed by a hash of the sources,
the included headers, the flags and the compiler, so a changed kernel is rebuilt and an unchanged one is not.
A ``-march=native`` build is also keyed by this CPU's identity (`cpu_tag`), so a cache
directory shared by machines with different CPUs never loads a library built for another CPU (SIGILL).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from parrnn._cpu import cpu_tag
from parrnn._paths import kernel_dir

_loaded: dict[str, ctypes.CDLL] = {}
_lock = threading.Lock()


class BuildError(RuntimeError):
    """The C++ compiler is missing or failed; the message carries the compiler's output."""


def cache_dir() -> Path:
    root = os.environ.get("PARRNN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "parrnn")
    return Path(root)


def find_compiler() -> str:
    """The C++ compiler to use: ``$CXX``, else ``g++``, else ``c++``, else ``clang++``."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    raise BuildError("no C++ compiler found (set CXX, or install g++)")


def cache_key(name: str, sources: Sequence[Path], flags: Sequence[str], compiler: str) -> str:
    """``<name>[-<cpu_tag>]-<digest>``: the library's file stem in the cache. The CPU tag is there exactly when
    ``flags`` contain ``-march=native``."""
    cpu = f"-{cpu_tag()}" if "-march=native" in flags else ""
    return f"{name}{cpu}-{_digest(sources, flags, compiler)}"


def _digest(sources: Sequence[Path], flags: Sequence[str], compiler: str) -> str:
    h = hashlib.sha256()
    for header in sorted(p for p in kernel_dir().iterdir() if p.suffix in (".h", ".cuh")):
        h.update(header.name.encode())
        h.update(header.read_bytes())
    for src in sources:
        h.update(str(src.name).encode())
        h.update(src.read_bytes())
    h.update(" ".join([compiler, *flags]).encode())
    return h.hexdigest()[:16]


def build_library(name: str, sources: Sequence[Path], flags: Sequence[str] = ()) -> ctypes.CDLL:
    """Compile ``sources`` (C++; ``.cu`` files are compiled as C++) into ``lib<name>.so`` and load it.

    Flags always include ``-O3 -shared -fPIC -std=c++17`` and ``-I kernels/``. Raises `BuildError` with
    the compiler output when compilation fails. Cached under `cache_key`.
    """
    compiler = find_compiler()
    all_flags = ["-O3", "-std=c++17", "-shared", "-fPIC", f"-I{kernel_dir()}", *flags]
    key = cache_key(name, sources, all_flags, compiler)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        target = cache_dir() / f"lib{key}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                tmp_target = Path(tmp) / target.name
                cmd = [compiler, *all_flags]
                for src in sources:
                    cmd += ["-x", "c++", str(src)] if src.suffix == ".cu" else [str(src)]
                cmd += ["-o", str(tmp_target)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise BuildError(f"compiling {name} failed:\n$ {' '.join(cmd)}\n{proc.stderr[-4000:]}")
                os.replace(tmp_target, target)  # atomic: concurrent builders never see a half-written library
        lib = ctypes.CDLL(str(target))
        _loaded[key] = lib
        return lib

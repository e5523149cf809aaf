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
from collections.abc import Callable, Sequence
from pathlib import Path

from parrnn._cpu import cpu_tag
from parrnn._paths import kernel_dir, kernel_source

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


#: Flag sets tried in order by `LazyLibrary` (the first that compiles is used, so a compiler without
#: ``-march=native`` or OpenMP still works). Never ``-ffast-math``: NaN and inf must propagate.
COMMON_FLAGS = ("-fno-math-errno", "-fno-trapping-math")
FLAG_LADDER: tuple[tuple[str, ...], ...] = (
    ("-march=native", "-fopenmp", *COMMON_FLAGS),
    ("-fopenmp", *COMMON_FLAGS),
    ("-march=native", *COMMON_FLAGS),
    COMMON_FLAGS,
)


class LazyLibrary:
    """One op's C++ library: built on first use (`FLAG_LADDER`, first flag set that builds and whose
    ``configure(lib)`` -- setting the ctypes signatures -- succeeds), loaded once per process; a failure is
    remembered and raised again (`BuildError` with the compiler output). Each op has its own, so one op's
    build failure never disables another's."""

    def __init__(self, name: str, sources: Sequence[str], configure: Callable[[ctypes.CDLL], None],
                 flag_sets: Sequence[Sequence[str]] = FLAG_LADDER) -> None:
        self.name, self.sources, self.configure, self.flag_sets = name, tuple(sources), configure, flag_sets
        self.flags_used: tuple[str, ...] = ()
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> ctypes.CDLL:
        """The loaded library (compiled on the first call, cached on disk); `BuildError` when nothing builds."""
        with self._lock:
            if self._lib is not None:
                return self._lib
            if self._error is not None:
                raise BuildError(self._error)
            errors = []
            for flags in self.flag_sets:
                try:
                    lib = build_library(self.name, [kernel_source(s) for s in self.sources], flags)
                    self.configure(lib)
                except (BuildError, OSError, AttributeError) as exc:
                    errors.append(str(exc))
                    if "no C++ compiler" in str(exc):
                        break
                    continue
                self._lib, self.flags_used = lib, tuple(flags)
                return lib
            self._error = "\n".join(errors)
            raise BuildError(self._error)

    def failure_summary(self, message: str) -> str:
        """The first compiler error line (or the first line) of a build failure, for ``availability()``."""
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("$")]
        return (errors or lines or ["unknown build error"])[0][:300]

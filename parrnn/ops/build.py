"""The one C++ build and load path: every op's CPU library is found prebuilt, or compiled once into a cache.

Where a library comes from, in order (`LazyLibrary.load`):

1. **Prebuilt, shipped in the wheel** (``parrnn/_lib/``, written by ``setup.py`` through
   `build_all_cpu_libraries` when the wheel is built or ``pip install .`` runs where a compiler exists). Its
   ``manifest.json`` records, per library, a digest of the kernel sources it was built from, its flags, the CPU
   (`cpu_tag`) when it was built with ``-march=native``, the machine, and the torch version and C++ ABI of the
   build. A prebuilt library is used only when all of these match the running process; otherwise it is rejected
   and rebuilt (a library built for another CPU would die of SIGILL; the libraries link no torch symbol --
   ``tests/ops/test_build.py`` checks it -- but a torch change still rebuilds them, so nothing stale ever loads).
2. **The on-disk cache** ``$PARRNN_CACHE_DIR`` (default ``~/.cache/parrnn``), keyed by a hash of the sources,
   every header, the flags and the compiler (and the CPU for ``-march=native``), so a changed kernel is rebuilt
   and an unchanged one is not.
3. **Compiled now**, into that cache. This says so on stderr once per library: which library, why no prebuilt
   one was used, and roughly how long it takes.

The libraries are plain C (``extern "C"`` entry points called through ctypes); no torch headers are involved.
Their entry points return a status code; `check_status` maps it to a named Python error (`KernelError` and
its subclasses).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from parrnn._cpu import cpu_tag
from parrnn._paths import kernel_dir, kernel_source

_loaded: dict[str, ctypes.CDLL] = {}
_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}
_announced: set[str] = set()

#: The folder of prebuilt libraries inside the installed package, and its manifest's name.
PREBUILT_DIR = Path(__file__).resolve().parents[1] / "_lib"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class BuildError(RuntimeError):
    """The C++ compiler is missing or failed; the message carries the compiler's output."""


# ---------------------------------------------------------------- status codes of the C++ entry points


class KernelError(RuntimeError):
    """A C++ kernel returned a non-zero status (`STATUS_CODES` says what each code means)."""


class KernelMemoryError(KernelError, MemoryError):
    """A C++ kernel could not allocate its scratch memory (``std::bad_alloc``)."""


class KernelThreadError(KernelError):
    """A C++ kernel could not start or run its worker threads (``std::system_error``)."""


class KernelArgumentError(KernelError, ValueError):
    """A C++ kernel rejected its arguments (a caller bug: the Python side validates them first)."""


#: Status code -> (exception, what happened). The same codes in every ``kernels/*.cpp`` (``kernels/status.h``).
STATUS_CODES: dict[int, tuple[type[KernelError], str]] = {
    1: (KernelMemoryError, "allocating the kernel's scratch memory failed (std::bad_alloc)"),
    2: (KernelThreadError, "a worker thread failed (std::system_error)"),
    3: (KernelError, "an unexpected C++ exception"),
    11: (KernelArgumentError, "shape arguments out of range (L, N, C < 0, K not 3 or 4, or H * D != C)"),
    12: (KernelArgumentError, "the skip-connection mode does not match x and K"),
    13: (KernelArgumentError, "unknown skip-connection mode"),
}


def check_status(code: int, what: str) -> None:
    """Raise the named error of a C++ entry point's status ``code`` (`STATUS_CODES`); 0 returns. ``what`` names
    the kernel, e.g. ``"sru sequential (cpu) forward"``."""
    if code == 0:
        return
    cls, meaning = STATUS_CODES.get(code, (KernelError, "an unknown status code"))
    raise cls(f"parrnn {what}: {meaning} (status {code})")


# ---------------------------------------------------------------- compiling


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


def _hash_sources(h: hashlib._Hash, sources: Sequence[Path]) -> None:
    for header in sorted(p for p in kernel_dir().iterdir() if p.suffix in (".h", ".cuh")):
        h.update(header.name.encode())
        h.update(header.read_bytes())
    for src in sources:
        h.update(str(src.name).encode())
        h.update(src.read_bytes())


def _digest(sources: Sequence[Path], flags: Sequence[str], compiler: str) -> str:
    """Sources, headers, compiler and flags; not the ``-I`` folder (the headers are hashed by content), so a copy
    of the sources elsewhere (an installed package, a wheel build) reuses the same cached library."""
    h = hashlib.sha256()
    _hash_sources(h, sources)
    h.update(" ".join([compiler, *(f for f in flags if not f.startswith("-I"))]).encode())
    return h.hexdigest()[:16]


def source_digest(sources: Sequence[Path]) -> str:
    """A hash of ``sources`` and every kernel header: what a prebuilt library must have been built from."""
    h = hashlib.sha256()
    _hash_sources(h, sources)
    return h.hexdigest()[:16]


def base_flags() -> list[str]:
    """Flags of every build: ``-O3 -std=c++17 -shared -fPIC -I kernels/``."""
    return ["-O3", "-std=c++17", "-shared", "-fPIC", f"-I{kernel_dir()}"]


def compile_library(name: str, sources: Sequence[Path], flags: Sequence[str] = (),
                    announce: Callable[[], None] | None = None) -> Path:
    """Compile ``sources`` (C++; ``.cu`` files are compiled as C++) into the cache, unless already there; the
    path of ``lib<key>.so`` (`cache_key`). ``announce()`` runs just before an actual compilation. Raises
    `BuildError` with the compiler output when compilation fails."""
    compiler = find_compiler()
    all_flags = [*base_flags(), *flags]
    key = cache_key(name, sources, all_flags, compiler)
    target = cache_dir() / f"lib{key}.so"
    with _lock:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        if target.is_file():
            return target
        if announce is not None:
            announce()
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
    return target


def _load(path: Path) -> ctypes.CDLL:
    with _lock:
        key = str(path)
        if key not in _loaded:
            _loaded[key] = ctypes.CDLL(key)
        return _loaded[key]


def build_library(name: str, sources: Sequence[Path], flags: Sequence[str] = (),
                  announce: Callable[[], None] | None = None) -> ctypes.CDLL:
    """`compile_library` (cached) and load the result (once per process). Flags always include `base_flags`."""
    return _load(compile_library(name, sources, flags, announce))


# ---------------------------------------------------------------- every op's CPU library


#: Never ``-ffast-math``: NaN and inf must propagate. ``-fno-trapping-math`` lets g++ if-convert selects.
COMMON_FLAGS = ("-fno-math-errno", "-fno-trapping-math")
#: Flag sets tried in order (the first that compiles is used, so a compiler without ``-march=native`` or
#: OpenMP still works).
FLAG_LADDER: tuple[tuple[str, ...], ...] = (
    ("-march=native", "-fopenmp", *COMMON_FLAGS),
    ("-fopenmp", *COMMON_FLAGS),
    ("-march=native", *COMMON_FLAGS),
    COMMON_FLAGS,
)
#: Libraries whose threads are std::thread (the chunked scans), not OpenMP.
THREAD_FLAG_LADDER: tuple[tuple[str, ...], ...] = (("-march=native", "-pthread", *COMMON_FLAGS),
                                                  ("-pthread", *COMMON_FLAGS))


@dataclass(frozen=True)
class LibrarySpec:
    """One op's C++ library: its name, its sources in ``kernels/``, the flag sets tried in order and about how
    many seconds it takes to compile on 2 cores (for the message at a build)."""

    name: str
    sources: tuple[str, ...]
    flag_sets: tuple[tuple[str, ...], ...] = FLAG_LADDER
    seconds: int = 20

    def source_paths(self) -> list[Path]:
        return [kernel_source(s) for s in self.sources]


#: Every op's CPU library: what ``setup.py`` prebuilds into the wheel and `build_all_cpu_libraries` builds.
CPU_LIBRARIES: dict[str, LibrarySpec] = {spec.name: spec for spec in (
    LibrarySpec("sru_cpu", ("sru_cpu.cpp",), FLAG_LADDER, 25),
    LibrarySpec("sru_scan_cpu", ("sru_scan_cpu.cpp",), THREAD_FLAG_LADDER, 15),
    LibrarySpec("linear_recurrence_cpu", ("linear_recurrence_cpu.cpp",), THREAD_FLAG_LADDER, 10),
    LibrarySpec("gru_rows_cpu", ("gru_rows_cpu.cpp",), FLAG_LADDER, 3),
)}


def _torch_identity() -> dict[str, object] | None:
    """The running torch's version and C++ ABI, or ``None`` when torch is not imported (an isolated build)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return {"version": str(torch.__version__), "cxx11_abi": bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))}


def prebuilt_library(spec: LibrarySpec, folder: Path | None = None) -> tuple[Path | None, str]:
    """``(path, "")`` of the prebuilt ``spec`` library in ``folder`` (default `PREBUILT_DIR`) when it matches
    this process -- its sources, machine, CPU (for ``-march=native``) and torch -- else ``(None, why not)``."""
    folder = PREBUILT_DIR if folder is None else folder
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None, "no prebuilt libraries are installed: a source checkout, or an install without a C++ compiler"
    entry = manifest.get("libraries", {}).get(spec.name) if manifest.get("format") == MANIFEST_FORMAT else None
    if not isinstance(entry, dict):
        return None, f"no prebuilt {spec.name} library is installed"
    if entry.get("sources") != source_digest(spec.source_paths()):
        return None, "the kernel sources differ from those the prebuilt library was built from"
    if manifest.get("machine") != platform.machine():
        return None, f"the prebuilt library is for {manifest.get('machine')}, this is {platform.machine()}"
    if "-march=native" in entry.get("flags", []) and manifest.get("cpu_tag") != cpu_tag():
        return None, "the prebuilt library was built for another CPU (its instruction set may not run here)"
    built_torch, running_torch = manifest.get("torch"), _torch_identity()
    if built_torch is not None and running_torch is not None and built_torch != running_torch:
        return None, (f"the prebuilt library was built with torch {built_torch.get('version')}, this is torch "
                      f"{running_torch['version']}")
    path = folder / str(entry.get("file", ""))
    if not path.is_file():
        return None, f"the prebuilt library file {path.name} is missing"
    return path, ""


def _announce(spec: LibrarySpec, why: str) -> None:
    """Say once per process and library, on stderr, that ``spec`` is being compiled now, why, and how long."""
    with _lock:
        if spec.name in _announced:
            return
        _announced.add(spec.name)
    print(f"parrnn: compiling the C++ CPU library {spec.name!r} now, once (about {spec.seconds}-{2 * spec.seconds} s "
          f"on 2 cores; then cached in {cache_dir()}). Why: {why}. Installing with a C++ compiler present "
          "(`pip install .`) ships it prebuilt; `parrnn.precompile()` builds every library ahead of time.",
          file=sys.stderr, flush=True)


class LazyLibrary:
    """One op's C++ library (`LibrarySpec`): the prebuilt one when it matches (`prebuilt_library`), else the
    cached or freshly compiled build of the first flag set that compiles and whose ``configure(lib)`` -- setting
    the ctypes signatures -- succeeds; loaded once per process. A failure is remembered and raised again
    (`BuildError` with the compiler output). Each op has its own, so one op's build failure never disables
    another's."""

    def __init__(self, spec: LibrarySpec | str, configure: Callable[[ctypes.CDLL], None]) -> None:
        self.spec = CPU_LIBRARIES[spec] if isinstance(spec, str) else spec
        self.name, self.configure = self.spec.name, configure
        self.flags_used: tuple[str, ...] = ()
        self.origin = ""  # "prebuilt" or the cached library's path, once loaded
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> ctypes.CDLL:
        """The loaded library (prebuilt, cached, or compiled now with a message); `BuildError` when nothing
        builds."""
        with self._lock:
            if self._lib is not None:
                return self._lib
            if self._error is not None:
                raise BuildError(self._error)
            path, why = prebuilt_library(self.spec)
            if path is not None:
                try:
                    lib = _load(path)
                    self.configure(lib)
                    flags = json.loads((path.parent / MANIFEST).read_text())["libraries"][self.name]["flags"]
                    self._lib, self.flags_used, self.origin = lib, tuple(flags), "prebuilt"
                    return lib
                except (OSError, AttributeError, KeyError, ValueError) as exc:
                    why = f"the prebuilt library failed to load: {exc}"
            errors = []
            for flags in self.spec.flag_sets:
                try:
                    target = compile_library(self.name, self.spec.source_paths(), flags,
                                             announce=lambda: _announce(self.spec, why))
                    lib = _load(target)
                    self.configure(lib)
                except (BuildError, OSError, AttributeError) as exc:
                    errors.append(str(exc))
                    if "no C++ compiler" in str(exc):
                        errors.append(f"(no usable prebuilt library: {why})")
                        break
                    continue
                self._lib, self.flags_used, self.origin = lib, tuple(flags), str(target)
                return lib
            self._error = "\n".join(errors)
            raise BuildError(self._error)

    def failure_summary(self, message: str) -> str:
        """The first compiler error line (or the first line) of a build failure, for ``availability()``."""
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("$")]
        return (errors or lines or ["unknown build error"])[0][:300]


def _build_one(spec: LibrarySpec) -> tuple[Path, tuple[str, ...]]:
    """The cached library of ``spec``'s first flag set that compiles, and those flags; `BuildError` if none."""
    errors = []
    for flags in spec.flag_sets:
        try:
            return compile_library(spec.name, spec.source_paths(), flags), tuple(flags)
        except BuildError as exc:
            errors.append(str(exc))
            if "no C++ compiler" in str(exc):
                break
    raise BuildError("\n".join(errors))


def build_all_cpu_libraries(target: Path | str | None = None, *, jobs: int | None = None,
                            quiet: bool = False) -> dict[str, Path]:
    """Build every op's CPU library (`CPU_LIBRARIES`): ``{name: path}``.

    Without ``target``: makes sure each library is usable without compiling at first use -- a matching
    prebuilt library is kept, the others are compiled into the cache (``parrnn.precompile("cpu")``). With
    ``target`` (``setup.py``): every library is built (or taken from the cache) and copied into ``target``
    with a ``manifest.json`` (`prebuilt_library` reads it). Compiles up to ``jobs`` libraries at once (default:
    the CPU count); says on stderr what it compiles unless ``quiet``. Raises `BuildError` when a library must be
    compiled and cannot be (no compiler, or no flag set compiles).
    """
    specs = list(CPU_LIBRARIES.values())
    if target is None:
        found = {s.name: prebuilt_library(s)[0] for s in specs}
        specs = [s for s in specs if found[s.name] is None]
        result: dict[str, Path] = {name: path for name, path in found.items() if path is not None}
    else:
        result = {}
    if specs:
        find_compiler()
    if specs and not quiet:
        names = ", ".join(s.name for s in specs)
        print(f"parrnn: building the C++ CPU libraries {names} (those not already in the cache {cache_dir()}: up "
              f"to about {sum(s.seconds for s in specs)} s on 2 cores)", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1)) as pool:
        built = dict(zip([s.name for s in specs], pool.map(_build_one, specs), strict=True))
    if target is not None:
        folder = Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        entries = {}
        for spec in specs:
            path, flags = built[spec.name]
            shutil.copy2(path, folder / f"lib{spec.name}.so")
            result[spec.name] = folder / f"lib{spec.name}.so"
            entries[spec.name] = {"file": f"lib{spec.name}.so", "flags": list(flags),
                                  "sources": source_digest(spec.source_paths())}
        manifest = {"format": MANIFEST_FORMAT, "machine": platform.machine(), "cpu_tag": cpu_tag(),
                    "torch": _torch_identity(), "libraries": entries}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    else:
        result.update({name: path for name, (path, _) in built.items()})
    if specs and not quiet:
        print(f"parrnn: {len(specs)} C++ CPU libraries ready in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    return result

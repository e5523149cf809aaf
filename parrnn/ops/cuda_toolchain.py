"""What NVRTC compiles, for every op's CUDA kernels: the ``.cu`` source with its local headers inlined
(`kernel_code`, with ``#line`` markers so errors name the real file), the pip CUDA headers that match an NVRTC
version (`cuda_include_dirs`) and the compile options (`nvrtc_options`). Used by the CuPy runtime
(`parrnn.ops.cuda_runtime`) and by ``scripts/nvrtc_check.py`` (CI compiles every kernel without a GPU).
"""

from __future__ import annotations

import re
import site
import sys
from pathlib import Path

from parrnn._paths import kernel_dir, kernel_source

#: ``nvidia/<dir>/include`` folders of the pip CUDA headers, per NVRTC major version (other versions: all).
_HEADER_DIRS = {13: ("cu13",), 12: ("cuda_runtime", "cu12")}


def cuda_include_dirs(nvrtc_major: int | None = None) -> list[str]:
    """CUDA header folders from pip wheels that match NVRTC ``nvrtc_major`` (``nvidia/cu13/include`` for 13,
    ``nvidia/cuda_runtime/include`` or ``nvidia/cu12/include`` for 12; every one found for ``None``)."""
    subs = _HEADER_DIRS.get(nvrtc_major, ("cu13", "cuda_runtime", "cu12"))
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    found: list[str] = []
    for root in roots:
        for sub in subs:
            p = Path(root) / "nvidia" / sub / "include"
            if (p / "cuda_fp16.h").is_file() and str(p) not in found:
                found.append(str(p))
    return found


def kernel_code(kernel_file: str) -> str:
    """The source of ``kernels/<kernel_file>`` with its local ``#include "..."`` headers inlined (except the host
    shim), with ``#line`` markers so that NVRTC's messages name the real file and line.

    Inlining makes the code text cover every header, so CuPy's on-disk cache (keyed by the code and options,
    not by included files) can never serve a binary built from an older ``sru_step.cuh``.
    """
    seen: set[str] = set()

    def expand(path: Path) -> str:
        out = [f'#line 1 "{path.name}"']
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and m.group(1) != "host_shim.h":
                name = m.group(1)
                if name not in seen:
                    seen.add(name)
                    out.append(expand(kernel_dir() / name))
                out.append(f'#line {number + 1} "{path.name}"')
                continue
            out.append(line)
        return "\n".join(out)

    return expand(kernel_source(kernel_file))


def nvrtc_options(suffix: str | None = None, prefetch: int | None = None,
                  nvrtc_major: int | None = None) -> tuple[str, ...]:
    """NVRTC options: the pip CUDA headers for NVRTC ``nvrtc_major``; ``suffix`` restricts the module to one storage
    dtype, ``prefetch`` sets the kernels' PARRNN_PREFETCH. No ``-I`` of the kernel folder: the local headers are
    inlined by `kernel_code`, so the options do not depend on the install path."""
    opts = ["-std=c++17", *(f"-I{d}" for d in cuda_include_dirs(nvrtc_major))]
    if suffix is not None:
        opts.append(f"-DPARRNN_ONLY_{suffix.upper()}")
    if prefetch is not None:
        opts.append(f"-DPARRNN_PREFETCH={prefetch}")
    return tuple(opts)

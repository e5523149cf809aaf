"""Compile every CUDA kernel variant with NVRTC from pip -- no GPU needed -- and report registers and spills.

Usage:

    python scripts/nvrtc_check.py check [--arch sm_80 sm_90] [--prefetch N] [--require]
    python scripts/nvrtc_check.py ptx --arch sm_90 -o DIR

``check`` compiles every kernel file of `KERNEL_FILES` (the SRU's sequential
recurrence ``kernels/sru_recurrence.cu`` and scan ``kernels/sru_scan.cu``, the linear recurrence's
``kernels/linear_recurrence.cu`` and ``kernels/linear_recurrence_scan.cu``) once per storage dtype (float32,
float64, float16, bfloat16) and target architecture to PTX and CUBIN, verifies that every expected
``extern "C"`` kernel is in the PTX, prints each kernel's ptxas resource report (registers, stack, spill
stores/loads), and exits non-zero on any failure. The default architectures are sm_70 and sm_75 (the oldest
fp16/bf16 paths), sm_80, sm_90 and the newest one this NVRTC supports (``nvrtcGetSupportedArchs``); one this
NVRTC cannot target (e.g. sm_70 with NVRTC 13) is listed as skipped. If NVRTC is not installed at all
(``pip install parrnn[nvrtc]``: cuda-bindings, nvidia-cuda-nvrtc, nvidia-cuda-runtime) it prints a ``SKIPPED``
line and exits 0, or 1 with ``--require``.
``ptx`` writes the PTX of every file and dtype for one architecture into a folder.

The NVRTC here may be newer than a GPU's driver accepts for PTX (e.g. an R580 / CUDA 13.0 driver rejects PTX
from NVRTC 13.5); this check is about the source compiling cleanly and its resource use. On a GPU, CuPy
compiles with the NVRTC it finds there, to CUBIN.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parrnn.ops import cuda_toolchain
from parrnn.ops.launch import DTYPE_SUFFIXES
from parrnn.ops.linear_recurrence import scan_cuda as linrec_scan_cuda
from parrnn.ops.linear_recurrence import sequential_cuda as linrec_sequential_cuda
from parrnn.ops.sru import scan_cuda, sequential_cuda


@dataclass(frozen=True)
class KernelFile:
    """One kernel source and the ``extern "C"`` kernels (without dtype suffix) it must define."""

    name: str
    kernels: tuple[str, ...]
    prefetch: bool = False  # whether PARRNN_PREFETCH (``--prefetch``) applies


#: Every CUDA kernel file, checked for every dtype in ``DTYPE_SUFFIXES`` and every architecture.
KERNEL_FILES: tuple[KernelFile, ...] = (
    KernelFile(sequential_cuda.KERNEL_FILE, sequential_cuda.KERNELS, prefetch=True),
    KernelFile(scan_cuda.KERNEL_FILE, scan_cuda.KERNELS),
    KernelFile(linrec_sequential_cuda.KERNEL_FILE, linrec_sequential_cuda.KERNELS),
    KernelFile(linrec_scan_cuda.KERNEL_FILE, linrec_scan_cuda.KERNELS),
)
#: Always checked (when this NVRTC supports them); the newest supported architecture is added.
BASE_ARCHS = ("sm_70", "sm_75", "sm_80", "sm_90")


@dataclass
class KernelReport:
    """ptxas resource usage of one kernel."""

    name: str
    registers: int | None = None
    stack: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None


@dataclass
class VariantResult:
    """One NVRTC compilation: a kernel file's storage dtype for one architecture."""

    suffix: str
    arch: str
    ok: bool
    ptx: str = ""
    log: str = ""
    error: str = ""
    kernels: dict[str, KernelReport] = field(default_factory=dict)


def load_nvrtc() -> tuple[Any | None, str]:
    """``(nvrtc module, version string)``, or ``(None, why)`` when NVRTC is not installed."""
    try:
        from cuda.bindings import nvrtc  # noqa: PLC0415
    except Exception as exc:  # ImportError, or cuda-bindings without its native parts
        return None, f"cuda-bindings is not importable ({type(exc).__name__}: {exc})"
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # libnvrtc.so not found (nvidia-cuda-nvrtc missing)
        return None, f"libnvrtc cannot be loaded ({type(exc).__name__}: {exc})"
    if int(err) != 0:
        return None, f"nvrtcVersion failed ({err})"
    return nvrtc, f"{major}.{minor}"


def nvrtc_major(version: str) -> int | None:
    """The major version of an NVRTC version string ``"13.5"``."""
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def supported_archs(nvrtc: Any) -> list[str]:
    """The architectures this NVRTC can target (``["sm_75", ..., "sm_121"]``; empty if it cannot say)."""
    try:
        err, archs = nvrtc.nvrtcGetSupportedArchs()
    except Exception:
        return []
    return [f"sm_{a}" for a in archs] if int(err) == 0 else []


def default_archs(supported: list[str]) -> list[str]:
    """`BASE_ARCHS` plus the newest architecture in ``supported``."""
    archs = list(BASE_ARCHS)
    if supported:
        newest = max(supported, key=lambda a: int(re.sub(r"\D", "", a)))
        if newest not in archs:
            archs.append(newest)
    return archs


def parse_ptxas_log(log: str) -> dict[str, KernelReport]:
    """Per-kernel registers, stack and spills from an ``--ptxas-options=-v`` log."""
    reports: dict[str, KernelReport] = {}
    current: KernelReport | None = None
    for line in log.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([A-Za-z_][\w$]*)'?", line)
        if m:
            current = reports.setdefault(m.group(1), KernelReport(m.group(1)))
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current.registers = int(m.group(1))
    return reports


def _check(nvrtc: Any, result: Any) -> None:
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise RuntimeError(f"NVRTC call failed: {err}")


def compile_variant(nvrtc: Any, code: str, kernel_file: KernelFile, suffix: str, arch: str,
                    prefetch: int | None = None, nvrtc_version: str = "") -> VariantResult:
    """Compile ``kernel_file``'s kernels for storage dtype ``suffix`` and ``arch`` (``sm_XX``) to PTX and CUBIN."""
    res = VariantResult(suffix, arch, ok=False)
    opts = [*cuda_toolchain.nvrtc_options(suffix, prefetch if kernel_file.prefetch else None,
                                          nvrtc_major(nvrtc_version)),
            f"-arch={arch}", "--ptxas-options=-v"]
    err, prog = nvrtc.nvrtcCreateProgram(code.encode(), kernel_file.name.encode(), 0, [], [])
    _check(nvrtc, err)
    try:
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        _check(nvrtc, err)
        buf = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, buf))
        res.log = buf.rstrip(b"\x00 ").decode(errors="replace")
        if int(status) != 0:
            res.error = f"compilation failed ({status}):\n{res.log}"
            return res
        err, size = nvrtc.nvrtcGetPTXSize(prog)
        _check(nvrtc, err)
        buf = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetPTX(prog, buf))
        res.ptx = buf.rstrip(b"\x00 ").decode()
        err, cubin_size = nvrtc.nvrtcGetCUBINSize(prog)
        _check(nvrtc, err)
        if cubin_size == 0:
            res.error = "no CUBIN produced"
            return res
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    res.kernels = parse_ptxas_log(res.log)
    missing = [f"{k}_{suffix}" for k in kernel_file.kernels if not re.search(rf"\.entry\s+{k}_{suffix}\b", res.ptx)]
    if missing:
        res.error = f"kernels missing from the PTX: {missing}"
        return res
    res.ok = True
    return res


def _fmt(v: int | None) -> str:
    return "?" if v is None else str(v)


def cmd_check(archs: list[str] | None, prefetch: int | None, require: bool) -> int:
    nvrtc, version = load_nvrtc()
    if nvrtc is None:
        print(f"SKIPPED: NVRTC is not installed ({version}); "
              "pip install 'parrnn[nvrtc]' to compile-check the kernels")
        return 1 if require else 0
    supported = supported_archs(nvrtc)
    wanted = default_archs(supported) if archs is None else archs
    skipped = [a for a in wanted if supported and a not in supported]
    targets = [a for a in wanted if a not in skipped]
    includes = cuda_toolchain.cuda_include_dirs(nvrtc_major(version))
    print(f"NVRTC {version}; CUDA headers: {', '.join(includes) or 'NOT FOUND'}")
    for arch in skipped:
        print(f"SKIPPED {arch}: not supported by NVRTC {version} (supported: {' '.join(supported)})")
    failures = spills = total = 0
    print(f"{'kernel':<26} {'arch':<7} {'regs':>5} {'stack':>6} {'spill st':>9} {'spill ld':>9}  ptx bytes")
    for kernel_file in KERNEL_FILES:
        code = cuda_toolchain.kernel_code(kernel_file.name)
        for suffix in DTYPE_SUFFIXES:
            for arch in targets:
                total += 1
                try:
                    res = compile_variant(nvrtc, code, kernel_file, suffix, arch, prefetch, version)
                except Exception as exc:
                    res = VariantResult(suffix, arch, ok=False, error=f"{type(exc).__name__}: {exc}")
                if not res.ok:
                    failures += 1
                    print(f"FAILED {kernel_file.name} {suffix} {arch}: {res.error}")
                    continue
                for kernel in kernel_file.kernels:
                    name = f"{kernel}_{suffix}"
                    rep = res.kernels.get(name, KernelReport(name))
                    spills += (rep.spill_stores or 0) + (rep.spill_loads or 0)
                    print(f"{name:<26} {arch:<7} {_fmt(rep.registers):>5} {_fmt(rep.stack):>6} "
                          f"{_fmt(rep.spill_stores):>9} {_fmt(rep.spill_loads):>9}  {len(res.ptx)}")
    if failures:
        print(f"FAILED: {failures} of {total} kernel variants did not compile")
        return 1
    kernels = sum(len(f.kernels) for f in KERNEL_FILES) * len(DTYPE_SUFFIXES) * len(targets)
    note = "" if spills == 0 else f" (WARNING: {spills} bytes of register spills)"
    print(f"OK: {total} variants ({kernels} kernels; archs {' '.join(targets)}) compiled to PTX and CUBIN{note}")
    return 0


def cmd_ptx(arch: str, out: Path, prefetch: int | None) -> int:
    nvrtc, version = load_nvrtc()
    if nvrtc is None:
        print(f"NVRTC is not installed ({version})", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    for kernel_file in KERNEL_FILES:
        code = cuda_toolchain.kernel_code(kernel_file.name)
        for suffix in DTYPE_SUFFIXES:
            res = compile_variant(nvrtc, code, kernel_file, suffix, arch, prefetch, version)
            if not res.ok:
                print(f"FAILED {kernel_file.name} {suffix} {arch}: {res.error}", file=sys.stderr)
                status = 1
                continue
            path = out / f"{Path(kernel_file.name).stem}_{suffix}.{arch}.ptx"
            path.write_text(res.ptx)
            print(path)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/nvrtc_check.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_check = sub.add_parser("check", help="compile every kernel variant with NVRTC and report resources")
    p_check.add_argument("--arch", nargs="+", default=None,
                         help="targets, e.g. sm_80 sm_90 (default: sm_70 sm_75 sm_80 sm_90 and the newest supported)")
    p_check.add_argument("--prefetch", type=int, default=None, help="PARRNN_PREFETCH depth")
    p_check.add_argument("--require", action="store_true", help="exit 1 instead of skipping without NVRTC")
    p_ptx = sub.add_parser("ptx", help="write the PTX of every dtype variant for one architecture")
    p_ptx.add_argument("--arch", default="sm_90")
    p_ptx.add_argument("-o", "--out", type=Path, required=True)
    p_ptx.add_argument("--prefetch", type=int, default=None)
    args = parser.parse_args(argv)
    for a in [args.arch] if isinstance(args.arch, str) else args.arch or []:
        if not re.fullmatch(r"sm_\d+[a-z]?", a):
            parser.error(f"--arch must look like sm_90, got {a!r}")
    if args.cmd == "check":
        return cmd_check(args.arch, args.prefetch, args.require)
    return cmd_ptx(args.arch, args.out, args.prefetch)


if __name__ == "__main__":
    sys.exit(main())

"""Which machine a result comes from: CPU vendor, family/model, the ISA flags that matter, threads, torch's BLAS
and oneDNN versions, and the matrix-product engine parrnn chose per shape.

Speed ratios depend on the CPU far more than on anything else (issue 14: MKL's ``mm`` is 1.4-2.4x slower
than oneDNN on an AMD Zen 4, not on others), so every benchmark result carries `describe` and every
table names its CPU with `summary`.

    >>> from parrnn import machine
    >>> machine.summary()  # doctest: +SKIP
    'AMD EPYC (AuthenticAMD family 25 model 1), AVX2, 2 cores / 2 threads; torch 2.13.0, MKL 2024.2, oneDNN 3.12.0'
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import torch

from parrnn._cpu import ISA_FLAGS, cpu_info, cpu_tag, parse_cpuinfo

__all__ = ["ISA_FLAGS", "cpu_info", "cpu_tag", "describe", "parse_cpuinfo", "parse_torch_config", "summary",
           "torch_info"]

def parse_torch_config(text: str) -> dict[str, str | None]:
    """BLAS and oneDNN versions from ``torch.__config__.show()``-like ``text``."""
    blas = None
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+?)-Product", text) or re.search(
        r"Math Kernel Library Version ([\w.\-]+)", text)
    if mkl:
        blas = f"MKL {mkl.group(1)}"
    else:
        info = re.search(r"BLAS_INFO=([\w\-]+)", text)
        blas = info.group(1) if info else None
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\s+v?([\d.]+)", text)
    capability = re.search(r"CPU capability usage:\s*(\S+)", text)
    return {"blas": blas, "onednn": onednn.group(1) if onednn else None,
            "cpu_capability": capability.group(1) if capability else None}


def torch_info() -> dict[str, Any]:
    """torch's version, BLAS, oneDNN version and availability, and the CPU kernels' ISA level."""
    info: dict[str, Any] = {"torch": torch.__version__}
    info.update(parse_torch_config(torch.__config__.show()))
    info["onednn_available"] = torch.backends.mkldnn.is_available()
    with contextlib.suppress(Exception):  # older torch: keep what the config text says
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def describe(*, gemm_choices: bool = True) -> dict[str, Any]:
    """Everything a result needs to name its machine: `cpu_info`, `torch_info`, the thread count
    and (``gemm_choices``) the engine `parrnn.ops.gemm` chose per shape class so far."""
    out: dict[str, Any] = {"cpu": cpu_info(), **torch_info(), "threads": torch.get_num_threads()}
    if gemm_choices:
        from parrnn.ops import gemm
        out["gemm_engines"] = {name: list(v) for name, v in gemm.engines().items()}
        out["gemm_choices"] = gemm.choices()
        out["gemm_pinned"] = gemm.pinned_engine()
    return out


def summary(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU and the math libraries, for table captions and the README."""
    info = info or describe(gemm_choices=False)
    cpu = info["cpu"]
    isa = ", ".join(f.upper() for f in cpu["flags"] if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                                              "asimd", "sve")) or "no AVX2"
    ident = " ".join(str(p) for p in (cpu.get("vendor"), "family", cpu.get("family"), "model", cpu.get("model"))
                     if p is not None)
    cores = f"{cpu.get('physical_cores') or '?'} cores / {cpu.get('logical_cpus') or '?'} threads"
    libs = ", ".join(p for p in (f"torch {info['torch']}", info.get("blas"),
                                 info.get("onednn") and f"oneDNN {info['onednn']}") if p)
    return f"{cpu['model_name']} ({ident}), {isa}, {cores}; {libs}"


# python -m parrnn.experiments.machine: the line to put under a results table, then the details
if __name__ == "__main__":
    import json

    details = describe()
    print(summary(details))
    print(json.dumps(details, indent=2, default=str))

"""This CPU's identity, read in one place: the model, the ISA flags that decide which kernels can run, and a
short hash of them (`cpu_tag`) that keys anything tuned or compiled for this CPU (the ``-march=native``
build cache, the matrix-product engine's optional choice cache).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
from pathlib import Path
from typing import Any

#: The instruction-set flags (``/proc/cpuinfo`` names) that decide which matrix-product kernels can run.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve", "sve2")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The CPU's identity from ``/proc/cpuinfo``-like ``text`` (x86 or ARM keys).

    Returns ``{"vendor", "family", "model", "model_name", "flags", "all_flags", "logical_cpus",
    "physical_cores"}``; ``flags`` keeps only `ISA_FLAGS` (in that order), ``all_flags`` every flag sorted;
    unknown fields are ``None``.
    """
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    first: dict[str, str] = {}
    cores: set[tuple[str, str]] = set()
    logical = 0
    for block in blocks:
        fields = {}
        for line in block.splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "processor" in fields:
            logical += 1
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
        if not first:
            first = fields
    flags = set((first.get("flags") or first.get("features") or "").split())
    per_package = first.get("cpu cores")
    physical = len(cores) or (int(per_package) if per_package and per_package.isdigit() else None)
    return {
        "vendor": first.get("vendor_id") or first.get("cpu implementer"),
        "family": first.get("cpu family") or first.get("cpu architecture"),
        "model": first.get("model") if (first.get("model") or "").isdigit() else first.get("cpu part"),
        "model_name": first.get("model name") or first.get("hardware"),
        "flags": [f for f in ISA_FLAGS if f in flags],
        "all_flags": sorted(flags),
        "logical_cpus": logical or None,
        "physical_cores": physical,
    }


def cpu_info() -> dict[str, Any]:
    """`parse_cpuinfo` of this machine (``platform`` fields where ``/proc/cpuinfo`` is missing), plus
    ``machine`` (``platform.machine()``)."""
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = parse_cpuinfo("")
    info["model_name"] = info["model_name"] or platform.processor() or platform.machine() or "unknown"
    info["logical_cpus"] = info["logical_cpus"] or os.cpu_count()
    info["machine"] = platform.machine()
    return info


def identity_tag(info: dict[str, Any]) -> str:
    """A short hash of a `cpu_info`'s architecture, vendor, family, model, model name and every feature flag."""
    text = "|".join(str(info.get(key)) for key in ("machine", "vendor", "family", "model", "model_name"))
    text += "|" + " ".join(info.get("all_flags") or info.get("flags") or [])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@functools.cache
def cpu_tag() -> str:
    """`identity_tag` of this machine's CPU: the key of everything compiled or tuned for it."""
    return identity_tag(cpu_info())

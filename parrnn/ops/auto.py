"""``backend="auto"``, shared by every op: the first backend a measured rule names that runs here, else the
reference with one warning that says why."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch


def first_available(candidates: Iterable[str], availability: Callable[[str], tuple[bool, str]], *, op: str,
                    device: torch.device, dtype: torch.dtype, warned: set[str], stacklevel: int) -> str:
    """The first of ``candidates`` (the backends of the rules that apply, in rule order) that ``availability``
    accepts; else ``"reference"``, with one ``RuntimeWarning`` per (op, backend, device, dtype) that names the
    last unavailable backend and its reason (``stacklevel`` counts from this function). ``warned`` holds the
    keys already warned about (the op's own set)."""
    name, unavailable = first_runnable(candidates, availability)
    if name is not None:
        return name
    if unavailable is not None:
        name, why = unavailable
        key = f"{op} {name} {device} {dtype}"
        if key not in warned:
            warned.add(key)
            warnings.warn(f"parrnn: {op}: the {name!r} backend is unavailable on {device} for {dtype} "
                          f"({reason_summary(why)}); falling back to the slow pure-PyTorch reference.",
                          RuntimeWarning, stacklevel=stacklevel)
    return "reference"


def first_runnable(candidates: Iterable[str], availability: Callable[[str], tuple[bool, str]]
                   ) -> tuple[str | None, tuple[str, str] | None]:
    """The first of ``candidates`` that ``availability`` accepts, or ``None`` with the last rejected candidate and
    its reason (``None`` too when there was no candidate)."""
    unavailable: tuple[str, str] | None = None
    for name in candidates:
        ok, why = availability(name)
        if ok:
            return name, None
        unavailable = (name, why)
    return None, unavailable


def reason_summary(reason: str) -> str:
    """The first three error lines of ``reason`` (a compiler log), else its first lines, in at most 600 characters."""
    lines = [ln.strip() for ln in reason.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return " | ".join((errors or lines or ["unknown reason"])[:3])[:600]

"""Run benchmark sweeps: build each model once per size, time each mode, compare against nn.LSTM.

A `Sweep` is a Cartesian grid (models x modes x dtypes x layers x hidden x batch x seq_len); a
`BenchConfig` is a list of sweeps plus how to time them. ``nn.LSTM`` (model ``lstm``) is always part of
every grid, so each row's ``speedup_vs_lstm`` (LSTM ms / model ms) comes from the same run, device, sizes,
mode and dtype. A model that cannot run (missing package, unavailable backend, unsupported dtype, out of
memory) is recorded in ``skipped`` with the reason and the run goes on.
"""

from __future__ import annotations

import itertools
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from parrnn.experiments.bench import timing
from parrnn.experiments.bench.models import BenchModel, ModelUnavailable, build_model, parse_model_name
from parrnn.experiments.progress import progress_bar

MODES = ("fwd", "fwdbwd")
#: Every mode a sweep may ask for: ``stream`` is no-grad inference that carries the recurrent state from one
#: call to the next (a streaming model fed ``seq_len`` new steps per call); not in the default sweeps.
ALL_MODES = MODES + ("stream",)
BASELINE = "lstm"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64, "fp64": torch.float64}
#: The keys that make two rows comparable (same run, same device, sizes, mode and dtype).
SIZE_KEYS = ("device", "mode", "dtype", "seq_len", "batch", "hidden", "input_size", "layers")
#: The columns of every result row, in order (JSON, CSV and tables).
ROW_KEYS = ("model", "backend", "device", "mode", "dtype", "seq_len", "batch", "hidden", "input_size",
            "layers", "ms", "ms_iqr", "repeats", "tokens_per_s", "speedup_vs_lstm", "peak_mem_mb",
            "bytes_per_s", "bw_fraction", "notes", "sweep")


def canonical_dtype(name: str) -> str:
    """``"fp32"`` -> ``"float32"`` etc.; ``ValueError`` for an unknown dtype."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return str(DTYPES[name]).removeprefix("torch.")


@dataclass
class Sweep:
    """One grid of cases; ``input_size=None`` means D = H."""

    models: list[str]
    seq_lens: list[int]
    batches: list[int]
    hiddens: list[int]
    layers: list[int] = field(default_factory=lambda: [2])
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    input_size: int | None = None
    label: str = ""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in self.models:
            parse_model_name(name)
        for dtype in self.dtypes:
            canonical_dtype(dtype)
        for mode in self.modes:
            if mode not in ALL_MODES:
                raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(ALL_MODES)}")
        for label, values in (("seq_lens", self.seq_lens), ("batches", self.batches),
                              ("hiddens", self.hiddens), ("layers", self.layers)):
            if not values or any(int(v) < 1 for v in values):
                raise ValueError(f"{label} must be a non-empty list of positive integers, got {values}")
        if self.input_size is not None and self.input_size < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")

    def all_models(self) -> list[str]:
        """The sweep's models with the ``lstm`` baseline first."""
        return [BASELINE] + [m for m in dict.fromkeys(self.models) if m != BASELINE]


@dataclass
class BenchConfig:
    """What to run and how to time it (see `parrnn.experiments.bench.timing`)."""

    sweeps: list[Sweep]
    device: str = "cpu"
    threads: int | None = None
    warmup: int = 1
    repeats: int = 5
    min_sample_s: float = 0.02
    max_case_s: float | None = None
    memory: bool = True
    seed: int = 0
    preset: str | None = None

    def validate(self, *, check_device: bool = True) -> None:
        """Raise ``ValueError`` for a configuration that cannot run (here, with ``check_device``)."""
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"bad device {self.device!r}; expected cpu or cuda[:N]") from None
        if check_device and device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but torch.cuda.is_available() is False")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")
        if not self.sweeps:
            raise ValueError("no sweeps to run")
        for sweep in self.sweeps:
            sweep.validate()


@dataclass
class Case:
    """One size of one sweep; every model and mode runs at it."""

    sweep: Sweep
    dtype: str
    layers: int
    hidden: int
    batch: int
    seq_len: int

    @property
    def input_size(self) -> int:
        return self.sweep.input_size or self.hidden


@dataclass
class BenchResult:
    """Rows (see `ROW_KEYS`), skipped cases with reasons, and how they were measured."""

    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    threads: int
    memory_method: str
    copy_bytes_per_s: float | None
    elapsed_s: float


def plan(config: BenchConfig) -> list[tuple[Case, dict[str, list[str]]]]:
    """Every size of every sweep with the ``{model: [modes]}`` to measure there.

    A (model, mode, size) shared by two sweeps is measured once, in the first; a size with nothing left is
    dropped.
    """
    seen: set[tuple] = set()
    out: list[tuple[Case, dict[str, list[str]]]] = []
    for sweep in config.sweeps:
        for dtype, layers, hidden, batch, seq_len in itertools.product(
                sweep.dtypes, sweep.layers, sweep.hiddens, sweep.batches, sweep.seq_lens):
            case = Case(sweep, canonical_dtype(dtype), layers, hidden, batch, seq_len)
            todo: dict[str, list[str]] = {}
            for model in sweep.all_models():
                for mode in sweep.modes:
                    key = (model, mode, case.dtype, layers, hidden, batch, seq_len, case.input_size)
                    if key not in seen:
                        seen.add(key)
                        todo.setdefault(model, []).append(mode)
            if todo:
                out.append((case, todo))
    return out


def count_runs(config: BenchConfig) -> int:
    """How many (model, mode, size) measurements the config asks for."""
    return sum(len(modes) for _, todo in plan(config) for modes in todo.values())


def recurrence_bytes(mode: str, dtype: torch.dtype, elements: int) -> int:
    """Bytes the SRU recurrence must move for ``elements`` = L*N*C state elements.

    Forward reads u (3 values) and x and writes h (in ``dtype``) and every c_t (fp32 state, 4 B): 24 B/element
    in fp32. Backward reads grad_h, u, x and c and writes grad_u and grad_x: 40 B/element in fp32.
    """
    size = torch.empty((), dtype=dtype).element_size()
    state = torch.empty((), dtype=torch.promote_types(dtype, torch.float32)).element_size()
    forward, backward = 5 * size + state, 9 * size + state
    return elements * (forward if mode == "fwd" else forward + backward)


def make_step(bm: BenchModel, inputs: tuple[torch.Tensor, ...], mode: str) -> Callable[[], None]:
    """The function to time: a no-grad forward, zero-grad + forward + backward, or (``stream``) a no-grad
    forward that starts from the state the previous call returned."""
    if mode == "stream":
        return _stream_step(bm, inputs)
    if mode == "fwd":
        bm.module.eval()

        def forward() -> None:
            with torch.no_grad():
                bm.run(*inputs)
        return forward

    bm.module.train()
    grad_out: list[torch.Tensor] = []

    def train_step() -> None:
        bm.module.zero_grad(set_to_none=True)
        for t in inputs:
            t.grad = None
        out = bm.run(*inputs)
        if not grad_out:
            grad_out.append(torch.ones_like(out))
        out.backward(grad_out[0])
    return train_step


def _stream_step(bm: BenchModel, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    """``module(x, state)`` with the state of the previous call (nn.LSTM's ``(h, c)``, an SRU's ``c``)."""
    if bm.spec.family not in ("lstm", "gru", "sru", "sru26"):
        raise ValueError(f"model {bm.spec.name!r} cannot stream (no recurrent state to carry)")
    bm.module.eval()
    state: list[Any] = []

    def step() -> None:
        with torch.no_grad():
            _, new_state = bm.module(*inputs, *state)
        state[:] = [new_state]
    return step


def _measure(bm: BenchModel, case: Case, mode: str, config: BenchConfig,
             device: torch.device) -> dict[str, Any]:
    inputs = bm.make_inputs(case.seq_len, case.batch, mode == "fwdbwd" and bm.spec.family == "rec")
    fn = make_step(bm, inputs, mode)
    t = timing.time_callable(fn, device, warmup=config.warmup, repeats=config.repeats,
                             min_sample_s=config.min_sample_s, max_case_s=config.max_case_s)
    mem = timing.peak_memory(fn, device) if config.memory else None
    notes = f"{t.median_ms / case.seq_len:.4g} ms/step, state carried" if mode == "stream" else ""
    return {"notes": notes, "ms": t.median_ms, "ms_iqr": t.spread_ms, "repeats": len(t.samples_ms),
            "tokens_per_s": case.seq_len * case.batch / (t.median_ms / 1e3),
            "peak_mem_mb": None if mem is None else mem / 2**20}


def _base_row(name: str, case: Case, mode: str, device: torch.device) -> dict[str, Any]:
    return {"model": name, "device": device.type, "mode": mode, "dtype": case.dtype, "seq_len": case.seq_len,
            "batch": case.batch, "hidden": case.hidden, "input_size": case.input_size, "layers": case.layers,
            "sweep": case.sweep.label}


def _notes(*parts: str) -> str:
    return "; ".join(dict.fromkeys(p for p in parts if p))


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attach_speedups(rows: list[dict[str, Any]]) -> None:
    """Set ``speedup_vs_lstm`` = LSTM ms / row ms for rows with an LSTM row of the same `SIZE_KEYS`.

    ``rec-*`` rows (the recurrence alone, no matrix products) get ``None``: they are not a layer's cost.
    """
    lstm = {tuple(r[k] for k in SIZE_KEYS): r["ms"] for r in rows if r["model"] == BASELINE}
    for row in rows:
        base = None if row["model"].startswith("rec-") else lstm.get(tuple(row[k] for k in SIZE_KEYS))
        row["speedup_vs_lstm"] = None if base is None else base / row["ms"]


def _run_model(name: str, modes: list[str], case: Case, config: BenchConfig, device: torch.device,
               copy_bw: float | None, rows: list[dict[str, Any]], skipped: list[dict[str, Any]],
               advance: Callable[[str], None]) -> None:
    dtype = DTYPES[case.dtype]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bm = build_model(name, input_size=case.input_size, hidden=case.hidden, layers=case.layers,
                             device=device, dtype=dtype, seed=config.seed)
    except ModelUnavailable as exc:
        for mode in modes:
            skipped.append({**_base_row(name, case, mode, device), "reason": str(exc)})
            advance(name)
        return
    build_notes = [str(w.message).splitlines()[0] for w in caught]
    for mode in modes:
        row = _base_row(name, case, mode, device)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                row.update(_measure(bm, case, mode, config, device))
        except Exception as exc:  # an unsupported dtype, out of memory...: record it and go on
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            skipped.append({**row, "reason": f"{type(exc).__name__}: {first_line}"})
            _release(device)
            advance(name)
            continue
        row["backend"] = bm.resolve_backend(case.seq_len, case.batch) or bm.spec.backend
        row["notes"] = _notes(row.get("notes", ""), bm.notes, *build_notes,
                              *(str(w.message).splitlines()[0] for w in caught))
        row["bytes_per_s"] = row["bw_fraction"] = None
        if bm.columns:
            elements = case.seq_len * case.batch * bm.columns
            row["bytes_per_s"] = recurrence_bytes(mode, dtype, elements) / (row["ms"] / 1e3)
            row["bw_fraction"] = row["bytes_per_s"] / copy_bw if copy_bw else None
        rows.append(row)
        advance(name)
    del bm
    _release(device)


def run_benchmark(config: BenchConfig, *, progress: bool = True) -> BenchResult:
    """Run every case of ``config`` and return the rows (with speedups vs nn.LSTM) and skipped cases.

    The CPU thread count is set for the run and restored afterwards.
    """
    config.validate()
    threads_before = torch.get_num_threads()
    try:
        return _run(config, progress)
    finally:
        torch.set_num_threads(threads_before)


def _run(config: BenchConfig, progress: bool) -> BenchResult:
    start = time.perf_counter()
    device = torch.device(config.device)
    threads = timing.set_threads(config.threads)
    wants_bw = device.type == "cuda" or any(parse_model_name(m).family == "rec"
                                            for s in config.sweeps for m in s.models)
    copy_bw = timing.copy_bandwidth(device) if wants_bw else None
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    bar = _progress_bar(count_runs(config), progress)

    for case, todo in plan(config):
        def advance(name: str, case: Case = case) -> None:
            bar.set_postfix_str(f"{name} L={case.seq_len} N={case.batch} H={case.hidden} {case.dtype}")
            bar.update(1)
        for name, modes in todo.items():
            _run_model(name, modes, case, config, device, copy_bw, rows, skipped, advance)
    bar.close()
    attach_speedups(rows)
    rows = [{k: row.get(k) for k in ROW_KEYS} for row in rows]
    return BenchResult(rows, skipped, threads, timing.memory_method(device) if config.memory else "off",
                       copy_bw, time.perf_counter() - start)


def _progress_bar(total: int, enabled: bool) -> Any:
    return progress_bar(enabled, extra="bench", total=total, desc="parrnn-bench", unit="run", file=sys.stderr,
                        dynamic_ncols=True)

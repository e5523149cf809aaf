"""Run benchmark sweeps: build each model once per size, time each mode, compare against nn.LSTM.

A `Sweep` is a Cartesian grid (models x modes x dtypes x layers x hidden x batch x seq_len); a
`BenchConfig` is a list of sweeps plus how to time them. ``nn.LSTM`` (model ``lstm``) is always part of
every grid, and the models of one size are timed in interleaved rounds, so each row's ``speedup_vs_lstm`` is
the median of per-round ratios (LSTM ms / model ms, with its IQR ``speedup_iqr``) against the *fastest* LSTM
configuration measured at that size (``baseline``: ``lstm``, ``lstm-nomkldnn`` or ``lstm-cell``). Rows whose
spread is large, whose paired ratio is unsteady or whose baseline breaks monotonicity in L are re-sampled
and, if still noisy, marked (``noisy``, ``noise``): see `parrnn.experiments.bench.noise`. A model that cannot run
(missing package, unavailable backend, unsupported dtype, out of memory) is recorded in ``skipped`` with the
reason and the run goes on.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from parrnn.experiments.bench import noise, timing
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
            "layers", "ms", "ms_iqr", "repeats", "tokens_per_s", "speedup_vs_lstm", "speedup_iqr", "baseline",
            "noisy", "noise", "load_before", "load_after", "peak_mem_mb", "bytes_per_s", "bw_fraction", "notes",
            "sweep")
#: JSON rows also carry ``samples_ms``, the per-round samples behind ``ms`` and the paired ratios.
JSON_ROW_KEYS = ROW_KEYS + ("samples_ms",)


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
    noise_threshold: float = noise.NOISE_THRESHOLD
    max_rounds: int | None = None

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
    loads: list[float | None] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        """Whether the machine was loaded during the run (`parrnn.experiments.bench.noise.machine_loaded`)."""
        return noise.machine_loaded(self.loads, self.threads)

    @property
    def max_load(self) -> float | None:
        """The highest 1-minute load average read during the run."""
        return max((x for x in self.loads if x is not None), default=None)


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


def _base_row(name: str, case: Case, mode: str, device: torch.device) -> dict[str, Any]:
    return {"model": name, "device": device.type, "mode": mode, "dtype": case.dtype, "seq_len": case.seq_len,
            "batch": case.batch, "hidden": case.hidden, "input_size": case.input_size, "layers": case.layers,
            "sweep": case.sweep.label}


def _notes(*parts: str) -> str:
    return "; ".join(dict.fromkeys(p for p in parts if p))


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_baseline(name: str) -> bool:
    """Whether ``name`` is one of nn.LSTM's configurations (``lstm``, ``lstm-nomkldnn``, ``lstm-cell``)."""
    return parse_model_name(name).family == BASELINE


def _family(name: str) -> str:
    return parse_model_name(name).family


def attach_speedups(rows: list[dict[str, Any]]) -> None:
    """Set ``speedup_vs_lstm``, ``speedup_iqr`` and ``baseline`` on every row.

    The baseline of a size (same `SIZE_KEYS`) is the fastest LSTM configuration measured there; the speed-up is
    the median of the per-round ratios of the two rows' interleaved ``samples_ms`` (with their IQR), or the
    ratio of medians for rows without paired samples. ``rec-*`` rows (the recurrence alone, no matrix products)
    get ``None``: they are not a layer's cost.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in SIZE_KEYS)].append(row)
    for group in groups.values():
        base = min((r for r in group if is_baseline(r["model"])), key=lambda r: r["ms"], default=None)
        for row in group:
            row["speedup_vs_lstm"] = row["speedup_iqr"] = row["baseline"] = None
            if base is None or row["model"].startswith("rec-"):
                continue
            row["baseline"] = base["model"]
            pair = base.get("samples_ms"), row.get("samples_ms")
            if pair[0] and pair[1] and len(pair[0]) == len(pair[1]):
                row["speedup_vs_lstm"], row["speedup_iqr"] = noise.ratio_summary(noise.paired_ratios(*pair))
            else:
                row["speedup_vs_lstm"] = base["ms"] / row["ms"]


def mark_noise(rows: list[dict[str, Any]], threshold: float, broken: dict[tuple, str], threads: int) -> None:
    """Set ``noisy`` and ``noise`` (the reasons) on every row: a load average above ``threads`` + 1 while it was
    measured, its own spread, its paired ratio's spread, a monotonicity break of its size's baseline (``broken``,
    from `parrnn.experiments.bench.noise.monotonicity_breaks`), or a noisy baseline row."""
    for row in rows:
        reasons = [r for r in [noise.load_reason(row, threads)] if r] + noise.spread_reasons(row, threshold)
        key = tuple(row[k] for k in SIZE_KEYS)
        if key in broken:
            reasons.append(broken[key])
        row["noise"] = "; ".join(reasons)
    by_model = {(row["model"], *(row[k] for k in SIZE_KEYS)): row for row in rows}
    for row in rows:
        base = by_model.get((row.get("baseline"), *(row[k] for k in SIZE_KEYS)))
        if base is not None and base is not row and base["noise"] and "baseline" not in row["noise"]:
            row["noise"] = "; ".join(filter(None, [row["noise"], f"baseline {base['model']} noisy"]))
    for row in rows:
        row["noisy"] = bool(row["noise"])


def _still_noisy(threshold: float) -> Callable[[dict[str, list[float]]], bool]:
    """The re-sampling test of one case's interleaved samples: a model's IQR, or its per-round ratio to the
    fastest LSTM configuration's, above ``threshold`` of the median."""
    def check(samples: dict[str, list[float]]) -> bool:
        if any(noise.relative_iqr(s) > threshold for s in samples.values()):
            return True
        bases = [n for n in samples if is_baseline(n) and samples[n]]
        if not bases:
            return False
        base = min(bases, key=lambda n: statistics.median(samples[n]))
        return any(noise.relative_iqr(noise.paired_ratios(samples[base], s)) > threshold
                   for name, s in samples.items() if name != base and not name.startswith("rec-"))
    return check


def _build(name: str, case: Case, config: BenchConfig, device: torch.device) -> tuple[BenchModel, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bm = build_model(name, input_size=case.input_size, hidden=case.hidden, layers=case.layers,
                         device=device, dtype=DTYPES[case.dtype], seed=config.seed)
    return bm, [str(w.message).splitlines()[0] for w in caught]


def _first_call(bm: BenchModel, case: Case, mode: str) -> tuple[Callable[[], None], list[str]]:
    """The step to time, called once (it raises here when the model cannot run this mode or dtype)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = bm.make_inputs(case.seq_len, case.batch, mode == "fwdbwd" and bm.spec.family == "rec")
        fn = make_step(bm, inputs, mode)
        fn()
    return fn, [str(w.message).splitlines()[0] for w in caught]


def _row(bm: BenchModel, case: Case, mode: str, device: torch.device, t: timing.Timing, notes: list[str],
         copy_bw: float | None) -> dict[str, Any]:
    row = _base_row(bm.spec.name, case, mode, device)
    row.update({"ms": t.median_ms, "ms_iqr": t.spread_ms, "repeats": len(t.samples_ms), "samples_ms": t.samples_ms,
                "tokens_per_s": case.seq_len * case.batch / (t.median_ms / 1e3),
                "backend": bm.resolve_backend(case.seq_len, case.batch) or bm.spec.backend})
    stream_note = f"{t.median_ms / case.seq_len:.4g} ms/step, state carried" if mode == "stream" else ""
    row["notes"] = _notes(stream_note, bm.notes, *notes)
    row["bytes_per_s"] = row["bw_fraction"] = None
    if bm.columns:
        elements = case.seq_len * case.batch * bm.columns
        row["bytes_per_s"] = recurrence_bytes(mode, DTYPES[case.dtype], elements) / (t.median_ms / 1e3)
        row["bw_fraction"] = row["bytes_per_s"] / copy_bw if copy_bw else None
    return row


@dataclass
class _Context:
    """What every case of a run shares."""

    config: BenchConfig
    device: torch.device
    copy_bw: float | None
    skipped: list[dict[str, Any]]
    loads: list[float | None]
    advance: Callable[[str, Case], None]


def _skip(ctx: _Context, entry: dict[str, Any]) -> None:
    """Record a skipped case once (a re-sampled case meets the same unavailable model again)."""
    if entry not in ctx.skipped:
        ctx.skipped.append(entry)


def _measure_case(case: Case, todo: dict[str, list[str]], ctx: _Context, repeats: int | None = None,
                  max_rounds: int | None = None) -> list[dict[str, Any]]:
    """Build every model of ``todo`` at ``case`` and time each mode's models in interleaved rounds
    (``repeats`` rounds, up to ``max_rounds`` while noisy; the config's by default)."""
    config, device = ctx.config, ctx.device
    built: dict[str, tuple[BenchModel, list[str]]] = {}
    for name, modes in todo.items():
        try:
            built[name] = _build(name, case, config, device)
        except ModelUnavailable as exc:
            for mode in modes:
                _skip(ctx, {**_base_row(name, case, mode, device), "reason": str(exc)})
                ctx.advance(name, case)
    rows = []
    for mode in [m for m in ALL_MODES if any(m in modes for modes in todo.values())]:
        fns, notes = {}, {}
        for name, (bm, build_notes) in built.items():
            if mode not in todo[name]:
                continue
            try:
                fns[name], call_notes = _first_call(bm, case, mode)
                notes[name] = build_notes + call_notes
            except Exception as exc:  # an unsupported dtype, out of memory...: record it and go on
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                _skip(ctx, {**_base_row(name, case, mode, device), "reason": f"{type(exc).__name__}: {first_line}"})
                _release(device)
                ctx.advance(name, case)
        if not fns:
            continue
        load_before = noise.load_average()
        timings = timing.interleaved(fns, device, warmup=max(config.warmup - 1, 0),
                                     repeats=repeats or config.repeats, min_sample_s=config.min_sample_s,
                                     max_case_s=config.max_case_s, max_rounds=max_rounds or config.max_rounds,
                                     still_noisy=_still_noisy(config.noise_threshold))
        load_after = noise.load_average()
        ctx.loads += [load_before, load_after]
        for name, t in timings.items():
            row = _row(built[name][0], case, mode, device, t, notes[name], ctx.copy_bw)
            mem = timing.peak_memory(fns[name], device) if config.memory else None
            row.update(load_before=load_before, load_after=load_after,
                       peak_mem_mb=None if mem is None else mem / 2**20)
            rows.append(row)
            ctx.advance(name, case)
    del built
    _release(device)
    return rows


def _resample_broken(rows: list[dict[str, Any]], cases: list[tuple[Case, dict[str, list[str]]]],
                     ctx: _Context, resampled: list[str]) -> dict[tuple, str]:
    """Re-sample (3x the rounds) every case whose baseline breaks monotonicity in L; return the breaks left."""
    broken = noise.monotonicity_breaks(rows, _family, SIZE_KEYS)
    if not broken:
        return broken
    for case, todo in cases:
        for mode in ALL_MODES:
            key = tuple(_base_row("", case, mode, ctx.device)[k] for k in SIZE_KEYS)
            redo = {name: [mode] for name, modes in todo.items() if mode in modes}
            if key not in broken or not redo:
                continue
            resampled.append(f"{mode} L={case.seq_len} N={case.batch} H={case.hidden}: {broken[key]}")
            rounds = 3 * ctx.config.repeats
            fresh = {(r["model"], r["mode"]): r for r in _measure_case(case, redo, ctx, rounds, rounds)}
            rows[:] = [fresh.pop((r["model"], r["mode"]), r) if tuple(r[k] for k in SIZE_KEYS) == key else r
                       for r in rows]
    attach_speedups(rows)
    return noise.monotonicity_breaks(rows, _family, SIZE_KEYS)


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
    bar = _progress_bar(count_runs(config), progress)

    def advance(name: str, case: Case) -> None:
        bar.set_postfix_str(f"{name} L={case.seq_len} N={case.batch} H={case.hidden} {case.dtype}")
        bar.update(1)

    ctx = _Context(config, device, copy_bw, [], [noise.load_average()], advance)
    cases = plan(config)
    rows = [row for case, todo in cases for row in _measure_case(case, todo, ctx)]
    bar.close()
    attach_speedups(rows)
    resampled: list[str] = []
    broken = _resample_broken(rows, cases, replace(ctx, advance=lambda name, case: None), resampled)
    mark_noise(rows, config.noise_threshold, broken, threads)
    rows = [{k: row.get(k) for k in JSON_ROW_KEYS} for row in rows]
    return BenchResult(rows, ctx.skipped, threads, timing.memory_method(device) if config.memory else "off",
                       copy_bw, time.perf_counter() - start, ctx.loads, resampled)


def _progress_bar(total: int, enabled: bool) -> Any:
    return progress_bar(enabled, extra="bench", total=total, desc="parrnn-bench", unit="run", file=sys.stderr,
                        dynamic_ncols=True)

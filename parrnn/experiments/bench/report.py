"""Write a run's results: metadata, a terminal table, JSON, CSV, markdown and PNG plots.

Files written into ``--out DIR``:

* ``results.json`` -- ``{"metadata", "rows", "skipped", "targets"}``, rows as in
  `parrnn.experiments.bench.runner.ROW_KEYS`;
* ``results.csv``  -- the rows;
* ``results.md``   -- the metadata, the table and the targets in markdown;
* ``throughput_vs_length.png`` and ``speedup_vs_lstm.png``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from parrnn.experiments.bench.runner import ROW_KEYS, BenchConfig, BenchResult
from parrnn.experiments.bench.targets import TargetResult

Row = dict[str, Any]
_REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cupy_version() -> str | None:
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "cupy" or name.startswith("cupy-"):
            return f"{name} {dist.version}"
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10,
                             check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    """The short commit of the checkout parrnn runs from, or ``"unknown"`` (not a git checkout)."""
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def _parrnn_info() -> tuple[str | None, dict[str, list[Any]] | str]:
    try:
        import parrnn
        return parrnn.__version__, {k: list(v) for k, v in parrnn.available_backends().items()}
    except Exception as exc:
        return _version("parrnn"), f"{type(exc).__name__}: {exc}"


def _machine_info() -> dict[str, Any]:
    """[parrnn.experiments.machine.describe][] plus its one-line ``summary`` (an error text if that fails)."""
    try:
        from parrnn.experiments import machine
        info = machine.describe()
        return {"summary": machine.summary(info), **info}
    except Exception as exc:  # the run's rows matter more than its description
        return {"summary": None, "error": f"{type(exc).__name__}: {exc}"}


def collect_metadata(config: BenchConfig, result: BenchResult,
                     argv: list[str] | None = None) -> dict[str, Any]:
    """Device, versions, CPU, threads, git commit, command line and measurement methods of a run."""
    device = torch.device(config.device)
    parrnn_version, backends = _parrnn_info()
    status = _git("status", "--porcelain")
    machine_info = _machine_info()
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv if argv is not None else sys.argv),
        "preset": config.preset,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_summary": machine_info.get("summary"),
        "machine": machine_info,
        "threads": result.threads,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "parrnn": parrnn_version,
        "parrnn_backends": backends,
        "cupy": _cupy_version(),
        "sru": _version("sru"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "timing": {"warmup": config.warmup, "repeats": config.repeats, "min_sample_s": config.min_sample_s,
                   "max_case_s": config.max_case_s, "max_rounds": config.max_rounds,
                   "statistic": "median of interleaved rounds; speed-ups: median of per-round ratios",
                   "spread": "IQR", "noise_threshold": config.noise_threshold,
                   "clock": "cuda_events" if device.type == "cuda" else "perf_counter"},
        "load": {"loaded": result.loaded, "max_1min_load": result.max_load, "threads": result.threads,
                 "samples": result.loads},
        "resampled": result.resampled,
        "noisy_rows": sum(bool(r.get("noisy")) for r in result.rows),
        "memory_method": result.memory_method,
        "copy_bytes_per_s": result.copy_bytes_per_s,
        "elapsed_s": round(result.elapsed_s, 1),
    }


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key == "tokens_per_s":
        return f"{value:,.0f}"
    if key == "speedup_vs_lstm":
        return f"{value:.2f}x"
    if key == "noisy":
        return "NOISY" if value else ""
    if key in ("speedup_iqr", "load_before", "load_after"):
        return f"{value:.2f}"
    if key in ("ms", "ms_iqr", "peak_mem_mb"):
        return f"{value:.1f}" if value >= 10 else f"{value:.3f}"
    if key == "bw_fraction":
        return f"{100 * value:.0f}%"
    return str(value)


TABLE_COLUMNS = (("model", "model"), ("backend", "backend"), ("mode", "mode"), ("dtype", "dtype"),
                 ("seq_len", "L"), ("batch", "N"), ("hidden", "H"), ("layers", "layers"), ("ms", "ms"),
                 ("ms_iqr", "IQR"), ("tokens_per_s", "tokens/s"), ("speedup_vs_lstm", "vs LSTM"),
                 ("speedup_iqr", "ratio IQR"), ("baseline", "LSTM config"), ("peak_mem_mb", "mem MiB"),
                 ("bw_fraction", "of copy bw"), ("load_before", "load before"), ("load_after", "after"),
                 ("noisy", "noisy"))


def _table_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    columns = [(k, h) for k, h in TABLE_COLUMNS
               if k != "bw_fraction" or any(r.get(k) is not None for r in rows)]
    return [h for _, h in columns], [[_fmt(r.get(k), k) for k, _ in columns] for r in rows]


def format_table(rows: list[Row]) -> str:
    """A fixed-width terminal table of ``rows``."""
    header, cells = _table_cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda values: "  ".join(v.rjust(w) if i >= 4 else v.ljust(w)  # noqa: E731
                                    for i, (v, w) in enumerate(zip(values, widths, strict=True)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def markdown_table(rows: list[Row]) -> str:
    """``rows`` as a GitHub markdown table."""
    header, cells = _table_cells(rows)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(c) + " |" for c in cells])


def format_targets(results: list[TargetResult]) -> str:
    """One line per checked target, then which were not judged (empty when the run covers none)."""
    if not results:
        return ""
    lines = [f"[{r.verdict}] {r.group}: {r.target} -- {r.model} vs {r.baseline or 'copy'}, {r.case}: "
             f"{r.value:.2f} (need {r.threshold:g}){'; not judged: ' + r.noise if r.noise else ''}"
             for r in results]
    untrusted = sum(not r.trusted for r in results)
    lines.append(f"PASS/FAIL are judged from trustworthy rows only; {untrusted} of {len(results)} not judged "
                 "(noisy)." if untrusted else "PASS/FAIL are judged from trustworthy rows only; all rows were.")
    return "\n".join(lines)


def format_conditions(result: BenchResult) -> str:
    """The run's measuring conditions for the top of a report: a loaded-machine warning, the re-sampled cases
    and the noisy rows (empty when there is nothing to say)."""
    lines = []
    if result.loaded:
        lines.append(f"LOADED MACHINE: the 1-minute load average reached {result.max_load:.2f} on "
                     f"{os.cpu_count()} CPUs while this run used {result.threads} thread(s); timings are inflated "
                     "and noisy rows are marked and not judged.")
    lines += [f"re-sampled (interleaved, 3x the rounds): {case}" for case in result.resampled]
    noisy = [r for r in result.rows if r.get("noisy")]
    if noisy:
        lines.append(f"{len(noisy)} of {len(result.rows)} rows are noisy (marked NOISY; why: the JSON's `noise`).")
    return "\n".join(lines)


def format_skipped(skipped: list[Row]) -> str:
    """One line per skipped model (reasons deduplicated over its modes and sizes)."""
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for s in skipped:
        reasons[(s["model"], s["reason"])] += 1
    return "\n".join(f"skipped {m} ({n} run{'s' if n > 1 else ''}): {why}" for (m, why), n in reasons.items())


def sort_rows(rows: list[Row]) -> list[Row]:
    """Rows ordered by sweep, dtype, mode and sizes (the order of tables and the CSV)."""
    return sorted(rows, key=lambda r: (r["sweep"] or "", r["dtype"], r["mode"], r["layers"], r["hidden"],
                                       r["batch"], r["seq_len"]))


def write_json(path: Path, metadata: dict[str, Any], result: BenchResult,
               targets: list[TargetResult]) -> None:
    """``{"metadata", "rows", "skipped", "targets"}`` as indented JSON."""
    payload = {"metadata": metadata, "rows": result.rows, "skipped": result.skipped,
               "targets": [t.as_dict() for t in targets]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[Row]) -> None:
    """The rows, one line each, columns `parrnn.experiments.bench.runner.ROW_KEYS`."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_KEYS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_markdown(path: Path, metadata: dict[str, Any], rows: list[Row], targets: list[TargetResult],
                   conditions: str = "") -> None:
    """The metadata, the results table and the targets as a markdown page."""
    keys = ("command", "device_name", "cpu_model", "threads", "torch", "parrnn", "sru", "cupy", "git_commit",
            "timestamp", "memory_method")
    meta = "\n".join(f"- {k}: `{metadata.get(k)}`" for k in keys)
    machine_info = metadata.get("machine") or {}
    cpu = f"**CPU:** {metadata.get('cpu_summary') or metadata.get('cpu_model')}\n\n"
    choices = machine_info.get("gemm_choices") or {}
    gemm_text = ""
    if choices or machine_info.get("gemm_pinned"):
        lines = "\n".join(f"- `{shape}`: {engine}" for shape, engine in choices.items())
        gemm_text = (f"\nMatrix-product engine (parrnn.ops.gemm, pinned: `{machine_info.get('gemm_pinned')}`) "
                     f"per shape class:\n\n{lines or '- (no product timed)'}\n")
    warning = "".join(f"**{line}**\n\n" for line in conditions.splitlines())
    parts = [f"# parrnn-bench results\n\n{warning}{cpu}{meta}\n{gemm_text}", markdown_table(sort_rows(rows))]
    if targets:
        lines = format_targets(targets).splitlines()
        parts.append("## Targets\n\n" + "\n".join(f"- {line}" for line in lines))
    path.write_text("\n\n".join(parts) + "\n")


def write_results(out: Path, config: BenchConfig, result: BenchResult, targets: list[TargetResult],
                  argv: list[str] | None = None) -> list[Path]:
    """Write every output file into ``out`` (created if needed); return their paths."""
    from parrnn.experiments.bench.plots import plot_results

    out.mkdir(parents=True, exist_ok=True)
    metadata = collect_metadata(config, result, argv)
    write_json(out / "results.json", metadata, result, targets)
    write_csv(out / "results.csv", sort_rows(result.rows))
    write_markdown(out / "results.md", metadata, result.rows, targets, format_conditions(result))
    files = [out / "results.json", out / "results.csv", out / "results.md"]
    return files + plot_results(result.rows, out, title=str(metadata["device_name"]))

"""Side-by-side reports of training runs: a markdown table and learning curves (used by ``parrnn-compare``).

A run folder is what `parrnn.experiments.training.train` writes: ``config.json``, ``metrics.jsonl``,
``summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One finished (or interrupted) run, read back from its folder."""

    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]

    @classmethod
    def load(cls, folder: str | Path, name: str | None = None) -> Run:
        folder = Path(folder)
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        return cls(
            name or folder.name,
            json.loads((folder / "config.json").read_text()),
            json.loads((folder / "summary.json").read_text()),
            metrics,
        )

    @property
    def metric(self) -> str:
        """The task's metric name (``mse`` or ``accuracy``)."""
        return next(k for k in self.summary["eval"] if k != "loss")

    def curve(self, split: str, key: str, x: str = "step") -> tuple[list[float], list[float]]:
        """``(xs, ys)`` of ``key`` over ``x`` (``step`` or ``time``) for the records of ``split``."""
        rows = [r for r in self.metrics if r["split"] == split and key in r]
        return [r[x] for r in rows], [r[key] for r in rows]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.2e}"


def markdown_table(runs: Sequence[Run], baseline: float | None = None) -> str:
    """A markdown table: parameters, steps, times, final and best held-out metric, step at target."""
    if not runs:
        raise ValueError("no runs to report")
    metric = runs[0].metric
    lines = [
        f"| model | params | steps | train time (s) | wall time (s) | eval {metric} "
        f"| best eval {metric} (step) "
        f"| eval loss | target reached at step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        s = run.summary
        best = s.get("best_eval") or {}
        best_txt = f"{_fmt(best.get(metric))} ({best['step']})" if best else "-"
        lines.append(
            f"| {run.name} | {s['params']:,} | {s['steps']} | {s['train_time']:.1f} | {s['wall_time']:.1f} "
            f"| {_fmt(s['eval'].get(metric))} | {best_txt} | {_fmt(s['eval'].get('loss'))} "
            f"| {s['target_step'] if s.get('target_step') else '-'} |"
        )
    if baseline is not None:
        lines.append(f"\nBaseline (best input-independent guess), loss: {_fmt(baseline)}")
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Run], path: str | Path, title: str = "", baseline: float | None = None) -> Path:
    """Held-out metric against step and against training time, one line per run; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = runs[0].metric
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for run in runs:
        for ax, x in zip(axes, ("step", "time"), strict=True):
            xs, ys = run.curve("eval", metric, x)
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=run.name)
            txs, tys = run.curve("train", metric, x)
            ax.plot(txs, tys, color=line.get_color(), alpha=0.25, linewidth=0.8)
    for ax, xlabel in zip(axes, ("step", "training time (s)"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (held-out; faint: train)")
        if metric == "mse":
            ax.set_yscale("log")
            if baseline is not None:
                ax.axhline(baseline, color="gray", linestyle="--", linewidth=0.8, label="baseline")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    runs: Sequence[Run],
    out: str | Path,
    *,
    title: str = "",
    baseline: float | None = None,
    command: str | None = None,
) -> Path:
    """Write ``results.md`` (table, command), ``results.json`` and ``curves.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(runs, out / "curves.png", title, baseline)
    parts = [f"# {title}" if title else "", markdown_table(runs, baseline).rstrip()]
    if command:
        parts.append(f"Command:\n\n```\n{command}\n```")
    parts.append("![learning curves](curves.png)")
    (out / "results.md").write_text("\n\n".join(p for p in parts if p) + "\n")
    (out / "results.json").write_text(
        json.dumps([{"name": r.name, "config": r.config, "summary": r.summary} for r in runs], indent=2) + "\n"
    )
    return out / "results.md"


def report_runs(out: str | Path, names: Sequence[str], *, title: str | None = None, command: str | None = None) -> Path:
    """Write the report of the run folders ``out/<name>`` into ``out`` (see `write_report`)."""
    runs = [Run.load(Path(out) / name, name) for name in names]
    first = runs[0]
    title = title or f"{first.config['task']} (seq_len={first.config.get('seq_len')}): {', '.join(names)}"
    return write_report(runs, out, title=title, baseline=first.summary.get("baseline"), command=command)

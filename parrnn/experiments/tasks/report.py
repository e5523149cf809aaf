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


def _spread_text(spread: dict[str, float] | None, digits: int = 4) -> str:
    """``mean ± std [min–max]`` (``±`` only with several seeds)."""
    if spread is None:
        return "-"
    if spread["n"] < 2:
        return f"{spread['mean']:.{digits}g}"
    return (f"{spread['mean']:.{digits}g} ± {spread['std']:.2g} "
            f"[{spread['lo']:.{digits}g}–{spread['hi']:.{digits}g}]")


def _budget_text(budget: dict[str, float | None]) -> str:
    seconds, steps = budget.get("max_time"), budget["steps"]
    if not seconds:
        return f"{steps} steps"
    return f"{seconds:g} s of training" + (f" (at most {steps} steps)" if steps < 100_000 else "")


def _tried(payload: dict[str, Any], model: str) -> str:
    grid = ", ".join(f"{lr:g}" for lr in payload["protocol"]["lr_grid"])
    return (f"tried lr {{{grid}}} x {_budget_text(payload['budget']['grid'])}, then "
            f"{payload['protocol']['seeds']} seeds x {_budget_text(payload['budget']['final'])} at lr "
            f"{payload['chosen_lr'][model]:g}")


def protocol_tables(payload: dict[str, Any]) -> str:
    """The final table (mean ± std over seeds) and the learning-rate grid table of a protocol payload."""
    metric = payload["metric"]
    lines = [f"| model | params | lr (chosen) | seeds | test {metric}: mean ± std [min–max] "
             "| lowest valid loss: mean ± std [min–max] | steps (mean) | steps/s (mean) | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in payload["summary"]:
        status = s["status"] if s["status"] != "did not train" else f"**did not train** ({_tried(payload, s['model'])})"
        lines.append(f"| {s['model']} | {s['params']:,} | {s['lr']:g} | {s['seeds']} | {_spread_text(s['test'])} "
                     f"| {_spread_text(s['best_valid_loss'])} | {s['steps']['mean']:.0f} "
                     f"| {s['steps_per_s']['mean']:.3g} | {status} |")
    grid = payload["protocol"]["lr_grid"]
    if payload["grid"]:
        lines += ["", "Learning-rate grid (seed 0, " + _budget_text(payload["budget"]["grid"]) + " each): lowest "
                  "validation loss (steps); **bold** = chosen; † = did not train", "",
                  "| model | " + " | ".join(f"lr {lr:g}" for lr in grid) + " |",
                  "|---|" + "---:|" * len(grid)]
        for model in payload["models"]:
            cells = []
            for lr in grid:
                run = next((r for r in payload["grid"] if r["model"] == model and r["lr"] == lr), None)
                if run is None:
                    cells.append("-")
                    continue
                text = f"{_fmt(run['best_loss'])} ({run['steps']}){' †' if run['did_not_train'] else ''}"
                cells.append(f"**{text}**" if lr == payload["chosen_lr"][model] else text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocol_text(payload: dict[str, Any]) -> str:
    """The protocol in words: split, grid, seeds, budgets, spread, baseline, did-not-train rule, equal footing."""
    p, base, baseline = payload["protocol"], payload["base_config"], payload["baseline"]
    margin_loss = (1 - p["margin"]) * baseline["loss"]
    footing = ("the same training-time budget for every model (the same wall-clock on the same machine; parameter "
               "counts differ and are listed)" if payload["budget"]["final"].get("max_time") else
               "the same number of steps for every model (parameter counts differ and are listed)")
    return "\n".join([
        f"- **Task:** {payload['description']}.",
        f"- **Validation:** the last {100 * p['valid_fraction']:g}% of the training split; it chooses each "
        f"model's learning rate. The test split (its first {base['eval_size'] or 'all'} examples/segments, or all "
        "of it when shorter) is read once per final run, after training.",
        f"- **Learning-rate grid:** {', '.join(f'{lr:g}' for lr in p['lr_grid'])}; one run per (model, lr), "
        f"seed {base['seed']}, {_budget_text(payload['budget']['grid'])} each.",
        f"- **Finals:** {p['seeds']} seed(s) per model at its chosen rate, {_budget_text(payload['budget']['final'])}"
        f" each; the seed sets initialization, data order and dropout, and seed k gives every model the same data "
        "order. **Spread:** mean ± sample standard deviation over seeds, [min–max]; the plot shades min–max.",
        f"- **Trivial baseline:** {baseline['kind']} predictor fitted on the training split: validation loss "
        f"{baseline['loss']:.4g}, {baseline['metric_name']} {baseline['metric']:.4g}. **Did not train:** a run whose "
        f"validation loss never went below {1 - p['margin']:g} x that ({margin_loss:.4g}).",
        f"- **Equal footing:** {footing}, the same data and order, AdamW with weight decay "
        f"{base['weight_decay']:g}, dropout {base['dropout']:g}, gradient-norm clipping at {base['clip_grad']:g} "
        f"for all, warm-up {base['warmup']} steps, {base['schedule']} schedule; LSTM forget-gate bias 1 "
        f"(unless --memory-bias sets every model's); hidden {base['hidden']}, {base['layers']} layers, "
        f"batch {base['batch_size']}, {base['threads'] or 'default'} CPU thread(s), device {base['device']}.",
    ])


def plot_protocol(payload: dict[str, Any], out: Path) -> Path:
    """``curves.png``: validation metric over steps and training time (line: mean over seeds, band: min-max; at
    the steps every seed evaluated), and the grid's lowest validation loss against the learning rate, with the
    trivial baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, baseline = payload["metric"], payload["baseline"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), constrained_layout=True)
    for i, model in enumerate(payload["models"]):
        runs = [Run.load(out / r["out"], model) for r in payload["finals"] if r["model"] == model and r["out"]]
        by_step: dict[int, list[tuple[float, float]]] = {}
        for run in runs:
            for rec in run.metrics:
                if rec["split"] == "valid":
                    by_step.setdefault(rec["step"], []).append((rec[metric], rec["time"]))
        steps = sorted(step for step, values in by_step.items() if len(values) == len(runs))  # every seed's
        values = [[v for v, _ in by_step[s]] for s in steps]
        times = [sum(t for _, t in by_step[s]) / len(by_step[s]) for s in steps]
        mean = [sum(v) / len(v) for v in values]
        for ax, xs in zip(axes[:2], (steps, times), strict=True):
            ax.plot(xs, mean, color=f"C{i}", marker="o", markersize=3, label=model)
            ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], color=f"C{i}", alpha=0.2)
        grid = sorted((r["lr"], r["best_loss"]) for r in payload["grid"] if r["model"] == model
                      and r["best_loss"] is not None)
        if grid:
            axes[2].plot(*zip(*grid, strict=True), color=f"C{i}", marker="o", label=model)
    for ax, xlabel in zip(axes[:2], ("step", "training time (s)"), strict=True):
        ax.axhline(baseline["metric"], color="gray", linestyle="--", linewidth=0.8,
                   label=f"{baseline['kind']} baseline")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"validation {metric} (mean; band: min-max over seeds)")
        ax.grid(alpha=0.3)
    axes[2].axhline(baseline["loss"], color="gray", linestyle="--", linewidth=0.8, label=f"{baseline['kind']} baseline")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("learning rate (grid)")
    axes[2].set_ylabel("lowest validation loss")
    axes[2].grid(alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(payload["description"], fontsize=10)
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_protocol_report(payload: dict[str, Any], out: str | Path) -> Path:
    """Write ``results.md`` and ``curves.png`` for a protocol payload (see `parrnn.experiments.tasks.protocol`)."""
    out = Path(out)
    plot_protocol(payload, out)
    parts = [f"# {payload['task']}: {', '.join(payload['models'])}", protocol_text(payload),
             protocol_tables(payload), "Ranking (test " + payload["metric"] + ", mean ± std over seeds):\n\n"
             + "\n".join(payload["ranking"])]
    if payload.get("command"):
        parts.append(f"Command:\n\n```\n{payload['command']}\n```")
    parts.append("![validation curves and learning-rate grid](curves.png)")
    (out / "results.md").write_text("\n\n".join(parts) + "\n")
    return out / "results.md"


def report_protocol(out: str | Path) -> Path:
    """Rebuild ``results.md`` and ``curves.png`` from ``out/protocol.json``."""
    out = Path(out)
    return write_protocol_report(json.loads((out / "protocol.json").read_text()), out)

"""The comparison protocol behind ``parrnn-compare``: tuned learning rates, several seeds, a trivial baseline.

For every model of a comparison, on one task:

1. **Validation split.** The last ``valid_fraction`` of the training split (segments, for streamed tasks) is
   held out as a validation split (`parrnn.experiments.tasks.base.with_validation`); the test split is read only once
   per
   final run, after training, and never chooses anything.
2. **Trivial baseline.** The best input-independent predictor (mean / majority class / unigram, fitted on the
   training split) is scored on the validation split (`parrnn.experiments.tasks.base.trivial_baseline`).
3. **Learning-rate grid.** One short run per (model, learning rate) of ``lr_grid`` (seed 0, ``grid_fraction``
   of the final budget; these runs never read the test split); each model keeps the rate with the lowest
   validation loss.
4. **Finals.** Each model trains ``seeds`` times at its rate (seeds ``seed, seed + 1, ...``: seed ``k`` gives
   every model the same data order). Tables give the mean and sample standard deviation over seeds, with the
   min-max range; the ranking says when two models' min-max ranges overlap ("within each other's spread").
5. **Did not train.** A run whose validation loss never went below ``(1 - margin)`` x the trivial baseline's is
   marked "did not train" and, when every seed of a model is, the model is reported with what was tried
   instead of being ranked.

Equal footing: every model gets the same budget (``steps`` and, when set, ``max_time`` seconds of training:
the same wall-clock on the same machine), the same data and data order, the same regularization (dropout,
weight decay) and gradient clipping (``clip_grad``), and its standard initialization (LSTM forget-gate bias 1,
`parrnn.experiments.tasks.models.LSTM_FORGET_BIAS`). Parameter counts and steps per second are in every table.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from parrnn.experiments.tasks.base import Task, TrivialBaseline, trivial_baseline

DEFAULT_LR_GRID = (3e-4, 1e-3, 3e-3)


@dataclass(frozen=True)
class Protocol:
    """How a comparison is run (see the module docstring)."""

    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    seeds: int = 3
    grid_fraction: float = 0.25
    valid_fraction: float = 0.1
    margin: float = 0.05

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not self.lr_grid or any(not lr > 0 for lr in self.lr_grid):
            raise ValueError(f"lr_grid must be positive learning rates, got {self.lr_grid}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 < self.grid_fraction <= 1:
            raise ValueError(f"grid_fraction must be in (0, 1], got {self.grid_fraction}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (0 for one value) and range of a list of values."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        values = [float(v) for v in values]
        if not values:
            raise ValueError("no values to aggregate")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, min(values), max(values), len(values))

    def overlaps(self, other: Spread) -> bool:
        """Whether the two min-max ranges overlap."""
        return self.lo <= other.hi and other.lo <= self.hi


def did_not_train(best_loss: float | None, baseline_loss: float, margin: float) -> bool:
    """Whether a run's lowest validation loss stayed above ``(1 - margin)`` x the trivial baseline's."""
    return best_loss is None or not math.isfinite(best_loss) or best_loss > (1.0 - margin) * baseline_loss


def select_lr(grid_runs: Sequence[dict[str, Any]]) -> float:
    """The learning rate of the grid run with the lowest validation loss (``best_loss``; a diverged run counts as
    infinite; ties go to the first)."""
    if not grid_runs:
        raise ValueError("no grid runs to choose from")

    def loss(run: dict[str, Any]) -> float:
        value = run.get("best_loss")
        return value if value is not None and math.isfinite(value) else math.inf
    return min(grid_runs, key=loss)["lr"]


def _run_record(result: Any, model: str, lr: float, seed: int, baseline: TrivialBaseline, margin: float,
                out: Path) -> dict[str, Any]:
    """The facts of one run that the report needs (`parrnn.experiments.training.TrainResult` flattened)."""
    return {"model": model, "lr": lr, "seed": seed, "params": result.params, "steps": result.steps,
            "train_time": result.train_time, "steps_per_s": result.steps_per_s, "best_loss": result.best_loss,
            "valid": result.eval, "test": result.test,
            "did_not_train": did_not_train(result.best_loss, baseline.loss, margin),
            "out": str(Path(result.out).relative_to(out)) if result.out else None}


def summarize(model: str, finals: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
    """One model's final runs aggregated over seeds: test metric, validation loss, steps, steps/s."""
    runs = [r for r in finals if r["model"] == model]
    if not runs:
        raise ValueError(f"no final runs of model {model!r}")
    failed = sum(r["did_not_train"] for r in runs)
    status = "trained" if failed == 0 else "did not train" if failed == len(runs) else (
        f"{failed}/{len(runs)} seeds did not train")
    tested = [r["test"][metric] for r in runs if r["test"]]
    return {"model": model, "params": runs[0]["params"], "lr": runs[0]["lr"], "seeds": len(runs),
            "test": asdict(Spread.of(tested)) if tested else None,
            "best_valid_loss": asdict(Spread.of([r["best_loss"] if r["best_loss"] is not None else math.inf
                                                 for r in runs])),
            "steps": asdict(Spread.of([r["steps"] for r in runs])),
            "steps_per_s": asdict(Spread.of([r["steps_per_s"] for r in runs])),
            "did_not_train": failed, "status": status}


def rank(summaries: Sequence[dict[str, Any]], higher_is_better: bool) -> list[str]:
    """Ranking sentences: trained models best first by mean test metric, each saying which better-ranked models it
    is within the spread (min-max over seeds) of; then the models that did not train."""
    ranked = sorted((s for s in summaries if s["status"] != "did not train" and s["test"]),
                    key=lambda s: s["test"]["mean"], reverse=higher_is_better)
    lines = []
    for i, s in enumerate(ranked):
        spread = Spread(**s["test"])
        ties = [o["model"] for o in ranked[:i] if Spread(**o["test"]).overlaps(spread)]
        tie_text = f" (within the spread of {', '.join(ties)})" if ties else ""
        lines.append(f"{i + 1}. {s['model']}: {spread.mean:.4g} ± {spread.std:.2g}{tie_text}")
    lines += [f"- not ranked: {s['model']} did not train" for s in summaries if s["status"] == "did not train"]
    return lines


def budgets(base: Any, protocol: Protocol) -> dict[str, dict[str, float | None]]:
    """Steps and training seconds of a grid run and of a final run."""
    fraction = protocol.grid_fraction
    return {"grid": {"steps": max(1, round(base.steps * fraction)),
                     "max_time": None if base.max_time is None else base.max_time * fraction},
            "final": {"steps": base.steps, "max_time": base.max_time}}


def run_protocol(base: Any, models: Sequence[str], out: str | Path, protocol: Protocol = Protocol(), *,
                 command: str | None = None, log: Any = print) -> dict[str, Any]:
    """Run the protocol for ``models`` with ``base``'s settings (a `parrnn.experiments.training.TrainConfig`); write
    ``protocol.json``, ``results.md`` and ``curves.png`` into ``out`` and return the ``protocol.json`` payload.

    Run folders: ``out/grid/<model>-lr<lr>`` and ``out/final/<model>/seed<k>``. With ``base.resume``, finished
    runs are read back from their checkpoints instead of being trained again.
    """
    from parrnn.experiments.tasks.report import write_protocol_report
    from parrnn.experiments.training import train

    protocol.validate()
    if len(set(models)) != len(models) or not models:
        raise ValueError(f"need distinct model names, got {list(models)}")
    out = Path(out)
    base = replace(base, valid_fraction=protocol.valid_fraction)
    task: Task = base.make_task()
    baseline = trivial_baseline(task)
    log(f"{task.name}: trivial baseline: {baseline.describe()}")
    budget = budgets(base, protocol)
    grid_runs, chosen = [], {}
    for model in models:
        runs = []
        for lr in protocol.lr_grid if len(protocol.lr_grid) > 1 else ():
            config = replace(base, model=model, lr=lr, steps=budget["grid"]["steps"],
                             max_time=budget["grid"]["max_time"], out=str(out / "grid" / f"{model}-lr{lr:g}"),
                             test_at_end=False)
            runs.append(_run_record(train(config, task), model, lr, base.seed, baseline, protocol.margin, out))
            log(f"grid {model} lr={lr:g}: best valid loss {runs[-1]['best_loss']}")
        chosen[model] = select_lr(runs) if runs else protocol.lr_grid[0]
        grid_runs += runs
    finals = []
    for model in models:
        for k in range(protocol.seeds):
            config = replace(base, model=model, lr=chosen[model], seed=base.seed + k,
                             out=str(out / "final" / model / f"seed{base.seed + k}"))
            finals.append(_run_record(train(config, task), model, chosen[model], base.seed + k, baseline,
                                      protocol.margin, out))
            log(f"final {model} seed={base.seed + k}: test {finals[-1]['test']}")
    summaries = [summarize(m, finals, task.metric) for m in models]
    payload = {"task": task.name, "description": task.description, "metric": task.metric,
               "higher_is_better": task.higher_is_better, "baseline": asdict(baseline),
               "protocol": asdict(protocol), "budget": budget, "base_config": asdict(base), "models": list(models),
               "grid": grid_runs, "chosen_lr": chosen, "finals": finals, "summary": summaries,
               "ranking": rank(summaries, task.higher_is_better), "command": command}
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_protocol_report(payload, out)
    return payload

"""Gradient-flow diagnostics: how strongly does the loss at the end of a sequence reach back to step ``t``?

For a model and a batch, `gradient_flow` returns ``g_t = mean_n || dLoss / dx_t[n] ||`` for every step
``t``, where ``x_t`` is the encoder's input at step ``t`` (the embedded token or the raw features). With a
loss read out at the last step (the adding problem), ``g_t`` falling exponentially as ``t`` moves away from
``T`` is the vanishing gradient, measured. (The gradient is taken with respect to the *inputs* because fused
recurrent kernels
-- cuDNN, parrnn's SRU -- do not expose their per-step hidden states to autograd; ``dLoss/dx_t`` is
``dLoss/dh_t`` pulled back through one input map, so it decays at the same rate.)

`compare_gradient_flow` measures several models on the same batch, from initialization or from trained
run folders, and writes ``gradflow.json`` and ``gradflow.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from parrnn.experiments.tasks import Batch, Task, make_task
from parrnn.experiments.tasks.models import ModelSpec, SequenceModel, build_model

FLOOR = 1e-30  # log-scale plots draw exact zeros (float32 underflow) here


def gradient_flow(model: SequenceModel, task: Task, batch: Batch) -> Tensor:
    """``(L,)`` batch-mean norm of ``dLoss/dx_t`` for every step ``t`` (see the module docstring)."""
    x = model.features(batch.inputs).detach().requires_grad_(True)
    loss = task.loss(model.forward_features(x, batch.lengths), batch.targets)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.norm(dim=-1).mean(dim=1)


def load_run_model(folder: str | Path, task: Task) -> tuple[str, SequenceModel]:
    """``(name, model)`` of a training run folder (``config.json`` + ``checkpoint.pt``) for ``task``."""
    from parrnn.experiments.training import TrainConfig

    folder = Path(folder)
    config = TrainConfig.from_dict(json.loads((folder / "config.json").read_text()))
    model = build_model(task, config.model_spec())
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return f"{config.model} (trained {state['run']['step']} steps)", model


def compare_gradient_flow(
    models: Sequence[str] = ("lstm", "gru", "sru", "sliced-gru"),
    *,
    task: str = "adding",
    seq_len: int = 1000,
    spec: ModelSpec | None = None,
    batch_size: int = 32,
    seed: int = 0,
    runs: Sequence[str | Path] = (),
    out: str | Path | None = None,
) -> dict[str, list[float]]:
    """Gradient flow of freshly initialized ``models`` (and of trained ``runs``) on one batch of ``task``.

    Returns ``{name: [g_0, ..., g_{L-1}]}``; with ``out``, also writes ``gradflow.json`` and ``gradflow.png``.
    """
    spec = spec or ModelSpec()
    the_task = make_task(task, seq_len=seq_len, test_size=batch_size, seed=seed)
    batch = the_task.test.batch(list(range(batch_size)))
    named: list[tuple[str, SequenceModel]] = []
    for name in models:
        torch.manual_seed(seed)
        named.append((f"{name} (init)", build_model(the_task, ModelSpec(**{**vars(spec), "name": name}))))
    named.extend(load_run_model(folder, the_task) for folder in runs)
    flows = {name: gradient_flow(model, the_task, batch).tolist() for name, model in named}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gradflow.json").write_text(
            json.dumps(
                {
                    "task": task,
                    "seq_len": seq_len,
                    "batch_size": batch_size,
                    "spec": vars(spec),
                    "flows": flows,
                }
            )
            + "\n"
        )
        bias = "" if spec.memory_bias is None else f", memory bias {spec.memory_bias:g}"
        plot_gradient_flow(flows, out / "gradflow.png", f"||dLoss/dx_t||, {the_task.description}{bias}")
    return flows


def plot_gradient_flow(flows: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Log-scale plot of ``g_t`` against ``t`` for every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5), constrained_layout=True)
    for name, values in flows.items():
        ax.plot(range(len(values)), [max(v, FLOOR) for v in values], label=name, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("time step t (loss at the last step)")
    ax.set_ylabel(f"mean ||dLoss / dx_t||  (0 drawn at {FLOOR:g})")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

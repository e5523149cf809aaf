"""Train and evaluate a model on an accuracy task: the Python API under ``parrnn-train``.

>>> cfg = TrainConfig(task="adding", seq_len=20, model="gru", hidden=8, layers=1, steps=3, batch_size=4,
...                   eval_size=8, progress=False)
>>> result = train(cfg)
>>> result.steps, sorted(result.eval)
(3, ['loss', 'mse'])

Guarantees:

* **Reproducible**: the model is initialized from ``seed``; batch ``s`` holds the examples at positions
  ``s*B .. s*B+B-1`` of a per-epoch permutation seeded by ``(seed, epoch)``; dropout is reseeded at every step
  from ``(seed, step, rank)``. Nothing depends on earlier steps except the parameters and optimizer state.
* **Resumable**: a checkpoint (parameters, optimizer, schedule, step, timers) is written every ``ckpt_every``
  steps, at the end, and when ``stop_at`` / ``max_time`` interrupts a run; ``resume=True`` continues from it
  to the same parameters an uninterrupted run reaches.
* **Distributed**: under ``torchrun --nproc_per_node=K`` (``WORLD_SIZE`` > 1 in the environment) the model is
  wrapped in `torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on CUDA) and rank ``r``
  trains on the examples ``r, r+K, ...`` of each global batch, so the global batch and the result match a
  single-process run. Only rank 0 evaluates and writes files.

Files in ``out``: ``config.json``, ``metrics.jsonl`` (one JSON object per logged train window / evaluation),
``checkpoint.pt`` and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from parrnn.experiments.allocator import retain_freed_memory
from parrnn.experiments.progress import progress_bar
from parrnn.experiments.tasks import SequenceDataset, Task, make_task
from parrnn.experiments.tasks.base import with_validation
from parrnn.experiments.tasks.models import ModelSpec, build_model, count_parameters


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run (each field is also a ``parrnn-train`` option)."""

    task: str = _opt("adding", "task: adding, copy, listops, smnist, pmnist, imdb, charlm")
    seq_len: int | None = _opt(None, "T for adding/copy (default 1000/100); shortest ListOps expression (500); "
                                     "charlm segment length (256)")
    max_len: int | None = _opt(None, "longest ListOps expression (2000) / words kept per IMDB review (400)")
    train_size: int | None = _opt(None, "training examples (default: the task's); charlm: streams (batch_size)")
    test_size: int | None = _opt(None, "held-out examples (default: the task's); charlm: test streams (8)")
    data_seed: int = _opt(0, "seed of generated data")
    model: str = _opt("sru", "lstm, gru, sru, sru-v1, sliced-gru, sliced-lstm, sliced-sru; charlm also srupp, "
                             "transformer")
    hidden: int = _opt(128, "hidden size")
    layers: int = _opt(2, "stacked recurrent layers")
    embed_dim: int = _opt(64, "embedding size for token tasks")
    dropout: float = _opt(0.0, "dropout between layers")
    slices: int = _opt(8, "sliced models: slices per level (n)")
    levels: int = _opt(2, "sliced models: levels above the base (k)")
    sru_backend: str = _opt("auto", "SRU backend: auto, cpu, cuda, scan, reference")
    memory_bias: float | None = _opt(None, "initial bias of the forget (LSTM, SRU) / update (GRU) gates")
    steps: int = _opt(1000, "optimizer steps")
    batch_size: int = _opt(64, "global batch size (split across distributed ranks)")
    lr: float = _opt(1e-3, "peak learning rate (Adam)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    schedule: str = _opt("constant", "learning-rate schedule after warm-up: constant or cosine")
    warmup: int = _opt(0, "linear warm-up steps")
    clip_grad: float = _opt(1.0, "clip the gradient norm to this value (0: off)")
    eval_every: int = _opt(200, "evaluate every N steps (and at the end)")
    eval_size: int | None = _opt(1000, "held-out examples per evaluation")
    eval_batch_size: int = _opt(256, "batch size for evaluation")
    valid_fraction: float = _opt(0.0, "carve this last fraction of the training split as a validation split: "
                                      "evaluations during training read it, the test split is read once at the end "
                                      "(0: evaluate on the test split)")
    test_at_end: bool = _opt(True, "with a validation split: read the test split once after training")
    log_every: int = _opt(20, "write a train record every N steps")
    ckpt_every: int = _opt(0, "checkpoint every N steps (0: only at the end)")
    target: float | None = _opt(None, "stop once the eval metric reaches this value (mse <= / accuracy >=)")
    stop_at: int | None = _opt(None, "checkpoint and stop after this step, as if interrupted (then --resume)")
    max_time: float | None = _opt(None, "checkpoint and stop after this many seconds of training")
    seed: int = _opt(0, "seed of initialization, data order and dropout")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1, ...")
    threads: int | None = _opt(None, "torch CPU threads")
    retain_memory: bool = _opt(True, "keep freed memory in glibc's heap for reuse (fewer page faults on CPU)")
    out: str | None = _opt(None, "run folder for metrics, checkpoints and summary")
    resume: bool = _opt(False, "continue from OUT/checkpoint.pt if it exists")
    progress: bool = _opt(True, "show a progress bar")

    def model_spec(self) -> ModelSpec:
        """The architecture part of the config."""
        shared = {f.name: getattr(self, f.name) for f in fields(ModelSpec) if f.name != "name"}
        return ModelSpec(name=self.model, **shared)

    def make_task(self) -> Task:
        """The task (and its data) this config trains on, with its validation split when ``valid_fraction``."""
        task = make_task(
            self.task,
            seq_len=self.seq_len,
            train_size=self.batch_size if self.task == "charlm" and self.train_size is None else self.train_size,
            test_size=self.test_size,
            seed=self.data_seed,
            max_len=self.max_len,
        )
        return with_validation(task, self.valid_fraction) if self.valid_fraction else task

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict (e.g. ``config.json``), ignoring unknown keys."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TrainResult:
    """What a run produced.

    ``train_time`` counts forward, backward and optimizer steps only; ``wall_time`` everything (data,
    evaluation, checkpoints), both summed over resumed segments. ``eval`` is the last evaluation,
    ``best_eval`` the best one (with its ``step``), ``target_step`` the step at which ``target`` was reached.
    ``replicas_agree`` (distributed runs only): whether every rank ended with bit-identical parameters.
    ``baseline``: the task's input-independent loss baseline, if it has one.
    With a validation split, ``eval``/``best_eval`` are validation results and ``test`` is the test split's,
    read once after training; ``best_loss`` is the lowest evaluation loss seen.
    """

    model: str
    task: str
    steps: int
    params: int
    train_time: float
    wall_time: float
    eval: dict[str, float]
    best_eval: dict[str, float] | None = None
    target_step: int | None = None
    finished: bool = True
    replicas_agree: bool | None = None
    baseline: float | None = None
    out: str | None = None
    test: dict[str, float] | None = None
    best_loss: float | None = None

    @property
    def steps_per_s(self) -> float:
        """Optimizer steps per second of training time."""
        return self.steps / self.train_time if self.train_time > 0 else 0.0


@dataclass
class Distributed:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` with CUDA, else ``cpu``; a bare ``cuda`` gets the local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, owns), device


class BatchOrder:
    """Which examples make up each global batch: consecutive slices of per-epoch permutations."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen)
        return self._perm

    def global_batch(self, step: int) -> list[int]:
        """Dataset indices of the global batch used at (0-based) ``step``."""
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [int(self._permutation(p // self.size)[p % self.size]) for p in positions]

    def local_batch(self, step: int, rank: int, world: int) -> list[int]:
        """This rank's share of the global batch (every ``world``-th example, like ``DistributedSampler``)."""
        return self.global_batch(step)[rank::world]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    device: torch.device,
    size: int | None = None,
    batch_size: int = 256,
    split: str = "test",
) -> dict[str, float]:
    """Loss and metric of ``model`` on the first ``size`` examples of ``split`` (``test`` or ``valid``; all
    when ``None``)."""
    dataset = task.valid if split == "valid" else task.test
    if dataset is None:
        raise ValueError(f"task {task.name!r} has no {split!r} split")
    was_training = model.training
    model.eval()
    if task.stateful:
        result = _evaluate_streams(model, task, dataset, device, size)
        model.train(was_training)
        return result
    total = len(dataset) if size is None else min(size, len(dataset))
    loss_sum, metric_sum, metric_count = 0.0, 0.0, 0
    for start in range(0, total, batch_size):
        idx = list(range(start, min(start + batch_size, total)))
        batch = dataset.batch(idx).to(device)
        pred = model(batch.inputs, batch.lengths)
        loss_sum += float(task.loss(pred, batch.targets)) * len(idx)
        s, c = task.metric_sum(pred, batch.targets)
        metric_sum, metric_count = metric_sum + s, metric_count + c
    model.train(was_training)
    return {"loss": loss_sum / total, task.metric: metric_sum / metric_count}


def _evaluate_streams(
    model: nn.Module, task: Task, dataset: SequenceDataset, device: torch.device, size: int | None
) -> dict[str, float]:
    """Stateful tasks: read the first ``size`` segments of ``dataset`` in order from a fresh state (the training
    state is put back afterwards)."""
    saved = model.state
    model.reset_state()
    total = len(dataset) if size is None else min(size, len(dataset))
    loss_sum, metric_sum, metric_count = 0.0, 0.0, 0
    for k in range(total):
        batch = dataset.batch([k]).to(device)
        pred = model(batch.inputs)
        loss_sum += float(task.loss(pred, batch.targets))
        s, c = task.metric_sum(pred, batch.targets)
        metric_sum, metric_count = metric_sum + s, metric_count + c
    model.state = saved
    return {"loss": loss_sum / total, task.metric: metric_sum / metric_count}


def make_optimizer(
    model: nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (the fused implementation where torch has one for the device) with linear warm-up, then a
    constant or cosine learning rate."""
    if config.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {config.schedule!r}")
    params = list(model.parameters())
    try:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except RuntimeError:  # no fused kernel for these parameters' device or dtype in this torch
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        if config.schedule == "cosine":
            progress = (step - config.warmup) / max(1, config.steps - config.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class MetricsLog:
    """Append-only JSONL of metrics (rank 0 only); on resume, records past the checkpoint are dropped."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        if self.path is None or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _better(task: Task, value: float, than: float | None) -> bool:
    return than is None or (value > than if task.higher_is_better else value < than)


def _reached(task: Task, value: float, target: float | None) -> bool:
    return target is not None and (value >= target if task.higher_is_better else value <= target)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


WINDOW_KEYS = ("loss", "metric", "count", "steps")


@dataclass
class RunState:
    """Progress that a checkpoint carries besides parameters and optimizer: timers, the best and the last
    evaluation (``eval_step``: its step), and ``window``, the unlogged train metrics since the last train
    record, so that resumed logs match uninterrupted ones."""

    step: int = 0
    train_time: float = 0.0
    wall_time: float = 0.0
    best: dict[str, float] | None = None
    best_loss: float | None = None
    target_step: int | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    eval_step: int = -1
    window: dict[str, float] = field(default_factory=lambda: dict.fromkeys(WINDOW_KEYS, 0))

    def add(self, loss: float, metric_sum: float, count: int) -> None:
        """Accumulate one training step into the current log window."""
        w = self.window
        w["loss"], w["metric"], w["count"], w["steps"] = (
            w["loss"] + loss,
            w["metric"] + metric_sum,
            w["count"] + count,
            w["steps"] + 1,
        )

    def pop_window(self, metric: str) -> dict[str, float]:
        """Mean loss and metric over the window; starts a new window."""
        w, self.window = self.window, RunState().window
        return {"loss": w["loss"] / w["steps"], metric: w["metric"] / w["count"]}


def train(config: TrainConfig, task: Task | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.task`` (or on a prebuilt ``task``) and return the result.

    ``config.threads`` sets torch's CPU thread count for the duration of the call; ``config.retain_memory``
    tunes glibc malloc for the rest of the process (`parrnn.experiments.allocator.retain_freed_memory`).
    """
    if config.retain_memory:
        retain_freed_memory()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    ddp, device = setup_distributed(config.device)
    try:
        result = _train(config, task or config.make_task(), ddp, device)
        if ddp.owns_group:
            # leave together: gloo aborts a process ("terminate called without an active exception") when it
            # tears down its connections while a peer is still writing its results
            dist.barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        if ddp.owns_group:
            dist.destroy_process_group()


def _seed(seed: int, device: torch.device) -> None:
    """Seed the generators that ``device`` uses (``torch.manual_seed`` seeds every device: slower)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _train(config: TrainConfig, task: Task, ddp: Distributed, device: torch.device) -> TrainResult:
    if task.stateful and ddp.world > 1:
        raise ValueError(f"task {task.name!r} carries state across batches; distributed training is not supported")
    if config.batch_size % ddp.world:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the number of processes ({ddp.world})")
    out = Path(config.out) if config.out else None
    if out is not None and ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    log = MetricsLog(out / "metrics.jsonl" if out is not None and ddp.main else None)
    ckpt_path = out / "checkpoint.pt" if out is not None else None

    torch.manual_seed(config.seed)
    model = build_model(task, config.model_spec()).to(device)
    params = count_parameters(model)
    optimizer, scheduler = make_optimizer(model, config)
    run = RunState()
    if config.resume and ckpt_path is not None and ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        run = RunState(**saved["run"])
        log.truncate_after(run.step)
    elif ddp.main and log.path is not None and log.path.exists():
        log.path.unlink()  # a fresh run starts a fresh log
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    order = BatchOrder(len(task.train), config.batch_size, config.seed)
    wall_start, wall_before = time.perf_counter(), run.wall_time

    def checkpoint() -> None:
        run.wall_time = wall_before + time.perf_counter() - wall_start
        if ckpt_path is not None and ddp.main:
            state = {
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "run": asdict(run),
            }
            _save_atomic(state, ckpt_path)

    def run_eval() -> None:
        """Evaluate on the held-out split (rank 0); log it; track the best result and the target."""
        run.last_eval = evaluate(unwrap(model), task, device, config.eval_size, config.eval_batch_size, eval_split)
        run.eval_step = run.step
        log.write({"step": run.step, "split": eval_record, **run.last_eval, "time": run.train_time})
        if math.isfinite(run.last_eval["loss"]) and (run.best_loss is None or run.last_eval["loss"] < run.best_loss):
            run.best_loss = run.last_eval["loss"]
        postfix[f"eval_{task.metric}"] = f"{run.last_eval[task.metric]:.4g}"
        bar.set_postfix(postfix)
        value = run.last_eval[task.metric]
        if _better(task, value, None if run.best is None else run.best[task.metric]):
            run.best = dict(run.last_eval, step=run.step)
        if _reached(task, value, config.target) and run.target_step is None:
            run.target_step = run.step

    eval_split = "valid" if task.valid is not None else "test"
    eval_record = "valid" if task.valid is not None else "eval"  # "eval": the test split, as logs always said
    bar = progress_bar(
        config.progress and ddp.main,
        extra="tasks",
        total=config.steps,
        initial=run.step,
        dynamic_ncols=True,
        desc=f"{config.model}/{task.name}",
    )
    postfix: dict[str, str] = {}
    interrupted = False
    model.train()
    while run.step < config.steps and run.target_step is None:
        if (config.stop_at is not None and run.step >= config.stop_at) or _out_of_time(config, run, ddp, device):
            interrupted = True
            break
        _seed(config.seed * 1_000_003 + run.step * 1009 + ddp.rank, device)  # dropout: a function of the step
        if task.stateful:  # segment k of every stream, in order; the model carries its state across steps
            segment = run.step % len(task.train)
            if segment == 0:
                unwrap(model).reset_state()
            batch = task.train.batch([segment]).to(device)
        else:
            batch = task.train.batch(order.local_batch(run.step, ddp.rank, ddp.world)).to(device)
        started = time.perf_counter()
        pred = model(batch.inputs, batch.lengths)
        loss = task.loss(pred, batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        scheduler.step()
        run.train_time += time.perf_counter() - started
        run.step += 1
        step = run.step
        bar.update(1)
        run.add(loss.item(), *task.metric_sum(pred.detach(), batch.targets))
        if step % config.log_every == 0 or step == config.steps:
            record = run.pop_window(task.metric)
            log.write(
                {"step": step, "split": "train", **record, "lr": scheduler.get_last_lr()[0], "time": run.train_time}
            )
            postfix.update({k: f"{v:.4g}" for k, v in record.items()})
            bar.set_postfix(postfix)
        if ddp.main and (step % config.eval_every == 0 or step == config.steps):
            run_eval()
        if ddp.world > 1 and config.target is not None:  # every rank must stop at the same step
            flag = torch.tensor([run.target_step or 0], device=device)
            dist.broadcast(flag, src=0)
            run.target_step = int(flag) or None
        if config.ckpt_every and step % config.ckpt_every == 0:
            checkpoint()
    if ddp.main and run.eval_step != run.step:  # the result describes the final parameters
        run_eval()
    bar.close()
    checkpoint()
    test = None
    if ddp.main and task.valid is not None and config.test_at_end:
        test = evaluate(unwrap(model), task, device, config.eval_size, config.eval_batch_size, "test")
        log.write({"step": run.step, "split": "test", **test, "time": run.train_time})
    result = TrainResult(
        model=config.model,
        task=task.name,
        steps=run.step,
        params=params,
        train_time=run.train_time,
        wall_time=run.wall_time,
        eval=run.last_eval,
        best_eval=run.best,
        target_step=run.target_step,
        finished=not interrupted,
        replicas_agree=replicas_agree(unwrap(model)) if ddp.world > 1 else None,
        baseline=task.baseline,
        out=str(out) if out else None,
        test=test,
        best_loss=run.best_loss,
    )
    if out is not None and ddp.main:
        (out / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def replicas_agree(model: nn.Module) -> bool:
    """Whether all ranks hold bit-identical parameters (a collective: call it on every rank)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(flat, other) for other in gathered)


def _out_of_time(config: TrainConfig, run: RunState, ddp: Distributed, device: torch.device) -> bool:
    """Whether ``max_time`` is used up (rank 0 decides, so that all ranks stop at the same step)."""
    if config.max_time is None:
        return False
    over = torch.tensor([int(run.train_time >= config.max_time)], device=device)
    if ddp.world > 1:
        dist.broadcast(over, src=0)
    return bool(over)


def compare(
    base: TrainConfig,
    models: Sequence[str],
    out: str | Path,
    *,
    command: str | None = None,
    names: Sequence[str] | None = None,
) -> list[TrainResult]:
    """Train each of ``models`` with ``base``'s settings on the same task data; report them side by side.

    Run folders go to ``out/<name>``; ``out/results.md`` (table), ``results.json`` and ``curves.png``
    (learning curves) compare them. With ``base.resume``, finished runs are read back instead of
    being trained again.
    """
    from parrnn.experiments.tasks.report import report_runs

    names = list(names or models)
    if len(names) != len(models) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per model, got models={list(models)} names={names}")
    out = Path(out)
    task = base.make_task()
    results = [
        train(replace(base, model=model, out=str(out / name)), task) for model, name in zip(models, names, strict=True)
    ]
    if int(os.environ.get("RANK", "0")) == 0:
        report_runs(out, names, title=f"{task.description}: {', '.join(names)}", command=command)
    return results

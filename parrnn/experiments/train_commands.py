"""Command lines of the accuracy suite (thin wrappers over `parrnn.experiments.training` and
`parrnn.experiments.gradient_flow`).

* ``parrnn-train``    -- train one model on one task (``--help`` lists every option of `TrainConfig`).
* ``parrnn-compare``  -- compare several models on one task with the protocol of `parrnn.experiments.tasks.protocol` (lr
  grid on a validation split, seeds, trivial baseline); write a markdown table and curves.
* ``parrnn-gradflow`` -- plot ``||dLoss/dx_t||`` against ``t`` for several models.

Also ``python -m parrnn.experiments.train_commands {train,compare,gradflow} ...``. Distributed:
``torchrun --nproc_per_node=2 -m parrnn.experiments.train_commands train ...`` (or the ``parrnn-train`` script
under torchrun) trains with DistributedDataParallel.

Example commands:

    parrnn-train --task adding --seq-len 1000 --model sru --hidden 128 --layers 2 --steps 2000 --out runs/add
    parrnn-compare --task adding --seq-len 200 --models lstm,gru,sru --steps 500 --seeds 3 \\
        --lr-grid 3e-4,1e-3,3e-3 --out runs/cmp
    parrnn-gradflow --seq-len 1000 --models lstm,gru,sru,sliced-gru --out runs/gradflow
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import MISSING, asdict, fields, replace

import torch

from parrnn.experiments.tasks import MissingDataError
from parrnn.experiments.tasks.report import report_runs
from parrnn.experiments.training import TrainConfig, train

_TYPES = {"int": int, "float": float, "str": str}


def add_config_options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One ``--option`` per `TrainConfig` field (``seq_len`` -> ``--seq-len``), help, default."""
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        base = str(f.type).split("|")[0].strip()
        if base == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=_TYPES[base], default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` an argparse namespace describes (extra attributes are ignored)."""
    return TrainConfig.from_dict(vars(args))


def _command_line(prog: str, argv: Sequence[str] | None) -> str:
    return " ".join([prog, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def _require_matplotlib(parser: argparse.ArgumentParser) -> None:
    """Exit with the install hint before any work when matplotlib (the ``tasks`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional dependency, only checked here
    except ImportError:
        parser.exit(2, f"{parser.prog}: the plots need matplotlib: pip install parrnn[tasks]\n")


def train_main(argv: Sequence[str] | None = None) -> int:
    """``parrnn-train``: train one model; print the result as JSON."""
    parser = argparse.ArgumentParser(prog="parrnn-train", description="Train a recurrent model on an accuracy task.")
    add_config_options(parser)
    config = config_from_args(parser.parse_args(argv))
    try:
        result = train(config)
    except MissingDataError as exc:
        parser.exit(2, f"parrnn-train: {exc}\n")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(asdict(result)))
    return 0


def _float_list(text: str) -> tuple[float, ...]:
    """``"3e-4,1e-3"`` -> ``(0.0003, 0.001)``."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def compare_parser() -> argparse.ArgumentParser:
    """The ``parrnn-compare`` parser; its epilog is the protocol (`parrnn.experiments.tasks.protocol`)."""
    from parrnn.experiments.tasks import protocol

    parser = argparse.ArgumentParser(
        prog="parrnn-compare",
        description="Compare models on one task with a fair protocol: a learning rate tuned per model on a "
        "validation split, several seeds with their spread, a trivial baseline and a did-not-train rule. Writes "
        "OUT/results.md, OUT/protocol.json, OUT/curves.png and one run folder per (model, lr) and (model, seed).",
        epilog="Protocol:\n" + protocol.__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = protocol.Protocol()
    parser.add_argument("--models", default="lstm,gru,sru", help="comma-separated model names (default: %(default)s)")
    parser.add_argument("--lr-grid", type=_float_list, default=defaults.lr_grid,
                        help="learning rates tried per model; one value: no grid (default: 3e-4,1e-3,3e-3)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds,
                        help="final runs per model, seeds SEED, SEED+1, ... (default: %(default)s)")
    parser.add_argument("--grid-fraction", type=float, default=defaults.grid_fraction,
                        help="a grid run's budget as a fraction of --steps and --max-time (default: %(default)s)")
    parser.add_argument("--valid-fraction", type=float, default=defaults.valid_fraction,
                        help="last fraction of the training split held out for validation (default: %(default)s)")
    parser.add_argument("--dnt-margin", type=float, default=defaults.margin,
                        help="did not train: validation loss never below (1 - margin) x the trivial baseline's "
                        "(default: %(default)s)")
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the report from OUT (protocol.json or run folders)"
    )
    add_config_options(parser, skip=("model", "lr", "valid_fraction", "test_at_end"))
    return parser


def compare_main(argv: Sequence[str] | None = None) -> int:
    """``parrnn-compare``: run the comparison protocol and write ``results.md`` + ``curves.png``."""
    from parrnn.experiments.tasks.protocol import Protocol, run_protocol
    from parrnn.experiments.tasks.report import report_protocol

    parser = compare_parser()
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out is required (the comparison folder)")
    _require_matplotlib(parser)
    if args.report_only:
        has_protocol = os.path.exists(os.path.join(args.out, "protocol.json"))
        path = report_protocol(args.out) if has_protocol else report_runs(args.out, args.models.split(","))
        print(f"report: {path}")
        return 0
    protocol = Protocol(lr_grid=args.lr_grid, seeds=args.seeds, grid_fraction=args.grid_fraction,
                        valid_fraction=args.valid_fraction, margin=args.dnt_margin)
    try:
        protocol.validate()
        payload = run_protocol(
            replace(config_from_args(args), lr=args.lr_grid[0]),
            args.models.split(","),
            args.out,
            protocol,
            command=_command_line("parrnn-compare", argv),
        )
    except MissingDataError as exc:
        parser.exit(2, f"parrnn-compare: {exc}\n")
    except ValueError as exc:
        parser.error(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:
        print("\n".join(payload["ranking"]))
        print(f"report: {args.out}/results.md, {args.out}/curves.png")
    return 0


def gradflow_main(argv: Sequence[str] | None = None) -> int:
    """``parrnn-gradflow``: measure and plot the gradient flow of several models."""
    from parrnn.experiments.gradient_flow import compare_gradient_flow
    from parrnn.experiments.tasks.models import ModelSpec

    parser = argparse.ArgumentParser(
        prog="parrnn-gradflow", description="Norm of dLoss/dx_t for every step t, for several models."
    )
    parser.add_argument("--models", default="lstm,gru,sru,sliced-gru", help="comma-separated (default: %(default)s)")
    parser.add_argument("--task", default="adding", help="a task read out at the last step (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=1000, help="sequence length T (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=1, help="layers (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=8, help="sliced models: slices per level (default: %(default)s)")
    parser.add_argument("--levels", type=int, default=2, help="sliced models: levels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples averaged (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="initialization and data seed (default: %(default)s)")
    parser.add_argument("--runs", nargs="*", default=[], help="trained run folders to measure as well")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sru-backend", default="auto", help="SRU backend (default: %(default)s)")
    parser.add_argument(
        "--memory-bias",
        type=float,
        default=None,
        help="initial forget/update-gate bias (default: each model's own initialization)",
    )
    parser.add_argument("--out", required=True, help="folder for gradflow.json and gradflow.png")
    args = parser.parse_args(argv)
    _require_matplotlib(parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ModelSpec(
        hidden=args.hidden,
        layers=args.layers,
        slices=args.slices,
        levels=args.levels,
        sru_backend=args.sru_backend,
        memory_bias=args.memory_bias,
    )
    flows = compare_gradient_flow(
        [m for m in args.models.split(",") if m],
        task=args.task,
        seq_len=args.seq_len,
        spec=spec,
        batch_size=args.batch_size,
        seed=args.seed,
        runs=args.runs,
        out=args.out,
    )
    for name, values in flows.items():
        print(f"{name:32s} |dL/dx_0| = {values[0]:.3e}   |dL/dx_T-1| = {values[-1]:.3e}")
    print(f"plot: {args.out}/gradflow.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m parrnn.experiments.train_commands {train,compare,gradflow} ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "compare": compare_main, "gradflow": gradflow_main}
    if not argv or argv[0] not in commands:
        print(
            f"usage: python -m parrnn.experiments.train_commands {{{','.join(commands)}}} [options]  "
            "(--help after a command)",
            file=sys.stderr,
        )
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""``parrnn-bench``: throughput of parrnn's recurrences vs torch.nn.LSTM, in one run on one device.

Example commands:

    parrnn-bench                                    # the default preset (what `make bench` runs), table only
    parrnn-bench --preset lstm-comparison --out benchmarks/results/lstm-comparison
    parrnn-bench --models lstm,sru-cpu-v2 --seq-lens 64..4096 --batch 16 --hidden 256 --modes fwd
    parrnn-bench --preset gpu --out results/gpu     # on a CUDA machine

A size/model option given on the command line replaces that field in every sweep of the preset.

Every row carries its spread (IQR) and the load average before and after it; the models of a size are timed in
interleaved rounds, speed-ups are medians of per-round ratios against the fastest nn.LSTM configuration, and a
noisy case is re-sampled and, if still noisy, marked: PASS/FAIL lines come only from trustworthy rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parrnn.experiments.bench.models import MODEL_PATTERNS, PARRNN_BACKENDS
from parrnn.experiments.bench.noise import NOISE_THRESHOLD
from parrnn.experiments.bench.presets import DEPRECATED_NAMES, PRESET_NAMES, preset
from parrnn.experiments.bench.runner import ALL_MODES, BenchConfig, count_runs, run_benchmark


def _int_list(text: str) -> list[int]:
    """``"64,128"`` or ``"64..1024"`` (powers of two times the start) -> a list of positive ints."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if ".." in part:
                lo, hi = (int(x) for x in part.split(".."))
                if lo < 1 or hi < lo:
                    raise ValueError
                v = lo
                while v <= hi:
                    values.append(v)
                    v *= 2
            else:
                values.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive integers or LO..HI, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _str_list(text: str) -> list[str]:
    values = [p.strip() for p in text.split(",") if p.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated, non-empty list")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``parrnn-bench`` argument parser."""
    p = argparse.ArgumentParser(
        prog="parrnn-bench", description=__doc__.split("\n\n")[0],
        epilog=f"models: {', '.join(MODEL_PATTERNS)}; <backend> in {{{', '.join(PARRNN_BACKENDS)}}}. "
               "See docs/benchmarks.md.")
    p.add_argument("--preset", choices=PRESET_NAMES + tuple(DEPRECATED_NAMES), default="default",
                   help=f"base configuration (default: %(default)s; deprecated names: "
                        f"{', '.join(f'{old} = {new}' for old, new in DEPRECATED_NAMES.items())})")
    p.add_argument("--models", type=_str_list, help="comma-separated model names (nn.LSTM is always added)")
    p.add_argument("--modes", type=_str_list, help=f"comma-separated, from {', '.join(ALL_MODES)}")
    p.add_argument("--seq-lens", type=_int_list, help="sequence lengths, e.g. 64,256 or 64..65536")
    p.add_argument("--batch", type=_int_list, help="batch sizes")
    p.add_argument("--hidden", type=_int_list, help="hidden sizes")
    p.add_argument("--input-size", type=_positive, help="input size D (default: D = H)")
    p.add_argument("--layers", type=_int_list, help="numbers of layers")
    p.add_argument("--dtype", type=_str_list, help="float32, bfloat16, float16, float64 (comma-separated)")
    p.add_argument("--device", help="cpu or cuda[:N] (default: the preset's)")
    p.add_argument("--threads", type=_positive, help="CPU threads (torch.set_num_threads); default: torch's")
    p.add_argument("--repeats", type=_positive, help="timed samples per case; the median is reported")
    p.add_argument("--warmup", type=int, help="untimed warm-up calls per case")
    p.add_argument("--max-case-seconds", type=float,
                   help="cap on timed seconds per case (fewer repeats, >= 3)")
    p.add_argument("--noise-threshold", type=float,
                   help=f"IQR/median above which a row is re-sampled and then marked noisy "
                        f"(default: {NOISE_THRESHOLD:g})")
    p.add_argument("--max-rounds", type=_positive,
                   help="most interleaved rounds per case while re-sampling (default: 3 x repeats)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--seed", type=int, default=0, help="parameter/input seed (default: %(default)s)")
    p.add_argument("--out", type=Path, help="directory for results.json/.csv/.md and the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs per sweep) and exit")
    return p


_SWEEP_FIELDS = {"models": "models", "modes": "modes", "seq_lens": "seq_lens", "batch": "batches",
                 "hidden": "hiddens", "layers": "layers", "dtype": "dtypes", "input_size": "input_size"}
_CONFIG_FIELDS = {"device": "device", "threads": "threads", "repeats": "repeats", "warmup": "warmup",
                  "max_case_seconds": "max_case_s", "noise_threshold": "noise_threshold",
                  "max_rounds": "max_rounds"}


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The preset with the command line's overrides; ``ValueError`` when it cannot run."""
    base = preset(args.preset)
    sweeps = base.pop("sweeps")
    for arg, attr in _SWEEP_FIELDS.items():
        if getattr(args, arg) is not None:
            for sweep in sweeps:
                setattr(sweep, attr, getattr(args, arg))
    for arg, attr in _CONFIG_FIELDS.items():
        if getattr(args, arg) is not None:
            base[attr] = getattr(args, arg)
    config = BenchConfig(sweeps=sweeps, memory=not args.no_memory, seed=args.seed,
                         preset=DEPRECATED_NAMES.get(args.preset, args.preset), **base)
    config.validate(check_device=not args.dry_run)  # a plan for a GPU run can be printed anywhere
    return config


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parrnn-bench``; returns the exit status (2 for bad arguments)."""
    from parrnn.experiments.bench import report
    from parrnn.experiments.bench.targets import check_targets

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dry_run:
        for sweep in config.sweeps:
            print(f"{sweep.label or 'sweep'}: models={sweep.all_models()} L={sweep.seq_lens} "
                  f"N={sweep.batches} H={sweep.hiddens} layers={sweep.layers} "
                  f"dtypes={sweep.dtypes} modes={sweep.modes}")
        print(f"{count_runs(config)} runs on {config.device}")
        return 0

    result = run_benchmark(config, progress=not args.no_progress)
    targets = check_targets(result.rows)
    header = report.format_conditions(result)
    if header:
        print(header + "\n")
    print(report.format_table(report.sort_rows(result.rows)) if result.rows else "no rows measured")
    for text in (report.format_skipped(result.skipped), report.format_targets(targets)):
        if text:
            print("\n" + text)
    print(f"\n{len(result.rows)} runs in {result.elapsed_s:.0f} s, {result.threads} threads, "
          f"device {config.device}")
    if args.out is not None:
        full_argv = ["parrnn-bench", *(sys.argv[1:] if argv is None else argv)]
        files = report.write_results(args.out, config, result, targets, full_argv)
        print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PNG plots of a run: throughput vs sequence length, and speedup vs nn.LSTM.

Noisy rows (`parrnn.experiments.bench.noise`) are drawn hollow (lines) or hatched (bars) and named in the title.

One panel per (mode, sizes) where sizes = (dtype, batch, hidden, input size, layers); a panel whose rows cover
several lengths draws one line per model over L (log scale), a panel with one length draws bars.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

Row = dict[str, Any]
MAX_PANELS = 8
_MODE_TEXT = {"fwd": "forward (no_grad)", "fwdbwd": "forward+backward", "stream": "streaming (state carried)"}


def _panels(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        if not r["model"].startswith("rec-"):  # the recurrence alone has no comparable throughput
            groups[(r["mode"], r["dtype"], r["batch"], r["hidden"], r["input_size"], r["layers"])].append(r)
    ordered = sorted(groups.items(), key=lambda kv: (-len({r["seq_len"] for r in kv[1]}), kv[0]))
    return [(f"{_MODE_TEXT.get(k[0], k[0])}, {k[1]}, N={k[2]} H={k[3]} D={k[4]} layers={k[5]}", v)
            for k, v in ordered[:MAX_PANELS]]


def _draw(ax: Any, rows: list[Row], metric: str, ylabel: str) -> None:
    by_model: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.get(metric) is not None:
            by_model[r["model"]].append(r)
    lengths = sorted({r["seq_len"] for r in rows})
    if len(lengths) > 1:
        for model, rs in by_model.items():
            rs = sorted(rs, key=lambda r: r["seq_len"])
            (line,) = ax.plot([r["seq_len"] for r in rs], [r[metric] for r in rs], marker="o", label=model)
            noisy = [r for r in rs if r.get("noisy")]
            if noisy:  # a noisy point: hollow, larger, outlined in the line's colour
                ax.scatter([r["seq_len"] for r in noisy], [r[metric] for r in noisy], s=90, facecolors="white",
                           edgecolors=line.get_color(), linewidths=1.5, zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths], rotation=30 if len(lengths) > 6 else 0)
        ax.minorticks_off()
        ax.set_xlabel("sequence length L")
    else:
        models = list(by_model)
        bars = ax.bar(range(len(models)), [by_model[m][0][metric] for m in models],
                      color=[f"C{i}" for i in range(len(models))])
        for bar, model in zip(bars, models, strict=True):
            if by_model[model][0].get("noisy"):  # a noisy bar: hatched and faded
                bar.set_hatch("//")
                bar.set_alpha(0.4)
        ax.set_xticks(range(len(models)), [m + (" (noisy)" if by_model[m][0].get("noisy") else "")
                                           for m in models], rotation=30, ha="right")
        ax.set_xlabel(f"L = {lengths[0]}")
    if metric == "speedup_vs_lstm":
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    _log_axis(ax, ratio=metric == "speedup_vs_lstm")  # throughputs and ratios span orders of magnitude
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def ratio_label(value: float) -> str:
    """A speed-up as people read it: ``0.5x``, ``1x``, ``2x``, ``16x`` (``0.125x`` for 1/8)."""
    return f"{value:.3g}x" if value < 1 else f"{value:,.0f}x" if value >= 10 else f"{value:.2g}x"


def count_label(value: float) -> str:
    """A throughput tick: ``500``, ``20k``, ``1.5M``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _log_axis(ax: Any, *, ratio: bool) -> None:
    """A log y axis with readable ticks: ratios at powers of two (``0.5x, 1x, 2x, 4x``), throughputs at
    1-2-5 steps (``10k, 20k, 50k``), never ``3 x 10^0``."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ratio:
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: ratio_label(v)))
    else:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: count_label(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _figure(rows: list[Row], metric: str, ylabel: str, path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(rows)
    if not panels:
        return None
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.2 * nrows), squeeze=False)
    for ax, (label, panel_rows) in zip(axes.flat, panels, strict=False):
        _draw(ax, panel_rows, metric, ylabel)
        ax.set_title(label, fontsize=9)
        if len({r["seq_len"] for r in panel_rows}) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    noisy = any(r.get("noisy") for r in rows)
    fig.suptitle(f"{ylabel} -- {title}" + ("\nhollow points / hatched bars: noisy, not judged" if noisy else ""),
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_results(rows: list[Row], out: Path, *, title: str = "") -> list[Path]:
    """Write ``throughput_vs_length.png`` and ``speedup_vs_lstm.png`` into ``out``; return the files written.

    Needs matplotlib (the ``bench`` extra); without it no plot is written and a note goes to stderr.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import sys
        print("parrnn-bench: matplotlib is not installed; no plots written (pip install parrnn[bench])",
              file=sys.stderr)
        return []
    written = [
        _figure(rows, "tokens_per_s", "throughput (tokens/s)", out / "throughput_vs_length.png", title),
        _figure(rows, "speedup_vs_lstm", "speedup vs nn.LSTM", out / "speedup_vs_lstm.png", title),
    ]
    return [p for p in written if p is not None]

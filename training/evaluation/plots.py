"""The evaluation report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot).

Each function takes a metrics frame (``training.evaluation.metrics``) and returns the PNG; the report writes
it to a file and embeds it in the HTML. Figures are built on :class:`matplotlib.figure.Figure` directly, so no
global pyplot state is shared between calls or threads.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .modes import MODES, REGISTRY

DPI = 110
_MODE_COLOURS = {name: mode.colour for name, mode in REGISTRY.items()}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _modes_present(frame: pl.DataFrame) -> list[str]:
    present = set(frame["mode"].to_list())
    return [m for m in MODES if m in present]


def accuracy_plot(
    table: pl.DataFrame,
    *,
    value: str,
    low: str,
    high: str,
    title: str,
    chance: str | None = None,
    compact: bool = False,
) -> bytes:
    """Bars per benchmark and mode with their intervals, one panel per checkpoint.

    ``table`` is an overall (no breakdown) table from ``mcq_accuracy`` or ``open_scores``; ``value``,
    ``low``, ``high`` name its columns (fractions, drawn as %). ``chance`` names a chance-level column,
    drawn as a black tick over each benchmark. ``compact``: a smaller figure (the report's first screen).
    """
    checkpoints = list(dict.fromkeys(table["checkpoint"].to_list()))
    benchmarks = list(dict.fromkeys(table["benchmark"].to_list()))
    modes = _modes_present(table)
    width = 0.8 / max(len(modes), 1)
    size = (
        (max(5.5, 1.0 * len(benchmarks) + 2.5), 0.4 + 1.9 * len(checkpoints))
        if compact
        else (max(6.0, 1.4 * len(benchmarks) + 2), 0.8 + 2.6 * len(checkpoints))
    )
    fig = Figure(figsize=size, layout="constrained")
    note = "\ndashed line: chance level (mean of 1 / number of options)" if chance and not compact else ""
    fig.suptitle(title + note, fontsize=10)
    axes = fig.subplots(len(checkpoints), 1, squeeze=False)[:, 0]
    for ax, ck in zip(axes, checkpoints, strict=True):
        sub = table.filter(pl.col("checkpoint") == ck)
        for j, mode in enumerate(modes):
            rows = {r["benchmark"]: r for r in sub.filter(pl.col("mode") == mode).iter_rows(named=True)}
            xs = [i + (j - (len(modes) - 1) / 2) * width for i, b in enumerate(benchmarks) if b in rows]
            vals = [100 * rows[b][value] for b in benchmarks if b in rows]
            err = np.array(
                [
                    [100 * (rows[b][value] - rows[b][low]), 100 * (rows[b][high] - rows[b][value])]
                    if rows[b][low] == rows[b][low]
                    else [0.0, 0.0]
                    for b in benchmarks
                    if b in rows
                ]
            ).T
            ax.bar(
                xs,
                vals,
                width,
                yerr=err if len(xs) else None,
                capsize=2,
                label=mode,
                color=_MODE_COLOURS[mode],
                edgecolor="black",
                linewidth=0.3,
            )
        if chance:
            for i, b in enumerate(benchmarks):
                c = sub.filter(pl.col("benchmark") == b)[chance]
                if c.len() and c[0] is not None:
                    ax.hlines(
                        100 * c[0], i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1
                    )
        ax.set_xticks(range(len(benchmarks)), benchmarks)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{value.replace('_', ' ')} %")
        if not compact:
            ax.set_title(f"checkpoint {ck}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, ncols=len(modes), loc="outside lower center")
    return _png(fig)


def reliability_plot(bins: pl.DataFrame, *, title: str) -> bytes:
    """Reliability diagram: accuracy against mean confidence per bin, a line per mode, a panel per checkpoint.

    ``bins`` comes from ``reliability_bins(by=("checkpoint", "mode"))``. Marker area grows with the bin's n.
    """
    checkpoints = list(dict.fromkeys(bins["checkpoint"].to_list()))
    fig = Figure(figsize=(4.2 * len(checkpoints), 4.6), layout="constrained")
    fig.suptitle(title, fontsize=11)
    axes = fig.subplots(1, len(checkpoints), squeeze=False)[0]
    for ax, ck in zip(axes, checkpoints, strict=True):
        ax.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1, label="perfect calibration")
        sub = bins.filter((pl.col("checkpoint") == ck) & (pl.col("n") > 0))
        for mode in _modes_present(sub):
            m = sub.filter(pl.col("mode") == mode)
            ax.plot(
                m["mean_confidence"],
                m["accuracy"],
                marker="o",
                color=_MODE_COLOURS[mode],
                label=mode,
                linewidth=1,
            )
            ax.scatter(
                m["mean_confidence"],
                m["accuracy"],
                s=8 + 60 * m["n"] / max(m["n"].max(), 1),
                color=_MODE_COLOURS[mode],
                alpha=0.5,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean confidence in bin")
        ax.set_ylabel("accuracy in bin")
        ax.set_title(f"checkpoint {ck}", fontsize=10)
        ax.grid(alpha=0.3)
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), fontsize=8, ncols=len(handles), loc="outside lower center")
    return _png(fig)


def _empty(message: str) -> bytes:
    """A small figure that says why a plot has nothing to show (rather than failing the report)."""
    fig = Figure(figsize=(6.5, 1.6), layout="constrained")
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    return _png(fig)


def cdir_trigger_label(results: pl.DataFrame, checkpoint: str) -> str:
    """The legend entry of triggered rows: every triggered rwr_cdir row of ``checkpoint`` counted, those
    without a first-pass confidence (no answer to measure) named apart."""
    rows = results.filter((pl.col("mode") == "rwr_cdir") & (pl.col("checkpoint") == checkpoint))
    triggered = rows.filter(pl.col("cdir_triggered"))
    unknown = int(triggered["confidence_before_cdir"].is_null().sum())
    return f"CDIR triggered ({triggered.height}" + (
        f"; {unknown} without a first-pass answer, not drawn)" if unknown else ")"
    )


def cdir_histogram(results: pl.DataFrame, *, n_bins: int = 20) -> bytes:
    """First-pass confidence of the rwr_cdir rows, triggered and not stacked, λ marked; a panel per
    checkpoint. Rows whose first pass wrote no answer have no confidence and cannot be drawn; they are
    counted in the legend (a triggered row without a confidence is still a triggered row)."""
    every = results.filter(pl.col("mode") == "rwr_cdir")
    rows = every.filter(pl.col("confidence_before_cdir").is_not_null())
    checkpoints = list(dict.fromkeys(rows["checkpoint"].to_list()))
    if not checkpoints:
        return _empty(
            "CDIR trigger: no rwr_cdir row has a first-pass confidence (no first pass wrote an answer)"
        )
    fig = Figure(figsize=(4.6 * len(checkpoints), 3.8), layout="constrained")
    fig.suptitle("CDIR trigger: first-pass confidence η (probability of the first answer token)", fontsize=11)
    axes = fig.subplots(1, len(checkpoints), squeeze=False)[0]
    edges = np.linspace(0, 1, n_bins + 1)
    for ax, ck in zip(axes, checkpoints, strict=True):
        sub = rows.filter(pl.col("checkpoint") == ck)
        all_ck = every.filter(pl.col("checkpoint") == ck)
        trig = sub.filter(pl.col("cdir_triggered"))["confidence_before_cdir"].to_numpy()
        kept = sub.filter(~pl.col("cdir_triggered"))["confidence_before_cdir"].to_numpy()
        ax.hist(
            [trig, kept],
            bins=edges,
            stacked=True,
            color=["#d62728", "#1f77b4"],
            label=[cdir_trigger_label(results, ck), f"not triggered ({len(kept)})"],
            edgecolor="white",
        )
        for lam in sorted(set(sub["cdir_lambda"].to_list())):
            ax.axvline(lam, color="black", linestyle="--", linewidth=1.2)
            ax.text(lam, ax.get_ylim()[1] * 0.95, f" λ = {lam:g}", fontsize=9, va="top")
        ax.set_xlim(0, 1)
        ax.set_xlabel("first-pass confidence η")
        ax.set_ylabel("items")
        ax.set_title(f"checkpoint {ck} ({all_ck.height} items)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def comparison_plot(table: pl.DataFrame, *, title: str, level: float = 0.95) -> bytes:
    """Forest plot of paired differences (percentage points) with their intervals; 0 marked."""
    labels = [f"{r['benchmark']}: {r['a']} − {r['b']}" for r in table.iter_rows(named=True)]
    diff = 100 * table["difference"].to_numpy()
    low = 100 * table["ci_low"].fill_nan(None).fill_null(0).to_numpy()
    high = 100 * table["ci_high"].fill_nan(None).fill_null(0).to_numpy()
    fig = Figure(figsize=(7.5, 0.9 + 0.32 * len(labels)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))[::-1]
    excludes = table["excludes_zero"].to_numpy()
    for sel, colour in ((excludes, "#2ca02c"), (~excludes, "#7f7f7f")):
        if sel.any():
            ax.errorbar(
                diff[sel],
                y[sel],
                xerr=[np.maximum(diff - low, 0)[sel], np.maximum(high - diff, 0)[sel]],
                fmt="o",
                color=colour,
                ecolor=colour,
                capsize=3,
            )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(
        f"difference (percentage points), paired bootstrap {round(100 * level)} % interval; green: excludes 0"
    )
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)

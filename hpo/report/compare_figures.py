"""Figures of a compared study's page: they draw what `compare_tables` computed (Agg
figures, no pyplot), each returning its Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from hpo.lr_range import (
    LrBounds,
    smooth_loss,
    usable_points,
)
from hpo.report import figures as fig
from hpo.report.compare_tables import (
    BLOCK_KEYS,
    CURVE_METRICS,
    MAX_LR_LINES,
    batch_size_means,
    bn_values,
    curve_means,
    numeric,
)


# ================================================================= figures
def level_colors(levels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    palette = sns.color_palette("colorblind", max(len(levels), 3))
    return {level: tuple(palette[i % len(palette)]) for i, level in enumerate(levels)}


def factor_curves_figure(curves: pd.DataFrame, factor: str, levels: Sequence[str]) -> Figure:
    """Rows train_loss and val_accuracy, one column per level: each run's selected trial
    (thin) and their mean (thick). Each row shares its y-axis, so levels compare at a
    glance on one scale."""
    columns = max(len(levels), 1)
    figure = fig.new_figure((3.8 * columns + 0.8, 2.9 * len(CURVE_METRICS) + 0.6))
    axes = figure.subplots(len(CURVE_METRICS), columns, sharey="row", sharex=True, squeeze=False)
    means = curve_means(curves, factor)
    colors = level_colors(levels)
    for column, level in enumerate(levels):
        mine = curves[curves[factor] == level] if not curves.empty else curves
        mean = means[means[factor] == level]
        runs = mine.groupby(["variant", *BLOCK_KEYS], sort=False) if not mine.empty else []
        for row, metric in enumerate(CURVE_METRICS):
            ax = axes[row, column]
            for _, run in runs:
                ax.plot(run["epoch"], numeric(run, metric), color=colors[level], lw=0.8, alpha=0.35)
            ax.plot(mean["epoch"], mean[metric], color=colors[level], lw=2.6, label="mean")
            ax.grid(alpha=0.3)
            if column == 0:
                ax.set_ylabel(metric)
            if row == len(CURVE_METRICS) - 1:
                ax.set_xlabel("epoch of the selected trial")
        count = len(runs) if not mine.empty else 0
        axes[0, column].set_title(f"{factor} = {level} ({count} runs)", fontsize="medium")
    figure.legend(
        handles=[
            Line2D([], [], color="0.4", lw=0.8, alpha=0.5, label="one run's selected trial"),
            Line2D([], [], color="0.2", lw=2.6, label="mean over runs"),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize="small",
    )
    return figure


def bn_violin_figure(
    views_by_variant: Mapping[str, Mapping[str, Any]], parameter: str = "gamma"
) -> Figure:
    """The distribution of one batch-norm parameter (gamma or beta) per layer, a violin per
    variant side by side, on one y-axis."""
    values = bn_values(views_by_variant, parameter)
    # model order; the input layer first although only some variants have one
    layers = sorted(dict.fromkeys(values["layer"]), key=lambda layer: layer != "input")
    variants = list(dict.fromkeys(values["variant"]))
    figure = fig.new_figure((max(6.0, 1.3 * len(layers) * max(len(variants), 1) + 2), 4.4))
    ax = figure.add_subplot()
    if values.empty:
        fig._message(ax, f"no batch-norm {parameter} saved")
        return figure
    sns.violinplot(
        data=values,
        x="layer",
        y="value",
        hue="variant",
        order=layers,
        hue_order=variants,
        cut=0,
        inner="quart",
        density_norm="width",
        ax=ax,
    )
    ax.set_xlabel("layer, in model order (input: batch norm of the input channels)")
    ax.set_ylabel(f"batch-norm {parameter}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="variant (its best run's selected model)", fontsize="small")
    return figure


def range_test_figure(curve: pd.DataFrame, bounds: LrBounds | None, title: str = "") -> Figure:
    """Training loss against the lr on a log axis (dots: trial-epochs, line: the smoothed
    loss the bounds are picked on), lr_min and lr_max marked; diverged epochs as × along
    the bottom."""
    figure = fig.new_figure((8.5, 4.6))
    ax = figure.add_subplot()
    if curve.empty:
        fig._message(ax, "no range-test trial has reported")
        return figure
    finite = curve[np.isfinite(curve["loss"].to_numpy(float))]
    ax.scatter(
        finite["lr"], finite["loss"], s=14, color="0.45", alpha=0.7, label="one epoch of a trial"
    )
    lr, loss = usable_points(curve["lr"], curve["loss"])
    if len(lr):
        ax.plot(lr, smooth_loss(loss), color="black", lw=1.8, label="smoothed (rolling median)")
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    broken = curve[~np.isfinite(curve["loss"].to_numpy(float))]
    if not broken.empty:
        ax.scatter(
            broken["lr"],
            np.full(len(broken), 0.03),
            marker="x",
            color="crimson",
            transform=bottom,
            label="diverged epoch",
        )
    if bounds is not None:
        # lr_min's label left of its line, lr_max's right of its own: they never overlap
        for name, value, color, side in (
            ("lr_min", bounds.lr_min, "tab:green", "right"),
            ("lr_max", bounds.lr_max, "tab:red", "left"),
        ):
            ax.axvline(value, color=color, ls="--", lw=1.4)
            text = f"{name} = {value:.3g} " if side == "right" else f" {name} = {value:.3g}"
            ax.text(value, 0.97, text, color=color, va="top", ha=side, transform=bottom)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (geometric mean over the epoch)")
    ax.set_ylabel("training loss of the epoch")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="lower left")
    if title:
        ax.set_title(title, fontsize="medium")
    return figure


def iteration_figure(lines: pd.DataFrame, x: str, title: str = "") -> Figure:
    """Loss against `x` (iteration or epoch), one line per trial, coloured by its
    configured lr (log scale): a legend "lr = …" for a few values, a colour bar for many."""
    figure = fig.new_figure((9.0, 4.8))
    ax = figure.add_subplot()
    finite = lines[np.isfinite(lines["loss"].to_numpy(float)) & (lines["config_lr"] > 0)]
    if finite.empty:
        fig._message(ax, "no finite loss recorded")
        return figure
    finite = finite.sort_values(["strategy", "seed", "trial_id", x], kind="stable")
    rates = np.sort(finite["config_lr"].unique())
    low, high = float(rates[0]), float(rates[-1])
    norm = LogNorm(low, high if high > low else low * 10)
    cmap = sns.color_palette("viridis", as_cmap=True)
    trials = finite.groupby(["strategy", "seed", "trial_id"], sort=False)
    segments = [t[[x, "loss"]].to_numpy(float) for _, t in trials]
    colors = [cmap(norm(t["config_lr"].iloc[0])) for _, t in trials]
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.9, alpha=0.8))
    ax.autoscale_view()
    if len(rates) <= MAX_LR_LINES:
        handles = [Line2D([], [], color=cmap(norm(r)), label=f"lr = {r:.3g}") for r in rates]
        ax.legend(handles=handles, title="configured lr", fontsize="small")
    else:
        figure.colorbar(ScalarMappable(norm, cmap), ax=ax, label="configured lr")
    ax.set_xlabel(
        "iteration (mini-batch) of the trial" if x == "iteration" else "epoch of the trial"
    )
    if x == "iteration":
        window = int(finite["window"].max()) if "window" in finite else 1
        ax.set_ylabel(f"training loss (NLL), running mean over {window} iterations")
        ax.set_yscale("log")
    else:
        ax.set_ylabel("training loss of the epoch")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    return figure


def batch_size_figure(table: pd.DataFrame, references: pd.DataFrame, title: str = "") -> Figure:
    """Final-epoch training loss and generalization gap against log2(batch size): each
    trial (dots), the mean per batch size (line), and a dashed line per other variant at
    its selected trials' mean gap."""
    figure = fig.new_figure((12.0, 4.6))
    loss_ax, gap_ax = figure.subplots(1, 2)
    means = batch_size_means(table)
    for ax, column, label in (
        (loss_ax, "train_loss", "final-epoch training loss"),
        (gap_ax, "gap", "generalization gap (train − val accuracy)"),
    ):
        ax.scatter(
            table["log2_batch_size"],
            table[column],
            s=16,
            color="0.45",
            alpha=0.7,
            label="one trial",
        )
        ax.plot(
            means["log2_batch_size"],
            means[column],
            color="black",
            marker="o",
            lw=1.8,
            label="mean per batch size",
        )
        ticks = sorted(table["log2_batch_size"].unique())
        ax.set_xticks(ticks, labels=[f"{t:g}\n({2**t:g})" for t in ticks])
        ax.set_xlabel("log2(batch size) (batch size)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    palette = sns.color_palette("colorblind", max(len(references), 3))
    for color, row in zip(palette, references.itertuples(), strict=False):
        gap_ax.axhline(
            row.gap, color=color, ls="--", lw=1.3, label=f"{row.variant}: selected trials' gap"
        )
    gap_ax.legend(fontsize="x-small")
    loss_ax.legend(fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure

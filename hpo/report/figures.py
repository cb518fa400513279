"""The report's figures: seaborn/matplotlib drawings of tables computed in `tables.py`.

Every function draws data it is given (no computing of results here), takes `ax=None`
or builds its own figure, and returns the Figure. Figures are plain
`matplotlib.figure.Figure` objects on an Agg canvas, never pyplot: no GUI backend, no
global figure registry, nothing to close. Each strategy has one colour in
every figure (`strategy_colors`). Thousands of trials are drawn as one LineCollection
or one scatter per strategy, not one artist per trial, to stay fast.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from hpo.report.tables import AT_FIDELITY, INT_KINDS, choice_index, space_kind
from hpo.space import LOG_KINDS
from hpo.strategies import STRATEGIES, strategy_order

Colour = tuple[float, float, float]
X_LABELS = {
    "cum_epochs": "cumulative epochs spent by the run (all its trials)",
    "wall_s": "wall-clock seconds since the run started",
}


def strategy_colors(strategies: Sequence[str] = ()) -> dict[str, Colour]:
    """One fixed colour per strategy: seaborn's colorblind palette indexed by the order of
    the strategy registry, so grid is the same blue in every figure of every report;
    strategies not (or no longer) registered take the next colours, alphabetically."""
    palette = sns.color_palette("colorblind", 10)
    names = list(STRATEGIES) + [s for s in strategy_order(strategies) if s not in STRATEGIES]
    return {name: tuple(palette[i % len(palette)]) for i, name in enumerate(names)}


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (written beside the report and embedded in it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def new_figure(size: tuple[float, float]) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, no display, nothing global to close."""
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _figure_and_axes(ax: Any, size: tuple[float, float]) -> tuple[Figure, Any]:
    if ax is not None:
        return ax.figure, ax
    figure = new_figure(size)
    return figure, figure.add_subplot()


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _present(colors: Mapping[str, Colour], names: Any) -> list[str]:
    names = set(names)
    return [s for s in colors if s in names] + sorted(names - set(colors))


# ---------------------------------------------------------------- anytime
def anytime_figure(
    curves: pd.DataFrame,
    x: str,
    metric: str,
    colors: Mapping[str, Colour],
    ax: Any = None,
    ylim: tuple[float, float] | None = None,
    xlabel: str | None = None,
) -> Figure:
    """Best-so-far validation metric against compute (`x`: cum_epochs or wall_s): mean
    over seeds as a line, the band from the worst to the best seed. `xlabel` overrides
    the axis label (a replay's seconds are simulated)."""
    figure, ax = _figure_and_axes(ax, (8, 4.5))
    if curves.empty:
        _message(ax, "no run has reported a finite value yet")
        return figure
    order = _present(colors, curves["strategy"].unique())
    sns.lineplot(
        data=curves,
        x=x,
        y="best_so_far",
        hue="strategy",
        hue_order=order,
        palette={s: colors.get(s, (0.5, 0.5, 0.5)) for s in order},
        estimator="mean",
        errorbar=("pi", 100),
        ax=ax,
    )
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel or X_LABELS.get(x, x))
    ax.set_ylabel(f"best {metric} so far")
    ax.grid(alpha=0.3)
    ax.legend(title="strategy (line: mean, band: min–max over seeds)", fontsize="small")
    return figure


def anytime_panels(
    curves: pd.DataFrame,
    x: str,
    metric: str,
    colors: Mapping[str, Colour],
    xlabel: str | None = None,
) -> Figure:
    """The anytime curves twice: the whole range, and zoomed on the range of the runs'
    final values, where the strategies actually differ."""
    figure = new_figure((13, 4.6))
    full, zoom = figure.subplots(1, 2)
    anytime_figure(curves, x, metric, colors, ax=full, xlabel=xlabel)
    full.set_title("whole range", fontsize="medium")
    finals = curves.groupby(["strategy", "seed"], sort=False)["best_so_far"].last()
    if finals.notna().any():
        low, high = float(finals.min()), float(finals.max())
        pad = 0.25 * (high - low) or 0.01 * max(abs(high), 1e-9)
        anytime_figure(
            curves, x, metric, colors, ax=zoom, ylim=(low - pad, high + pad), xlabel=xlabel
        )
        zoom.set_title("zoom on the runs' final values", fontsize="medium")
        zoom.get_legend().remove()
    else:
        anytime_figure(curves, x, metric, colors, ax=zoom, xlabel=xlabel)
    return figure


def final_best_figure(
    runs: pd.DataFrame, metric: str, test_metric: str, colors: Mapping[str, Colour], ax: Any = None
) -> Figure:
    """Each seed's final best validation metric (dots) and its selected config's test
    metric (crosses, only where some run has one: a replay measures none), per strategy:
    the spread behind the leaderboard's mean ± std."""
    figure, ax = _figure_and_axes(ax, (8, 4))
    order = _present(colors, runs["strategy"].unique())
    tested = bool(runs["test"].notna().any())
    shift = 0.15 if tested else 0.0
    jitter = np.random.default_rng(0)
    for i, strategy in enumerate(order):
        mine = runs[runs["strategy"] == strategy]
        offsets = i + jitter.uniform(-0.12, 0.12, len(mine))
        color = colors.get(strategy, (0.5, 0.5, 0.5))
        ax.scatter(offsets - shift, mine["best_val"], color=color, s=36, zorder=3)
        if tested:
            ax.scatter(offsets + shift, mine["test"], color=color, marker="x", s=36, zorder=3)
    ax.set_xticks(range(len(order)), labels=order)
    ax.set_xlabel("strategy")
    ax.set_ylabel("metric value (fraction)" if "accuracy" in metric else "metric value")
    handles = [Line2D([], [], color="0.3", marker="o", ls="", label=f"best {metric} (one seed)")]
    if tested:
        handles.append(
            Line2D([], [], color="0.3", marker="x", ls="", label=f"{test_metric} of its config")
        )
    ax.legend(handles=handles, fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return figure


# ------------------------------------------------------------- many seeds
def mean_rank_figure(
    ranks: pd.DataFrame, colors: Mapping[str, Colour], total_epochs: int, ax: Any = None
) -> Figure:
    """Mean rank over seeds against the share of the budget spent (`many_seeds.
    budget_ranks`): a line per strategy, its bootstrap interval as a band; rank 1 (best)
    at the top."""
    figure, ax = _figure_and_axes(ax, (9, 4.8))
    if ranks.empty:
        _message(ax, "no paired seeds")
        return figure
    order = _present(colors, ranks["strategy"].unique())
    for strategy in order:
        mine = ranks[ranks["strategy"] == strategy].sort_values("fraction")
        x = 100 * mine["fraction"].to_numpy(float)
        color = colors.get(strategy, (0.5, 0.5, 0.5))
        ax.plot(x, mine["mean_rank"], color=color, marker="o", ms=3, label=strategy)
        ax.fill_between(x, mine["rank_low"], mine["rank_high"], color=color, alpha=0.18, lw=0)
    ax.set_ylim(len(order) + 0.3, 0.7)  # rank 1 at the top
    ax.set_xlim(0, 101)
    seeds = int(ranks["seeds"].iloc[0])
    ax.set_xlabel(f"share of the budget spent (% of total_epochs = {total_epochs} epochs a run)")
    ax.set_ylabel(f"mean rank over {seeds} seeds (1 = best)")
    ax.grid(alpha=0.3)
    ax.legend(
        title="strategy (band: 95 % bootstrap interval)",
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    return figure


def beat_probability_figure(beats: pd.DataFrame, order: Sequence[str], ax: Any = None) -> Figure:
    """P(row ends better than column) over paired seeds (`many_seeds.beat_probabilities`)
    as an annotated heatmap, rows and columns in `order` (best mean rank first)."""
    size = 1.0 + 0.75 * max(len(order), 2)
    figure, ax = _figure_and_axes(ax, (size + 1.6, size))
    if beats.empty:
        _message(ax, "fewer than two strategies")
        return figure
    matrix = beats.pivot(index="strategy_a", columns="strategy_b", values="p_a_better")
    matrix = matrix.reindex(index=list(order), columns=list(order))
    sns.heatmap(
        matrix, vmin=0, vmax=1, cmap="RdBu", annot=True, fmt=".2f", square=True,
        linewidths=0.5, cbar_kws={"label": "P(row ends better than column)"}, ax=ax,
    )  # fmt: skip
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel("column strategy (b)")
    ax.set_ylabel("row strategy (a)")
    ax.set_title(f"share of {int(beats['seeds'].iloc[0])} paired seeds a ends better than b")
    return figure


def critical_difference_figure(
    mean_ranks: pd.Series,
    critical_difference: float,
    groups: Sequence[Sequence[str]],
    colors: Mapping[str, Colour],
    title: str = "",
    ax: Any = None,
) -> Figure:
    """Mean rank of each strategy (best at the top) with a bar of ±CD/2 around it: two
    strategies differ significantly (Nemenyi) where their bars do not overlap. The
    groups of strategies within CD of each other are joined by a thick line at the
    right."""
    names = list(mean_ranks.index)
    figure, ax = _figure_and_axes(ax, (9, 0.45 * max(len(names), 2) + 1.4))
    if not names:
        _message(ax, "no paired seeds")
        return figure
    ranks = mean_ranks.to_numpy(float)
    half = critical_difference / 2 if np.isfinite(critical_difference) else 0.0
    ys = np.arange(len(names))
    for y, name, rank in zip(ys, names, ranks, strict=True):
        color = colors.get(name, (0.5, 0.5, 0.5))
        ax.plot([rank - half, rank + half], [y, y], color=color, lw=2, alpha=0.6)
        ax.plot([rank], [y], marker="o", color=color, ms=8)
        ax.text(rank, y - 0.3, f"{rank:.2f}", ha="center", fontsize="x-small")
    right = max(len(names) + 0.2, float(ranks.max() + half) + 0.2)
    multi = [g for g in groups if len(g) > 1]
    for i, group in enumerate(multi):
        rows = [names.index(n) for n in group]
        x = right + 0.15 * (i + 1)
        ax.plot([x, x], [min(rows) - 0.15, max(rows) + 0.15], color="0.2", lw=3)
    ax.set_yticks(ys, labels=names)
    ax.set_ylim(len(names) - 0.4, -0.7)  # best at the top
    ax.set_xlim(0.5, right + 0.15 * (len(multi) + 1))
    ax.set_xlabel(f"mean rank (1 = best); bar: ±CD/2, CD = {critical_difference:.2f}")
    ax.grid(alpha=0.3, axis="x")
    if title:
        ax.set_title(title, fontsize="small")
    return figure


# --------------------------------------------------------- learning curves
def learning_curves_figure(
    trials: pd.DataFrame, metric: str, colors: Mapping[str, Colour]
) -> Figure:
    """Validation metric per epoch of every trial, one panel per strategy (all seeds):
    where SHA/ASHA/Hyperband stop trials early, lines end early (open circles); a
    diverged trial is marked × along the bottom at the epoch it diverged."""
    order = _present(colors, trials["strategy"].unique()) if not trials.empty else []
    columns = min(3, max(len(order), 1))
    rows = max(1, math.ceil(len(order) / columns))
    figure = new_figure((4.6 * columns, 3.4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    if not order:
        _message(axes[0], "no trial has reported an epoch yet")
        return figure
    values = pd.to_numeric(trials[metric], errors="coerce").astype(float)
    frame = trials[["strategy", "seed", "trial_id", "status", "epoch"]].assign(value=values)
    frame = frame.sort_values(["strategy", "seed", "trial_id", "epoch"], kind="stable")
    for ax, strategy in zip(axes, order, strict=False):
        mine = frame[frame["strategy"] == strategy]
        color = colors.get(strategy, (0.5, 0.5, 0.5))
        finite = mine[np.isfinite(mine["value"])]
        segments = _segments(finite)
        alpha = float(np.clip(30.0 / max(len(segments), 1), 0.15, 0.8))
        ax.add_collection(
            LineCollection(segments, colors=[color], linewidths=0.9, alpha=alpha, rasterized=True)
        )
        ends = mine.groupby(["seed", "trial_id"], sort=False).agg(
            status=("status", "last"), epoch=("epoch", "max")
        )
        last = finite.groupby(["seed", "trial_id"], sort=False)[["epoch", "value"]].last()
        stopped = last[ends.loc[last.index, "status"].eq("early_stopped").to_numpy()]
        ax.scatter(
            stopped["epoch"], stopped["value"], s=14, facecolors="none", edgecolors="0.25",
            linewidths=0.7, zorder=3, rasterized=True,
        )  # fmt: skip
        for status, marker in (("diverged", "x"), ("errored", "v")):
            hit = ends[ends["status"] == status]
            ax.scatter(
                hit["epoch"], np.full(len(hit), 0.03), marker=marker, color="black", s=28,
                zorder=4, transform=blended_transform_factory(ax.transData, ax.transAxes),
            )  # fmt: skip
        counts = ends["status"].value_counts()
        seeds = mine["seed"].nunique()
        ax.set_title(
            f"{strategy} ({seeds} seed{'s' * (seeds != 1)}): {len(ends)} trials, "
            f"{counts.get('early_stopped', 0)} stopped early, {counts.get('diverged', 0)} diverged",
            fontsize="medium",
        )
        ax.grid(alpha=0.3)
    for ax in axes[len(order) :]:
        ax.set_visible(False)
    xlim = (0.5, float(np.nanmax(frame["epoch"].to_numpy(float))) + 0.5)
    finite_values = frame["value"][np.isfinite(frame["value"])]
    ylim = None
    if not finite_values.empty:
        low, high = float(finite_values.min()), float(finite_values.max())
        pad = 0.04 * (high - low) or 0.01
        ylim = (low - pad, high + pad)
    for ax in axes[: len(order)]:  # same scales in every panel, labels on every panel
        ax.set_xlim(*xlim)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_xlabel("epoch of the trial")
        ax.set_ylabel(metric)
    figure.legend(
        handles=[
            Line2D([], [], color="0.4", label="one trial (colour: strategy)"),
            Line2D([], [], color="0.25", marker="o", mfc="none", ls="", label="stopped early"),
            Line2D([], [], color="black", marker="x", ls="", label="diverged (at epoch)"),
            Line2D([], [], color="black", marker="v", ls="", label="errored (at epoch)"),
        ],
        loc="outside lower center",
        ncols=4,
        fontsize="small",
    )
    return figure


def _segments(frame: pd.DataFrame) -> list[np.ndarray]:
    """(epoch, value) polylines, one per trial, for a single LineCollection."""
    if frame.empty:
        return []
    keys = frame["seed"].astype(str) + "/" + frame["trial_id"].astype(str)
    codes = pd.factorize(keys)[0]
    points = frame[["epoch", "value"]].to_numpy(float)
    cuts = np.flatnonzero(np.diff(codes)) + 1
    return np.split(points, cuts)


# --------------------------------------------------------- hyperparameters
def hyperparameter_scatter_figure(
    table: pd.DataFrame,
    space: Mapping[str, Mapping[str, Any]],
    value_label: str,
    colors: Mapping[str, Colour],
    title: str = "",
) -> Figure:
    """Each trial's metric at one fidelity (`trials_at`; `value_label` names it, `title`
    states the fidelity) against each searched hyperparameter (log axis for log
    domains, jittered categories), coloured by strategy."""
    names = [n for n in space if f"config/{n}" in table]
    columns = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / columns))
    figure = new_figure((4.6 * columns, 3.4 * rows + 0.5))
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    usable = table[np.isfinite(pd.to_numeric(table[AT_FIDELITY], errors="coerce").astype(float))]
    if title:
        figure.suptitle(title, fontsize="medium")
    if not names or usable.empty:
        _message(axes[0], "no trial with a finite metric yet")
        return figure
    order = _present(colors, usable["strategy"].unique())
    jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(usable))
    for ax, name in zip(axes, names, strict=False):
        domain = space[name]
        kind = space_kind(domain)
        if kind == "choice":
            xs = choice_index(usable[f"config/{name}"], domain["choice"]).to_numpy(float) + jitter
            ax.set_xticks(range(len(domain["choice"])), labels=[str(c) for c in domain["choice"]])
        else:
            xs = pd.to_numeric(usable[f"config/{name}"], errors="coerce").to_numpy(float)
            if kind in LOG_KINDS:
                ax.set_xscale("log")
            elif kind == "randint" and domain[kind]["high"] - domain[kind]["low"] <= 12:
                xs = xs + jitter  # few integers: spread the points like categories
                ax.set_xticks(range(domain[kind]["low"], domain[kind]["high"]))
        for strategy in order:
            mask = (usable["strategy"] == strategy).to_numpy()
            ax.scatter(
                xs[mask], usable[AT_FIDELITY].to_numpy(float)[mask], s=10, alpha=0.6,
                color=colors.get(strategy, (0.5, 0.5, 0.5)), label=strategy, rasterized=True,
            )  # fmt: skip
        scale = "log scale" if kind in LOG_KINDS else "category" if kind == "choice" else "linear"
        ax.set_xlabel(f"{name} ({kind}, {scale})")
        ax.set_ylabel(value_label)
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    figure.legend(
        handles=[
            Line2D([], [], color=colors.get(s, (0.5, 0.5, 0.5)), marker="o", ls="", label=s)
            for s in order
        ],
        title="strategy",
        loc="outside lower center",
        ncols=len(order),
        fontsize="small",
    )
    return figure


def parallel_coordinates_figure(
    coordinates: pd.DataFrame,
    space: Mapping[str, Mapping[str, Any]],
    metric: str,
    best_range: tuple[float, float],
    colors: Mapping[str, Colour],
    ax: Any = None,
    title: str = "",
) -> Figure:
    """The top trials as lines across one vertical axis per hyperparameter (position in
    its domain, log for log domains) and a last axis for the metric (`metric` names it,
    e.g. "val_accuracy at epoch 9"; `title` states the fidelity)."""
    figure, ax = _figure_and_axes(ax, (10, 4.8))
    if title:
        ax.set_title(title, fontsize="small")
    axes_names = [n for n in space if n in coordinates] + ["metric"]
    if coordinates.empty:
        _message(ax, "no trial with a finite metric yet")
        return figure
    points = coordinates[axes_names].to_numpy(float)
    xs = np.arange(len(axes_names), dtype=float)
    segments, line_colors = [], []
    for row, strategy in zip(points, coordinates["strategy"], strict=True):
        keep = np.isfinite(row)
        segments.append(np.column_stack([xs[keep], row[keep]]))
        line_colors.append(colors.get(strategy, (0.5, 0.5, 0.5)))
    ax.add_collection(LineCollection(segments, colors=line_colors, linewidths=1.2, alpha=0.7))
    for x, name in zip(xs, axes_names, strict=True):
        ax.axvline(x, color="0.3", linewidth=0.8)
        for y, label in _axis_labels(name, space, best_range, metric):
            ax.text(x + 0.04, y, label, fontsize="x-small", va="center", color="0.2")
    ax.set_xlim(-0.2, len(axes_names) - 0.6)
    ax.set_ylim(-0.06, 1.06)
    ax.set_xticks(xs, labels=[*axes_names[:-1], textwrap.fill(metric, 14)])
    ax.set_xlabel("hyperparameter")
    ax.set_ylabel("position in its domain (0 = low end, 1 = high end)")
    order = _present(colors, coordinates["strategy"].unique())
    ax.legend(
        handles=[Line2D([], [], color=colors.get(s, (0.5, 0.5, 0.5)), label=s) for s in order],
        title="strategy",
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    return figure


def _axis_labels(
    name: str, space: Mapping[str, Mapping[str, Any]], best_range: tuple[float, float], metric: str
) -> list[tuple[float, str]]:
    if name == "metric":
        return [(0.0, f"{best_range[0]:.4g}"), (1.0, f"{best_range[1]:.4g}")]
    domain = space[name]
    kind = space_kind(domain)
    if kind == "choice":
        count = max(len(domain["choice"]) - 1, 1)
        return [(i / count, str(c)) for i, c in enumerate(domain["choice"])]
    high = domain[kind]["high"] - (1 if kind in INT_KINDS else 0)
    return [(0.0, f"{domain[kind]['low']:.3g}"), (1.0, f"{high:.3g}")]


def importance_figure(table: pd.DataFrame, note: str, ax: Any = None) -> Figure:
    """fANOVA importance per hyperparameter as horizontal bars, `note` as the title."""
    figure, ax = _figure_and_axes(ax, (7, 0.5 * max(len(table), 2) + 1.2))
    if table.empty:
        _message(ax, f"importance not computed: {note}")
        return figure
    sns.barplot(data=table, y="param", x="importance", color=sns.color_palette("colorblind")[7],
                ax=ax)  # fmt: skip
    ax.set_xlabel("fANOVA importance (share of the metric's variance; bars sum to 1)")
    ax.set_ylabel("hyperparameter")
    ax.set_xlim(0, max(1.0, float(table["importance"].max())))
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("\n".join(textwrap.wrap(note, 90)), fontsize="small")  # it states the fidelity
    return figure


def pbt_schedule_figure(
    schedule: pd.DataFrame,
    space: Mapping[str, Mapping[str, Any]],
    color: Colour,
    title: str = "",
) -> Figure:
    """The hyperparameter schedule of PBT's best trial per seed (`tables.pbt_schedule`):
    one panel per hyperparameter (lr first) against the epoch, a step line per seed,
    triangles at the epochs trained after the trial exploited another."""
    names = list(dict.fromkeys(schedule["param"])) if not schedule.empty else []
    columns = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / columns))
    figure = new_figure((4.6 * columns, 3.2 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    if not names:
        _message(axes[0], "no pbt trial with a finite metric yet")
        return figure
    styles = ["-", "--", ":", "-."]
    seeds = list(dict.fromkeys(schedule["seed"]))
    for ax, name in zip(axes, names, strict=False):
        mine = schedule[schedule["param"] == name]
        for i, seed in enumerate(seeds):
            line = mine[mine["seed"] == seed]
            ax.step(line["epoch"], line["value"], where="post", color=color,
                    linestyle=styles[i % len(styles)], label=f"seed {seed}")  # fmt: skip
            jumps = line[line["exploited"].astype(bool)]
            ax.scatter(jumps["epoch"], jumps["value"], marker="^", color="black", s=30, zorder=3)
        domain = space.get(name)
        log = space_kind(domain) in LOG_KINDS if domain else bool((mine["value"] > 0).all())
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch of the trial")
        ax.set_ylabel(name + (" (log scale)" if log else ""))
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize="medium")
    figure.legend(
        handles=[
            *(
                Line2D([], [], color=color, linestyle=styles[i % len(styles)], label=f"seed {s}")
                for i, s in enumerate(seeds)
            ),
            Line2D([], [], color="black", marker="^", ls="", label="first epoch after an exploit"),
        ],
        loc="outside lower center",
        ncols=len(seeds) + 1,
        fontsize="small",
    )
    return figure


def _tile(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Images (n × C × h × w), each scaled to [0, 1] on its own, tiled into one RGB
    picture with 1-pixel white gaps."""
    n, channels, h, w = images.shape
    low = images.min(axis=(1, 2, 3), keepdims=True)
    high = images.max(axis=(1, 2, 3), keepdims=True)
    scaled = (images - low) / np.maximum(high - low, 1e-8)
    if channels == 1:
        scaled = np.repeat(scaled, 3, axis=1)
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, 3))
    for i, image in enumerate(scaled[:, :3]):
        top, left = 1 + (i // columns) * (h + 1), 1 + (i % columns) * (w + 1)
        canvas[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    return canvas


def conv1_figure(views: Mapping[str, np.ndarray], title: str) -> Figure:
    """The selected model's first convolution: its filters before and after training
    (8×8 grids, each filter scaled on its own) and its feature maps for one image."""
    figure = new_figure((13.0, 3.8))
    axes = figure.subplots(1, 4, width_ratios=[0.6, 1, 1, 1])
    image = views["image"]
    axes[0].imshow(_tile(image[None]), interpolation="nearest")
    axes[0].set_title("validation image")
    axes[1].imshow(_tile(views["filters_before"]), interpolation="nearest")
    axes[1].set_title("conv1 filters before training")
    axes[2].imshow(_tile(views["filters_after"]), interpolation="nearest")
    axes[2].set_title("conv1 filters after training")
    maps = views["feature_maps"][:, None]
    axes[3].imshow(_tile(maps), interpolation="nearest")
    axes[3].set_title("conv1 feature maps of the image")
    for ax in axes:
        ax.set_axis_off()
    change = np.linalg.norm(views["filters_after"] - views["filters_before"]) / max(
        np.linalg.norm(views["filters_before"]), 1e-12
    )
    figure.suptitle(f"{title}; relative change of the conv1 weights: {change:.3f}")
    return figure

"""The landscape of a two-parameter grid study: every metric over the grid's plane, as a
3-D surface beside a heat map (e.g. the neuron_landscape study's loss surfaces).

`landscape` is pure (trials → one tidy table per metric), `landscape_figure` draws one
table, `section_parts` writes the report's text. The x and y axes come from the grid
itself, not from the values a metric happened to reach, so every figure of a study spans
the same ranges; heights and colours are per metric, whose scales differ. A grid point
with no finite value (diverged, errored, or never run because the budget ended first) is
a gap in every panel, never a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpo import space as spaces
from hpo.report import html as h
from hpo.report.figures import new_figure
from hpo.spec import Param, Study, slug
from hpo.strategies.plan import full_trials
from trainables import EPOCH_METRICS, trainable_info

GRID = "grid"  # the strategy whose trials lie on the landscape's grid
NUMERIC = ("uniform", "loguniform", "randint", "lograndint", "quniform", "qloguniform")
MIN_VALUES = 3  # fewest distinct grid values per axis for a surface worth drawing
NO_VALUE = ("diverged", "errored")  # trial statuses whose last values are no measurement
COLUMNS = ["x", "y", "value", "seeds"]
GAP_COLOUR = (0.85, 0.85, 0.85)
CMAP = "viridis"


# ----------------------------------------------------------------- compute
@dataclass(frozen=True)
class Axis:
    """One searched hyperparameter as an axis: its grid values, ascending."""

    name: str
    values: tuple[float, ...]
    log: bool  # loguniform: drawn on a log axis

    @property
    def limits(self) -> tuple[float, float]:
        """The surface's range: first to last grid value."""
        return self.values[0], self.values[-1]

    @property
    def edges(self) -> np.ndarray:
        """The heat map's cell edges: half-way between grid values (geometrically on a log
        axis), the outer cells as wide as their neighbours."""
        points = np.log10(self.values) if self.log else np.asarray(self.values, dtype=float)
        middle = (points[1:] + points[:-1]) / 2
        edges = np.concatenate(
            [
                [points[0] - (middle[0] - points[0])],
                middle,
                [points[-1] + (points[-1] - middle[-1])],
            ]
        )
        return 10**edges if self.log else edges


@dataclass(frozen=True)
class Extremes:
    """Where a metric's table is lowest and highest (finite values only)."""

    low: float
    low_x: float
    low_y: float
    high: float
    high_x: float
    high_y: float


@dataclass
class Landscape:
    """Per metric, the grid trials' final value at each grid point (x, y, value, seeds:
    how many seeds reached the point), every point of the grid listed once."""

    x: Axis
    y: Axis
    tables: dict[str, pd.DataFrame]
    seeds: list[int]  # the seeds whose grid runs reported
    seeds_differ: bool  # whether any point's value differs between seeds (then: their mean)
    missing: list[str] = field(default_factory=list)  # declared metrics absent from trials.csv

    @property
    def points(self) -> int:
        return len(self.x.values) * len(self.y.values)

    def file_stem(self, metric: str) -> str:
        return f"landscape_{slug(metric)}"

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables as written beside the report, columns named after the parameters."""
        return {
            f"{self.file_stem(metric)}.csv": table.rename(
                columns={"x": self.x.name, "y": self.y.name, "value": metric}
            )
            for metric, table in self.tables.items()
        }


def grid_axes(study: Study) -> tuple[Axis, Axis] | None:
    """The two axes of a two-parameter grid: exactly two hyperparameters take more than one
    grid value, both numeric with at least MIN_VALUES; None for any other space. The grid
    values are the grid strategy's own (hpo.space.grid_values on the run's budget)."""
    values = spaces.grid_values(study.space, full_trials(study))
    varying = [name for name, grid in values.items() if len(set(grid)) > 1]
    if len(varying) != 2:
        return None
    axes = [_axis(name, study.space[name], values[name]) for name in varying]
    if any(axis is None for axis in axes):
        return None
    return axes[0], axes[1]


def _axis(name: str, param: Param, grid: list[Any]) -> Axis | None:
    if param.kind not in NUMERIC or param.when or len(set(grid)) < MIN_VALUES:
        return None  # a conditional axis has no value in part of the grid
    return Axis(name, tuple(sorted(float(v) for v in set(grid))), spaces.is_log(param))


def is_two_parameter_grid(trials: pd.DataFrame, study: Study) -> bool:
    """Whether the report draws a landscape: the grid strategy reported trials and its grid
    spans two numeric hyperparameters (see `grid_axes`)."""
    return _grid_trials(trials).shape[0] > 0 and grid_axes(study) is not None


def landscape_metrics(trials: pd.DataFrame, study: Study) -> tuple[list[str], list[str]]:
    """The metrics drawn (the study's metric, then those the trainable reports beyond
    every trainable's epoch metrics, in its order) and the declared ones trials.csv lacks."""
    declared = trainable_info(study.trainable, trusted=True).metrics
    wanted = list(dict.fromkeys([study.metric.name, *declared]))
    wanted = [m for m in wanted if m == study.metric.name or m not in EPOCH_METRICS]
    return [m for m in wanted if m in trials], [m for m in wanted if m not in trials]


def landscape(trials: pd.DataFrame, study: Study) -> Landscape | None:
    """The landscape of a two-parameter grid study; None for any other study."""
    axes, grid = grid_axes(study), _grid_trials(trials)
    if axes is None or grid.empty:
        return None
    x, y = axes
    if f"config/{x.name}" not in grid or f"config/{y.name}" not in grid:
        return None  # results written without the config columns: nothing to place
    final = _on_grid(_final_rows(grid), x, y)
    metrics, missing = landscape_metrics(trials, study)
    values = {metric: _values(final, metric) for metric in metrics}
    return Landscape(
        x=x,
        y=y,
        tables={metric: point_table(final, v, x, y) for metric, v in values.items()},
        seeds=sorted(int(s) for s in final["seed"].unique()),
        seeds_differ=any(_seeds_differ(final, v) for v in values.values()),
        missing=missing,
    )


def _grid_trials(trials: pd.DataFrame) -> pd.DataFrame:
    if "strategy" not in trials:
        return trials.iloc[0:0]
    return trials[trials["strategy"] == GRID]


def _final_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last reported epoch (a trial restored and retried keeps its id)."""
    ordered = trials.sort_values("epoch", kind="stable")
    return ordered.drop_duplicates(["seed", "trial_id"], keep="last")


def _on_grid(rows: pd.DataFrame, x: Axis, y: Axis) -> pd.DataFrame:
    """The rows whose config lies on the grid, with x and y snapped to the grid's values
    (trials.csv may print a value with other rounding than the grid's)."""
    placed = rows.assign(
        x=_snap(rows[f"config/{x.name}"], x.values), y=_snap(rows[f"config/{y.name}"], y.values)
    )
    return placed.dropna(subset=["x", "y"])


def _snap(values: pd.Series, grid: tuple[float, ...]) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    points = np.asarray(grid, dtype=float)
    if numbers.size == 0:
        return pd.Series(numbers, index=values.index)
    # argmin, not nanargmin: a missing value picks some point, and isclose then rejects it
    nearest = points[np.argmin(np.abs(numbers[:, None] - points[None, :]), axis=1)]
    matched = np.isclose(numbers, nearest, rtol=1e-6, atol=1e-12)
    return pd.Series(np.where(matched, nearest, np.nan), index=values.index)


def _values(final: pd.DataFrame, metric: str) -> pd.Series:
    """A metric's final value per row: NaN where it is not finite or where the trial
    diverged or errored (its last report is no measurement)."""
    values = pd.to_numeric(final[metric], errors="coerce").astype(float)
    values = values.where(np.isfinite(values))
    if "status" in final:
        values = values.where(~final["status"].isin(NO_VALUE))
    return values


def point_table(final: pd.DataFrame, values: pd.Series, x: Axis, y: Axis) -> pd.DataFrame:
    """One row per grid point (x outer, y inner): the mean over the seeds that reached it,
    NaN where any of them has no value (a gap is never filled by another seed's value)."""
    frame = pd.DataFrame({"x": final["x"], "y": final["y"], "value": values})
    grouped = frame.groupby(["x", "y"])["value"]
    table = pd.DataFrame(
        {"value": grouped.mean().where(grouped.count() == grouped.size()), "seeds": grouped.size()}
    )
    full = pd.MultiIndex.from_product([x.values, y.values], names=["x", "y"])
    table = table.reindex(full)
    table["seeds"] = table["seeds"].fillna(0).astype(int)
    return table.reset_index()[COLUMNS]


def _seeds_differ(final: pd.DataFrame, values: pd.Series) -> bool:
    frame = pd.DataFrame({"x": final["x"], "y": final["y"], "value": values})
    spread = frame.groupby(["x", "y"])["value"].agg(lambda v: np.ptp(v.to_numpy()))
    return bool((spread.fillna(0) > 0).any())


def surface(table: pd.DataFrame, x: Axis, y: Axis) -> np.ndarray:
    """The table as a (len(y.values), len(x.values)) array, NaN at gaps."""
    matrix = table.pivot(index="y", columns="x", values="value")
    return matrix.reindex(index=list(y.values), columns=list(x.values)).to_numpy(dtype=float)


def extremes(table: pd.DataFrame) -> Extremes | None:
    """Lowest and highest finite value and their grid points; None when every point is
    a gap."""
    finite = table.dropna(subset=["value"])
    if finite.empty:
        return None
    low, high = finite.loc[finite["value"].idxmin()], finite.loc[finite["value"].idxmax()]
    return Extremes(
        float(low["value"]),
        float(low["x"]),
        float(low["y"]),
        float(high["value"]),
        float(high["x"]),
        float(high["y"]),
    )


# -------------------------------------------------------------------- draw
def landscape_figure(table: pd.DataFrame, x: Axis, y: Axis, metric: str) -> Figure:
    """One metric: a 3-D surface (left) and a heat map (right) over the same x and y
    ranges, which depend only on the axes; height and colour span this metric's values."""
    figure = new_figure((12, 5))
    values = surface(table, x, y)
    finite = values[np.isfinite(values)]
    limits = (float(finite.min()), float(finite.max())) if finite.size else None
    _surface_panel(figure.add_subplot(1, 2, 1, projection="3d"), values, x, y, metric, limits)
    _heat_map_panel(figure, figure.add_subplot(1, 2, 2), values, x, y, metric, limits)
    figure.suptitle(f"{metric} over {x.name} × {y.name} (grid trials' final epoch)")
    return figure


def _surface_panel(ax: Any, values: np.ndarray, x: Axis, y: Axis, metric: str, limits: Any) -> None:
    # mplot3d takes log scales since matplotlib 3.10; set before drawing, as for 2-D axes.
    ax.set_xscale("log" if x.log else "linear")
    ax.set_yscale("log" if y.log else "linear")
    if limits is None:
        ax.text2D(0.5, 0.5, "no finite value", ha="center", transform=ax.transAxes)
    else:
        grid_x, grid_y = np.meshgrid(x.values, y.values)
        ax.plot_surface(
            grid_x, grid_y, values, cmap=CMAP, vmin=limits[0], vmax=limits[1],
            rstride=1, cstride=1, linewidth=0.2, edgecolor=(0.3, 0.3, 0.3, 0.4),
        )  # fmt: skip
        if limits[1] > limits[0]:
            ax.set_zlim(*limits)
    ax.set_xlim(*x.limits)
    ax.set_ylim(*y.limits)
    ax.set_xlabel(x.name)
    ax.set_ylabel(y.name)
    ax.set_zlabel(metric)


def _heat_map_panel(
    figure: Figure, ax: Any, values: np.ndarray, x: Axis, y: Axis, metric: str, limits: Any
) -> None:
    low, high = limits if limits is not None else (None, None)
    mesh = ax.pcolormesh(
        x.edges, y.edges, np.ma.masked_invalid(values), cmap=CMAP, vmin=low, vmax=high
    )
    ax.set_facecolor(GAP_COLOUR)  # masked cells (gaps) show the background
    ax.set_xscale("log" if x.log else "linear")
    ax.set_yscale("log" if y.log else "linear")
    ax.set_xlim(x.edges[0], x.edges[-1])
    ax.set_ylim(y.edges[0], y.edges[-1])
    ax.set_xlabel(x.name)
    ax.set_ylabel(y.name)
    figure.colorbar(mesh, ax=ax, label=metric)


def figures(land: Landscape) -> dict[str, Figure]:
    """Every metric's figure, by its PNG file name."""
    return {
        f"{land.file_stem(metric)}.png": landscape_figure(table, land.x, land.y, metric)
        for metric, table in land.tables.items()
    }


# ------------------------------------------------------------------ render
def _at(x: Axis, y: Axis, x_value: float, y_value: float) -> str:
    return f"{x.name} = {x_value:g}, {y.name} = {y_value:g}"


def caption(land: Landscape, metric: str) -> str:
    """One line: the metric, where its minimum and maximum lie, and how many gaps."""
    table = land.tables[metric]
    found = extremes(table)
    gaps = int(table["value"].isna().sum())
    gap_text = f"; {gaps} of {land.points} grid points have no value (grey)" if gaps else ""
    if found is None:
        return f"{metric}: no grid point has a finite value{gap_text}."
    return (
        f"{metric}: minimum {found.low:.4g} at {_at(land.x, land.y, found.low_x, found.low_y)}; "
        f"maximum {found.high:.4g} at {_at(land.x, land.y, found.high_x, found.high_y)}"
        f"{gap_text}."
    )


def _seed_text(land: Landscape) -> str:
    count = len(land.seeds)
    if count == 1:
        return f"seed {land.seeds[0]}"
    if not land.seeds_differ:
        return f"seed {land.seeds[0]} (its {count} seeds gave the same values)"
    return f"the mean over {count} seeds ({', '.join(map(str, land.seeds))})"


def _axis_text(axis: Axis) -> str:
    scale = ", log axis" if axis.log else ""
    return (
        f"{axis.name} ({len(axis.values)} values, {axis.limits[0]:g} to {axis.limits[1]:g}{scale})"
    )


def section_parts(land: Landscape, figure: Callable[[str, str, str], str]) -> list[str]:
    """The landscape section: what is drawn, then one figure per metric."""
    missing = (
        f" Declared by the trainable but not in trials.csv: {', '.join(land.missing)}."
        if land.missing
        else ""
    )
    parts = [
        h.paragraph(
            f"The grid strategy's trials over {_axis_text(land.x)} × {_axis_text(land.y)}: "
            f"each trial's value at its final epoch, {_seed_text(land)}. Left: 3-D surface; "
            "right: heat map. x and y span the grid in every figure; height and colour span "
            "each metric's own range. A grid point whose trial diverged, errored or never ran "
            "(the budget ended first) is a gap (grey on the heat map), never a value; with "
            "several seeds, a point is a gap where any seed has no value. The tables are "
            f"beside this page as landscape_<metric>.csv.{missing}"
        )
    ]
    for metric in land.tables:
        name = f"{land.file_stem(metric)}.png"
        parts.append(
            figure(name, f"{metric} over the grid: surface and heat map", caption(land, metric))
        )
    return parts


__all__ = [
    "Axis",
    "Extremes",
    "Landscape",
    "caption",
    "extremes",
    "figures",
    "grid_axes",
    "is_two_parameter_grid",
    "landscape",
    "landscape_figure",
    "landscape_metrics",
    "point_table",
    "section_parts",
    "surface",
]

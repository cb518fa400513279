"""Sections of a compared study's page for the gradient-pathology studies: per-layer
gradient norms over training, gradient distributions at initialization, decision
boundaries of 2-D classifiers, the fraction of nets collapsed to a constant function
(dying ReLU), iterations until the training set is fit, and a second head's regression
accuracy. Each appears only where the trials or views hold its data.

Tables are pure (DataFrames or arrays in, DataFrames out); figures draw what the tables
computed; the page's sentences take every number from the tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hpo.compare import CompareResults
from hpo.report import figures as fig
from hpo.report import html as h
from hpo.report.compare_figures import level_colors
from hpo.report.compare_tables import numeric

GRAD_NORM = "grad_norm/"
GRAD_INIT, GRAD_TRAINED = "grad_init/", "grad_trained/"
THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-6)  # output-std criteria the collapse is counted at
PUBLISHED_LEVEL = 0.9  # Lu et al. 2019: over 90 % of 10×2 ReLU nets collapse
PUBLISHED = "> 90 % (Lu et al. 2019, depth 10, width 2)"
PUBLISHED_SHAPE = {"depth": 10, "width": 2}
REGRESSION = (
    "train_regression_accuracy",
    "val_regression_accuracy",
    "train_regression_loss",
    "val_regression_loss",
)
BINS = 60


# ================================================================== tables
def layer_order(names: Sequence[str]) -> list[str]:
    """Layer names in model order: convolutions before linear layers, then by number (so
    fc10 follows fc9, not fc1 as trials.csv's alphabetical columns have it)."""

    def key(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"(conv|fc)(\d+)", name)
        if not match:
            return (2, 0, name)
        return (match.group(1) == "fc", int(match.group(2)), name)

    return sorted(dict.fromkeys(names), key=key)


def selected_rows(trials: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Every epoch of each run's selected trial (trials.csv rows), in epoch order."""
    if trials.empty or runs.empty or "selected_trial" not in runs:
        return pd.DataFrame()
    keys = runs[["variant", "strategy", "seed", "selected_trial"]].dropna()
    keys = keys.rename(columns={"selected_trial": "trial_id"})
    chosen = trials.merge(keys, on=["variant", "strategy", "seed", "trial_id"])
    # variants in the study's order (as trials has them), not alphabetically
    order = {v: i for i, v in enumerate(dict.fromkeys(trials["variant"]))}
    chosen = chosen.assign(_order=chosen["variant"].map(order))
    chosen = chosen.sort_values(["_order", "strategy", "seed", "epoch"], ignore_index=True)
    return chosen.drop(columns="_order")


def final_rows(selected: pd.DataFrame) -> pd.DataFrame:
    """The last reported epoch of each run's selected trial (one row per run)."""
    if selected.empty:
        return selected
    return selected.groupby(["variant", "strategy", "seed"], sort=False).tail(1)


def _factor_columns(frame: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    return [f for f in factors if f in frame]


# ---------------------------------------------------------- gradient norms
def grad_norm_curves(selected: pd.DataFrame, factors: Sequence[str] = ()) -> pd.DataFrame:
    """Per variant, layer and epoch: the selected trials' grad_norm, mean over runs."""
    columns = [c for c in selected.columns if str(c).startswith(GRAD_NORM)]
    if selected.empty or not columns:
        return pd.DataFrame()
    keys = ["variant", *_factor_columns(selected, factors)]
    long = selected.melt(id_vars=[*keys, "epoch"], value_vars=columns, value_name="grad_norm")
    long["layer"] = long["variable"].str.removeprefix(GRAD_NORM)
    long["grad_norm"] = pd.to_numeric(long["grad_norm"], errors="coerce")
    curves = (
        long.dropna(subset=["grad_norm"])
        .groupby([*keys, "layer", "epoch"], sort=False)["grad_norm"]
        .agg(grad_norm="mean", runs="count")
        .reset_index()
    )
    # variants as they come, layers in model order
    variants = list(dict.fromkeys(curves["variant"]))
    curves["layer"] = pd.Categorical(curves["layer"], layer_order(curves["layer"]), ordered=True)
    curves["variant"] = pd.Categorical(curves["variant"], variants, ordered=True)
    curves = curves.sort_values(["variant", "layer", "epoch"], ignore_index=True)
    return curves.astype({"variant": str, "layer": str})


def grad_norm_table(curves: pd.DataFrame, factors: Sequence[str] = ()) -> pd.DataFrame:
    """Per variant: its first and last layer's gradient norm (mean over epochs and runs),
    first / last (the factor by which the gradient shrinks from the output back to the
    input layer), and the first layer's norm in the first epoch alone (`first_norm_start`:
    before training has moved the weights far from their initialization)."""
    if curves.empty:
        return pd.DataFrame()
    rows = []
    for variant, mine in curves.groupby("variant", sort=False):
        layers = layer_order(mine["layer"])
        means = mine.groupby("layer")["grad_norm"].mean()
        first, last = float(means[layers[0]]), float(means[layers[-1]])
        first_layer = mine[mine["layer"] == layers[0]]
        start = float(first_layer.loc[first_layer["epoch"].idxmin(), "grad_norm"])
        levels = {f: mine[f].iloc[0] for f in _factor_columns(mine, factors)}
        rows.append(
            {
                "variant": variant,
                **levels,
                "first_layer": layers[0],
                "first_norm": first,
                "last_layer": layers[-1],
                "last_norm": last,
                "first_over_last": first / last if last else np.nan,
                "first_norm_start": start,
            }
        )
    return pd.DataFrame(rows)


def first_layer_ratios(table: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """Per factor and combination of the other factors' levels: each level's first-layer
    norm against the level with the largest one (`ratio` = largest / this level's), over
    training and in the first epoch (`ratio_start`, against the same largest level)."""
    rows = []
    for factor in _factor_columns(table, factors):
        others = [f for f in _factor_columns(table, factors) if f != factor]
        groups = table.groupby(others, sort=False) if others else [((), table)]
        for context, group in groups:
            if len(group) < 2:
                continue
            context = context if isinstance(context, tuple) else (context,)
            top = group.loc[group["first_norm"].idxmax()]
            for row in group.to_dict("records"):
                norm, start = float(row["first_norm"]), float(row["first_norm_start"])
                rows.append(
                    {
                        "factor": factor,
                        "context": ", ".join(
                            f"{f}={v}" for f, v in zip(others, context, strict=True)
                        ),
                        "level": row[factor],
                        "first_norm": norm,
                        "first_norm_start": start,
                        "largest_level": top[factor],
                        "largest_norm": float(top["first_norm"]),
                        "ratio": float(top["first_norm"]) / norm if norm else np.nan,
                        "ratio_start": float(top["first_norm_start"]) / start if start else np.nan,
                    }
                )
    return pd.DataFrame(rows)


def ratio_sentences(ratios: pd.DataFrame) -> list[str]:
    """One sentence per (factor, context): every level's first-layer norm over training
    and in the first epoch, and how many times the largest exceeds each other level's."""
    sentences = []
    if ratios.empty:
        return sentences
    for (factor, context), group in ratios.groupby(["factor", "context"], sort=False):
        where = f" ({context})" if context else ""
        top = group["largest_level"].iloc[0]
        others = group[group["level"] != top]
        for column, ratio, when in (
            ("first_norm_start", "ratio_start", "in the first epoch"),
            ("first_norm", "ratio", "over training (mean of the epochs)"),
        ):
            norms = ", ".join(f"{r['level']} {sci(r[column])}" for _, r in group.iterrows())
            times = ", ".join(
                f"{ratio_text(r[ratio])} {r['level']}'s" for _, r in others.iterrows()
            )
            sentences.append(
                f"First-layer gradient norm by {factor}{where}, {when}: {norms} — {top}'s "
                f"is {times}."
            )
    return sentences


def ratio_text(ratio: float) -> str:
    if h.is_missing(ratio):
        return "n/a ×"
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def sci(value: Any) -> str:
    """A positive magnitude compactly: 0.034, 1.2e-4, 3.1e+05."""
    if h.is_missing(value):
        return "n/a"
    value = float(value)
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{float(mantissa):.3g}e{int(exponent)}"


# ---------------------------------------------------- gradient distributions
def gradient_medians(views: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per variant and layer: the median |gradient| at initialization and at the selected
    checkpoint (NaN where a view is absent)."""
    rows = []
    for variant, arrays in views.items():
        names = [k.removeprefix(GRAD_INIT) for k in arrays if k.startswith(GRAD_INIT)]
        names += [k.removeprefix(GRAD_TRAINED) for k in arrays if k.startswith(GRAD_TRAINED)]
        for layer in layer_order(names):
            row = {"variant": variant, "layer": layer}
            for prefix, column in ((GRAD_INIT, "median_init"), (GRAD_TRAINED, "median_trained")):
                values = arrays.get(prefix + layer)
                row[column] = (
                    float(np.median(np.abs(values)))
                    if values is not None and len(values)
                    else np.nan
                )
            rows.append(row)
    return pd.DataFrame(rows)


def distribution_groups(
    variant_levels: Mapping[str, Mapping[str, str]], factors: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """Figure title → [(row label, variant label)]. With two or more factors, one figure
    per level of the first factor (the initialization of vanishing_gradients_init) whose
    rows are the other factors' levels; with one, one figure with a row per level."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for variant, levels in variant_levels.items():
        if len(factors) < 2:
            groups.setdefault("", []).append((variant, variant))
            continue
        title = f"{factors[0]}={levels[factors[0]]}"
        rest = ", ".join(f"{f}={levels[f]}" for f in factors[1:])
        groups.setdefault(title, []).append((rest, variant))
    return groups


def log_gradients(values: Any) -> np.ndarray:
    """log10|gradient| of the non-zero values (a zero has no logarithm; a dead unit's
    exact zeros are counted in the medians, not drawn)."""
    magnitudes = np.abs(np.asarray(values, dtype=float))
    return np.log10(magnitudes[magnitudes > 0])


# ------------------------------------------------------------------ collapse
def _pooled(group: pd.DataFrame) -> dict[str, Any]:
    """The runs of one or more trials pooled: collapsed of runs, with the Wilson 95 %
    interval (the trial's own when only one trial; recomputed, as the trainable does,
    for more)."""
    from scipy.stats import binomtest

    runs = int(numeric(group, "runs").sum())
    dead = int(numeric(group, "collapsed_runs").sum())
    if len(group) == 1:
        low, high = float(group["collapse_low"].iloc[0]), float(group["collapse_high"].iloc[0])
    else:
        interval = binomtest(dead, runs).proportion_ci(0.95, method="wilson")
        low, high = float(interval.low), float(interval.high)
    return {
        "runs": runs,
        "collapsed_runs": dead,
        "collapse_fraction": dead / runs if runs else np.nan,
        "collapse_low": low,
        "collapse_high": high,
    }


def setting(row: Mapping[str, Any], name: str, fixed: Mapping[str, Any]) -> Any:
    """A config value of a trial's row (`config/<name>`), else the study's fixed one."""
    value = row.get(f"config/{name}")
    return fixed.get(name) if h.is_missing(value) else value


def collapse_table(
    final: pd.DataFrame, fixed: Mapping[str, Any], factors: Sequence[str] = ()
) -> pd.DataFrame:
    """Per variant, the final epoch of its selected trials: runs, collapsed runs, the
    fraction with its interval, the runs' wall time, and Lu et al.'s published figure
    beside ReLU at their depth 10 × width 2 (blank otherwise)."""
    if final.empty or "collapse_fraction" not in final:
        return pd.DataFrame()
    rows = []
    for variant, group in final.groupby("variant", sort=False):
        first = group.iloc[0].to_dict()
        shape = {k: setting(first, k, fixed) for k in PUBLISHED_SHAPE}
        activation = setting(first, "activation", fixed)
        published = activation == "relu" and all(
            not h.is_missing(v) and int(v) == PUBLISHED_SHAPE[k] for k, v in shape.items()
        )
        rows.append(
            {
                "variant": variant,
                **{f: first[f] for f in _factor_columns(group, factors)},
                "activation": activation,
                **_pooled(group),
                "runs_wall_s": float(numeric(group, "runs_wall_s").sum()),
                "epoch": int(numeric(group, "epoch").max()),
                "published": PUBLISHED if published else "",
            }
        )
    return pd.DataFrame(rows)


def collapse_curves(selected: pd.DataFrame) -> pd.DataFrame:
    """Per variant and epoch: the pooled collapse fraction of the selected trials."""
    if selected.empty or "collapse_fraction" not in selected:
        return pd.DataFrame()
    rows = [
        {"variant": variant, "epoch": epoch, **_pooled(group)}
        for (variant, epoch), group in selected.groupby(["variant", "epoch"], sort=False)
    ]
    return pd.DataFrame(rows)


def collapse_thresholds(
    views: Mapping[str, Mapping[str, Any]],
    epochs: Mapping[str, Any] | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
) -> pd.DataFrame:
    """Per variant (its best run's selected model, saved at `epochs[variant]`): the
    fraction of runs whose output std over the validation inputs is below each threshold
    — how much the count depends on the criterion."""
    rows = []
    for variant, arrays in views.items():
        stds = arrays.get("runs/output_std")
        if stds is None:
            continue
        stds = np.asarray(stds, dtype=float)
        row = {"variant": variant, "epoch": (epochs or {}).get(variant), "runs": len(stds)}
        for threshold in thresholds:
            row[threshold_column(threshold)] = float(np.mean(stds < threshold))
        rows.append(row)
    return pd.DataFrame(rows)


def threshold_column(threshold: float) -> str:
    return f"below_{threshold:.0e}"


def collapse_sentences(
    table: pd.DataFrame, collapse_std: Any, curves: pd.DataFrame | None = None
) -> list[str]:
    """The criterion; per variant its fraction and interval (ReLU's beside the published
    figure, saying whether the interval lies above 0.9), how it moved from the first
    epoch, and the wall time."""
    criterion = "the configured collapse_std" if h.is_missing(collapse_std) else collapse_std
    sentences = [
        "Collapsed: a net whose output standard deviation over the validation inputs is "
        f"below {criterion} — it computes a constant function."
    ]
    for row in table.itertuples():
        text = (
            f"{row.variant}: {row.collapsed_runs:,} of {row.runs:,} runs collapsed after "
            f"epoch {row.epoch}, fraction {row.collapse_fraction:.3f} "
            f"(95 % interval {row.collapse_low:.3f}–{row.collapse_high:.3f})"
            f"{_trend(curves, row.variant)}; the {row.runs:,} runs trained in "
            f"{row.runs_wall_s:,.1f} s."
        )
        if row.published:
            above = "lies" if row.collapse_low > PUBLISHED_LEVEL else "does not lie"
            text += f" Published: {row.published}; this interval {above} above 0.9."
        sentences.append(text)
    return sentences


def _trend(curves: pd.DataFrame | None, variant: str) -> str:
    """', from 0.798 after epoch 1' where the fraction moved (nets still leaving the
    criterion are slow, not dead)."""
    if curves is None or curves.empty:
        return ""
    mine = curves[curves["variant"] == variant].sort_values("epoch")
    if len(mine) < 2 or mine["collapsed_runs"].iloc[0] == mine["collapsed_runs"].iloc[-1]:
        return ""
    first = mine.iloc[0]
    return f", from {first['collapse_fraction']:.3f} after epoch {int(first['epoch'])}"


# --------------------------------------------------------- iterations to fit
def fit_runs(final: pd.DataFrame, factors: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run: iterations until its selected trial fit the training set (the
    steps trained, i.e. the cap, where it never did) and whether it fit."""
    if final.empty or "iterations_to_fit" not in final:
        return pd.DataFrame()
    keys = ["variant", *_factor_columns(final, factors), "strategy", "seed"]
    runs = final[keys].copy()
    runs["iterations"] = numeric(final, "iterations_to_fit")
    runs["fitted"] = final["fitted"].map(as_bool) if "fitted" in final else True
    return runs.dropna(subset=["iterations"]).reset_index(drop=True)


def as_bool(value: Any) -> bool:
    """trials.csv's booleans, read back as bool or as the text 'True'/'False'."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) and not h.is_missing(value)


def fit_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant: mean, std, min and max iterations to fit over runs, runs fitted of
    runs, and the cap where some run never fit; sorted ascending by the mean."""
    if runs.empty:
        return pd.DataFrame()
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        iterations = group["iterations"]
        unfitted = iterations[~group["fitted"]]
        rows.append(
            {
                "variant": variant,
                "mean": float(iterations.mean()),
                "std": float(iterations.std()) if len(group) > 1 else np.nan,
                "min": float(iterations.min()),
                "max": float(iterations.max()),
                "fitted_runs": int(group["fitted"].sum()),
                "runs": len(group),
                "cap": float(unfitted.max()) if len(unfitted) else np.nan,
            }
        )
    table = pd.DataFrame(rows).sort_values("mean", kind="stable", ignore_index=True)
    table["never_fit"] = table["fitted_runs"] == 0
    return table


def fit_sentences(table: pd.DataFrame) -> list[str]:
    order = "; ".join(f"{r.variant} {r.mean:,.0f}" for r in table.itertuples())
    sentences = [f"Mean iterations to fit, fastest first: {order}."]
    never = table[table["never_fit"]]
    partly = table[~table["never_fit"] & (table["fitted_runs"] < table["runs"])]
    if not never.empty:
        listed = "; ".join(f"{r.variant} (cap {r.cap:,.0f} iterations)" for r in never.itertuples())
        sentences.append(f"Never fit the training set within the cap, in any run: {listed}.")
    for r in partly.itertuples():
        sentences.append(
            f"{r.variant} fit in {r.fitted_runs} of {r.runs} runs; the others stopped at the "
            f"cap of {r.cap:,.0f} iterations (counted at the cap in the mean)."
        )
    if never.empty and partly.empty:
        sentences.append("Every run of every setting fit the training set.")
    return sentences


# ---------------------------------------------------------------- regression
def regression_table(final: pd.DataFrame, factors: Sequence[str] = ()) -> pd.DataFrame:
    """Per variant: the second head's final train/val regression accuracy and loss, mean
    over runs (variants without the head are absent)."""
    present = [c for c in REGRESSION if c in final]
    if final.empty or not present:
        return pd.DataFrame()
    values = final.assign(**{c: numeric(final, c) for c in present})
    values = values.dropna(subset=present, how="all")
    if values.empty:
        return pd.DataFrame()
    keys = ["variant", *_factor_columns(values, factors)]
    means = values.groupby(keys, sort=False)[present].mean()
    counts = values.groupby(keys, sort=False).size().rename("runs")
    return pd.concat([means, counts], axis=1).reset_index()


# ============================================================ what is found
@dataclass
class Pathology:
    """The pathology sections' tables and arrays (empty: no section)."""

    factors: list[str] = field(default_factory=list)
    grad_curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    grad_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    grad_ratios: pd.DataFrame = field(default_factory=pd.DataFrame)
    gradient_views: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    gradient_medians: pd.DataFrame = field(default_factory=pd.DataFrame)
    groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    boundaries: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    collapse: pd.DataFrame = field(default_factory=pd.DataFrame)
    collapse_curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    collapse_thresholds: pd.DataFrame = field(default_factory=pd.DataFrame)
    collapse_std: Any = None
    fit_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    fit: pd.DataFrame = field(default_factory=pd.DataFrame)
    regression: pd.DataFrame = field(default_factory=pd.DataFrame)


def find_pathology(cmp: CompareResults) -> Pathology:
    """Compute every pathology table the data calls for."""
    factors = cmp.factors
    selected = selected_rows(cmp.trials, cmp.runs)
    final = final_rows(selected)
    found = Pathology(factors=factors)
    found.grad_curves = grad_norm_curves(selected, factors)
    found.grad_table = grad_norm_table(found.grad_curves, factors)
    if not found.grad_table.empty:
        found.grad_ratios = first_layer_ratios(found.grad_table, factors)
    found.gradient_views = {
        v: {k: a for k, a in arrays.items() if k.startswith((GRAD_INIT, GRAD_TRAINED))}
        for v, arrays in cmp.views.items()
        if any(k.startswith(GRAD_INIT) for k in arrays)
    }
    found.gradient_medians = gradient_medians(found.gradient_views)
    levels = {v.variant.label: v.variant.levels for v in cmp.variants}
    found.groups = distribution_groups(
        {v: levels[v] for v in levels if v in found.gradient_views}, factors
    )
    found.boundaries = {
        v: arrays for v, arrays in cmp.views.items() if "boundary/probability" in arrays
    }
    found.collapse = collapse_table(final, cmp.study.fixed, factors)
    found.collapse_curves = collapse_curves(selected)
    found.collapse_thresholds = collapse_thresholds(cmp.views, view_epochs(cmp))
    found.collapse_std = cmp.study.fixed.get("collapse_std")
    found.fit_runs = fit_runs(final, factors)
    found.fit = fit_table(found.fit_runs)
    found.regression = regression_table(final, factors)
    return found


def view_epochs(cmp: CompareResults) -> dict[str, int | None]:
    """Variant → the epoch of the checkpoint its views were saved from (its best run's,
    as `load_compare` picks it), which may precede the selected epoch."""
    found = {}
    for variant in cmp.variants:
        record = variant.record
        finished = [r for r in record.runs.values() if r.best is not None] if record else []
        if finished:
            best = sorted(finished, key=lambda r: r.best.value, reverse=record.mode == "max")[0]
            found[variant.variant.label] = best.best.checkpoint_epoch
    return found


# ================================================================= figures
def grad_norm_figure(curves: pd.DataFrame) -> Figure:
    """One panel per variant on a shared log y-axis, a line per layer over epochs."""
    variants = list(dict.fromkeys(curves["variant"]))
    columns = min(len(variants), 4)
    rows = -(-len(variants) // columns)
    figure = fig.new_figure((3.6 * columns + 0.6, 3.0 * rows + 0.8))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    layers = layer_order(curves["layer"])
    colors = level_colors(layers)
    for ax, variant in zip(axes, variants, strict=False):
        mine = curves[curves["variant"] == variant]
        for layer in layers:
            line = mine[mine["layer"] == layer]
            ax.plot(line["epoch"], line["grad_norm"], color=colors[layer], lw=1.6, label=layer)
        ax.set_yscale("log")
        ax.set_title(variant, fontsize="small")
        ax.grid(alpha=0.3, which="both")
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    figure.supxlabel("epoch of the selected trial")
    figure.supylabel("weight-gradient L2 norm (mean over runs)")
    handles = [Line2D([], [], color=colors[layer], lw=1.6, label=layer) for layer in layers]
    figure.legend(handles=handles, loc="outside right upper", title="layer", fontsize="small")
    return figure


def gradient_distribution_figure(
    rows: Sequence[tuple[str, str]], views: Mapping[str, Mapping[str, Any]], title: str = ""
) -> Figure:
    """A row per (label, variant): step histograms of log10|gradient at initialization|,
    one colour per layer, on one x-axis across the figure."""
    figure = fig.new_figure((8.5, 2.3 * len(rows) + 1.0))
    axes = figure.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    per_row = [
        {
            k.removeprefix(GRAD_INIT): log_gradients(a)
            for k, a in views[variant].items()
            if k.startswith(GRAD_INIT)
        }
        for _, variant in rows
    ]
    everything = np.concatenate([v for row in per_row for v in row.values()] or [np.zeros(1)])
    bins = np.linspace(everything.min(), everything.max() + 1e-9, BINS + 1)
    layers = layer_order([layer for row in per_row for layer in row])
    colors = level_colors(layers)
    for ax, (label, _), values in zip(axes, rows, per_row, strict=True):
        for layer in layer_order(values):
            # density: layers hold 64 to 4,096 values; their shapes compare on one scale
            ax.hist(
                values[layer], bins=bins, density=True, histtype="step", color=colors[layer], lw=1.4
            )
        ax.set_title(label, fontsize="small", loc="left")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("log10 |weight gradient| at initialization (training split)")
    handles = [Line2D([], [], color=colors[layer], lw=1.4, label=layer) for layer in layers]
    figure.legend(handles=handles, loc="outside right upper", title="layer", fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def boundary_figure(boundaries: Mapping[str, Mapping[str, Any]]) -> Figure:
    """One panel per variant: P(class 1) filled in [0, 1], the 0.5 contour, and the
    training points coloured by label (blue 0, red 1)."""
    variants = list(boundaries)
    columns = min(len(variants), 4)
    rows = -(-len(variants) // columns)
    figure = fig.new_figure((3.6 * columns + 1.2, 3.4 * rows + 0.4))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    filled = None
    for ax, variant in zip(axes, variants, strict=False):
        view = boundaries[variant]
        x, y, p = view["boundary/x"], view["boundary/y"], view["boundary/probability"]
        filled = ax.contourf(x, y, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.45)
        ax.contour(x, y, p, levels=[0.5], colors="black", linewidths=1.4)
        points, labels = view["boundary/points"], view["boundary/labels"]
        for label, color in ((0, "tab:blue"), (1, "tab:red")):
            mine = labels == label
            ax.scatter(
                points[mine, 0], points[mine, 1], s=9, color=color, edgecolors="white", lw=0.3
            )
        ax.set_title(variant, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    if filled is not None:
        figure.colorbar(filled, ax=list(axes), label="P(class 1)", shrink=0.8)
    return figure


def collapse_figure(curves: pd.DataFrame) -> Figure:
    """Collapse fraction per epoch, a line per variant with its 95 % interval as a band;
    dashed: the published 0.9."""
    figure = fig.new_figure((7.5, 4.4))
    ax = figure.add_subplot()
    variants = list(dict.fromkeys(curves["variant"]))
    colors = level_colors(variants)
    for variant in variants:
        line = curves[curves["variant"] == variant]
        color = colors[variant]
        ax.plot(line["epoch"], line["collapse_fraction"], color=color, marker="o", label=variant)
        ax.fill_between(
            line["epoch"], line["collapse_low"], line["collapse_high"], color=color, alpha=0.25
        )
    ax.axhline(PUBLISHED_LEVEL, color="0.3", ls="--", lw=1.2, label="0.9 (Lu et al. 2019)")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of runs collapsed (95 % interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def fit_figure(table: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """Horizontal bars of the mean iterations to fit, sorted (fastest on top), each run a
    dot; hollow dots: runs that never fit (stopped at the cap)."""
    figure = fig.new_figure((8.5, 0.55 * len(table) + 2.0))
    ax = figure.add_subplot()
    position = {v: i for i, v in enumerate(table["variant"])}
    bars = ax.barh(list(position.values()), table["mean"], color="0.75", label="mean over runs")
    # the means as text: they span orders of magnitude, a short bar is hard to read
    ax.bar_label(bars, labels=[f"{m:,.0f}" for m in table["mean"]], padding=8, fontsize="small")
    y = runs["variant"].map(position)
    for fitted, style in ((True, {"color": "black"}), (False, {"facecolors": "none"})):
        mine = runs["fitted"] == fitted
        ax.scatter(
            runs.loc[mine, "iterations"],
            y[mine],
            s=18,
            edgecolors="black",
            zorder=3,
            label="one run" if fitted else "one run, never fit (cap)",
            **style,
        )
    ax.set_yticks(list(position.values()), labels=list(position))
    ax.invert_yaxis()
    ax.set_xlabel("gradient steps until every training example is classified right")
    ax.grid(alpha=0.3, axis="x")
    ax.margins(x=0.12)
    figure.legend(loc="outside lower center", ncols=3, fontsize="small")
    return figure


def figures(found: Pathology) -> dict[str, Figure]:
    """File name → figure of every pathology section the data has."""
    drawn = {}
    if not found.grad_curves.empty:
        drawn["grad_norms.png"] = grad_norm_figure(found.grad_curves)
    for title, rows in found.groups.items():
        drawn[_distribution_name(title)] = gradient_distribution_figure(
            rows, found.gradient_views, title
        )
    if found.boundaries:
        drawn["decision_boundaries.png"] = boundary_figure(found.boundaries)
    if not found.collapse_curves.empty:
        drawn["collapse.png"] = collapse_figure(found.collapse_curves)
    if not found.fit.empty:
        drawn["iterations_to_fit.png"] = fit_figure(found.fit, found.fit_runs)
    return drawn


def _distribution_name(title: str) -> str:
    from hpo.spec import slug

    return f"grad_distribution_{slug(title)}.png" if title else "grad_distribution.png"


def csv_tables(found: Pathology) -> dict[str, pd.DataFrame]:
    frames = {
        "grad_norms.csv": found.grad_curves,
        "grad_norm_layers.csv": found.grad_table,
        "grad_norm_ratios.csv": found.grad_ratios,
        "grad_medians.csv": found.gradient_medians,
        "collapse.csv": found.collapse,
        "collapse_epochs.csv": found.collapse_curves,
        "collapse_thresholds.csv": found.collapse_thresholds,
        "iterations_to_fit.csv": found.fit,
        "iterations_to_fit_runs.csv": found.fit_runs,
        "regression.csv": found.regression,
    }
    return {name: frame for name, frame in frames.items() if not frame.empty}


# ================================================================== render
def sections(found: Pathology, pngs: Mapping[str, bytes]) -> list[h.Section]:
    """The page's pathology sections, each only where its table is not empty."""
    parts = [
        _grad_norm_section(found, pngs),
        _distribution_section(found, pngs),
        _boundary_section(found, pngs),
        _collapse_section(found, pngs),
        _fit_section(found, pngs),
        _regression_section(found),
    ]
    return [p for p in parts if p is not None]


def _image(pngs: Mapping[str, bytes], name: str, alt: str, caption: str) -> str:
    return h.image(pngs[name], alt, caption, name)


def _grad_norm_section(found: Pathology, pngs: Mapping[str, bytes]) -> h.Section | None:
    if found.grad_table.empty:
        return None
    section = h.Section("gradient-norms", "Gradient norms")
    section.add(
        h.paragraph(
            "L2 norm of each layer's weight gradient, averaged over the sampled iterations "
            "of an epoch, for each run's selected trial; the table's norms are means over "
            "epochs and runs. first / last below 1: the input layer's gradient is smaller "
            "than the output layer's (it vanishes on the way back)."
        ),
        h.table(
            found.grad_table,
            {
                "variant": "variant",
                "first_layer": "first layer",
                "first_norm": "first-layer norm",
                "last_layer": "last layer",
                "last_norm": "last-layer norm",
                "first_over_last": "first / last",
                "first_norm_start": "first-layer norm, epoch 1",
            },
            {"first_norm": sci, "last_norm": sci, "first_over_last": sci, "first_norm_start": sci},
            table_id="grad-norm-table",
        ),
    )
    for sentence in ratio_sentences(found.grad_ratios):
        section.add(h.paragraph(sentence, "verdict"))
    section.add(
        _image(
            pngs,
            "grad_norms.png",
            "gradient norm per layer over epochs",
            "Per variant, each layer's weight-gradient norm per epoch (mean over runs' "
            "selected trials), one shared log y-axis.",
        )
    )
    return section


def _distribution_section(found: Pathology, pngs: Mapping[str, bytes]) -> h.Section | None:
    if found.gradient_medians.empty:
        return None
    section = h.Section("gradient-distributions", "Gradient distributions")
    section.add(
        h.paragraph(
            "Each layer's weight gradients of the loss on the whole training split, at "
            "initialization and at the selected checkpoint of each variant's best run. "
            "Medians of |gradient| per layer; the figures draw log10|gradient| at "
            "initialization."
        ),
        h.table(
            found.gradient_medians,
            {
                "variant": "variant",
                "layer": "layer",
                "median_init": "median |gradient| at initialization",
                "median_trained": "median |gradient| at the selected checkpoint",
            },
            {"median_init": sci, "median_trained": sci},
            table_id="grad-median-table",
        ),
    )
    for title in found.groups:
        name = _distribution_name(title)
        section.add(
            _image(
                pngs,
                name,
                f"gradient distributions {title}".strip(),
                (f"{title}: a row per level of the other factors" if title else "A row per variant")
                + "; step histograms (density) of log10|gradient| at initialization, a colour "
                "per layer, on one x-axis.",
            )
        )
    return section


def _boundary_section(found: Pathology, pngs: Mapping[str, bytes]) -> h.Section | None:
    if not found.boundaries:
        return None
    return h.Section("decision-boundaries", "Decision boundaries").add(
        _image(
            pngs,
            "decision_boundaries.png",
            "decision boundary per variant",
            "The selected model of each variant's best run: P(class 1) on a grid over the "
            "inputs (colour, 0 to 1), its 0.5 contour (black) and the training points "
            "coloured by their label (blue: class 0, red: class 1).",
        )
    )


def _collapse_section(found: Pathology, pngs: Mapping[str, bytes]) -> h.Section | None:
    if found.collapse.empty:
        return None
    section = h.Section("collapse", "Collapse")
    section.add(
        *(
            h.paragraph(s)
            for s in collapse_sentences(found.collapse, found.collapse_std, found.collapse_curves)
        )
    )
    section.add(
        h.table(
            found.collapse,
            {
                "variant": "variant",
                "epoch": "final epoch",
                "runs": "runs",
                "collapsed_runs": "collapsed",
                "collapse_fraction": "fraction",
                "collapse_low": "95 % low",
                "collapse_high": "95 % high",
                "runs_wall_s": "wall time of the runs (s)",
                "published": "published",
            },
            {c: "{:.3f}".format for c in ("collapse_fraction", "collapse_low", "collapse_high")},
            table_id="collapse-table",
        )
    )
    if not found.collapse_thresholds.empty:
        columns = {"variant": "variant", "epoch": "checkpoint epoch", "runs": "runs"}
        columns.update({threshold_column(t): f"std < {t:g}" for t in THRESHOLDS})
        section.add(
            h.paragraph(
                "The count depends on the criterion: the fraction of the best run's nets "
                "whose output std over the validation inputs is below each threshold, at "
                "the checkpoint its arrays were saved from (it may precede the final epoch)."
            ),
            h.table(
                found.collapse_thresholds,
                columns,
                {threshold_column(t): "{:.3f}".format for t in THRESHOLDS},
                table_id="collapse-thresholds",
            ),
        )
    if not found.collapse_curves.empty:
        section.add(
            _image(
                pngs,
                "collapse.png",
                "collapse fraction per epoch",
                "Fraction of runs collapsed after each epoch with its Wilson 95 % interval "
                "(band); dashed: the published 0.9.",
            )
        )
    return section


def _fit_section(found: Pathology, pngs: Mapping[str, bytes]) -> h.Section | None:
    if found.fit.empty:
        return None
    section = h.Section("iterations-to-fit", "Iterations to fit")
    section.add(
        h.paragraph(
            "Gradient steps until a pass classified the whole training set right, per run's "
            "selected trial; a run that never did counts the steps it trained (the cap). "
            "Sorted by the mean, fastest first."
        ),
        h.table(
            found.fit.assign(
                fitted=[
                    f"{a} of {b}"
                    for a, b in zip(found.fit["fitted_runs"], found.fit["runs"], strict=True)
                ]
            ),
            {
                "variant": "variant",
                "mean": "mean",
                "std": "std",
                "min": "min",
                "max": "max",
                "fitted": "runs that fit",
            },
            {c: _count for c in ("mean", "std", "min", "max")},
            table_id="fit-table",
        ),
    )
    section.add(*(h.paragraph(s, "verdict") for s in fit_sentences(found.fit)))
    section.add(
        _image(
            pngs,
            "iterations_to_fit.png",
            "iterations to fit per variant",
            "Mean iterations to fit (bars, sorted), each run a dot; hollow: never fit.",
        )
    )
    return section


def _count(value: Any) -> str:
    return "—" if h.is_missing(value) else f"{value:,.0f}"


def _regression_section(found: Pathology) -> h.Section | None:
    if found.regression.empty:
        return None
    columns = {"variant": "variant", "runs": "runs"}
    columns.update({c: c.replace("_", " ") for c in REGRESSION if c in found.regression})
    return h.Section("regression-head", "Regression head").add(
        h.paragraph(
            "The second head's regression of the object's width at the selected trial's "
            "final epoch, mean over runs; regression accuracy: |predicted − true| < the "
            "tolerance."
        ),
        h.table(
            found.regression,
            columns,
            {c: "{:.4f}".format for c in REGRESSION},
            table_id="regression-table",
        ),
    )


__all__ = [
    "Pathology",
    "boundary_figure",
    "collapse_figure",
    "collapse_table",
    "collapse_thresholds",
    "csv_tables",
    "distribution_groups",
    "figures",
    "find_pathology",
    "first_layer_ratios",
    "fit_figure",
    "fit_table",
    "grad_norm_curves",
    "grad_norm_figure",
    "grad_norm_table",
    "gradient_distribution_figure",
    "gradient_medians",
    "layer_order",
    "regression_table",
    "sections",
]

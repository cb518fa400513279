"""The report of a study that compares factors (`compare:`): which level of each factor
wins, by how much, and whether the difference is more than the noise between runs.

Each variant (one combination of levels) is an ordinary study with its own report; this
page puts them side by side: per factor a table of its variants (runs, validation and
test metrics, the hyperparameters the best run selected), paired tests over blocks of
(strategy, seed, levels of the other factors), a one-sentence verdict and the selected
trials' curves on shared axes. Sections that only some studies have (a learning-rate
range test, batch-norm parameters, per-iteration losses, a sweep over batch sizes)
appear where the data holds them. Tables here are pure (DataFrame in, DataFrame out),
figures draw what they are given, `build_compare_report` writes the page.
"""

from __future__ import annotations

import html
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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

from hpo import files
from hpo.compare import CompareResults, VariantResults, load_compare
from hpo.lr_range import (
    LrBounds,
    pick_lr_bounds,
    range_curve,
    range_test_trials,
    smooth_loss,
    usable_points,
)
from hpo.report import figures as fig
from hpo.report import html as h
from hpo.report.build import REPORT_DIR, build_report
from hpo.report.tables import min_attainable_p, paired_wilcoxon
from hpo.spec import StudyError, slug

ALPHA = 0.05
OUTCOMES = ("test_accuracy", "best_val")  # the tests' outcomes, the first one decides
# rows of the curves figure: loss and accuracy on the training and the validation split
CURVE_METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
BLOCK_KEYS = ["strategy", "seed"]  # with the other factors' levels: one paired block
MAX_LR_LINES = 8  # a variant whose trials use at most this many lr values is a grid over lr
MIN_BATCH_SIZES = 3  # batch sizes a variant's trials must try for the batch-size section
TEST_COLUMNS = [
    "outcome",
    "test",
    "level_a",
    "level_b",
    "blocks",
    "mean_a",
    "mean_b",
    "difference",
    "better",
    "statistic",
    "p_value",
    "p_adjusted",
    "significant",
    "note",
]


# ================================================================== tables
def _runs_of(cmp: CompareResults) -> pd.DataFrame:
    runs = cmp.runs
    if runs.empty:
        return pd.DataFrame(columns=["variant", *cmp.factors, *BLOCK_KEYS, "run_status"])
    return runs


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _higher_is_better(outcome: str, mode: str) -> bool:
    return outcome != "best_val" or mode == "max"


def variants_by_level(cmp: CompareResults, factor: str) -> list[VariantResults]:
    """The variants grouped in the factor's level order (study order within a level)."""
    order = cmp.levels(factor)
    return sorted(cmp.variants, key=lambda v: order.index(v.variant.levels[factor]))


def planned_runs(variant: VariantResults) -> int:
    study = variant.variant.study
    return len(study.strategies) * len(study.seeds)


def _best_run(runs: pd.DataFrame, mode: str) -> pd.Series | None:
    """The run whose selected trial has the best validation metric."""
    scored = runs.assign(_value=_numeric(runs, "best_val")).dropna(subset=["_value"])
    if scored.empty:
        return None
    return scored.sort_values("_value", ascending=mode == "min", kind="stable").iloc[0]


def selected_names(variant: VariantResults, best: pd.Series | None) -> list[str]:
    """The hyperparameters worth showing for a variant's best run: what its study searches,
    and the learning rates wherever the run's config has them (a level may set them)."""
    names = list(variant.variant.study.space)
    if best is not None:
        for name in ("lr", "lr_min"):
            if name not in names and not h.is_missing(best.get(f"config/{name}")):
                names.append(name)
    return names


def level_table(cmp: CompareResults, factor: str) -> pd.DataFrame:
    """One row per variant, in `factor`'s level order: its levels, runs finished of planned,
    mean and std over its runs (strategies × seeds) of best_val, test_accuracy and
    test_loss, and the best run by validation with its selected hyperparameters
    (`config/<name>`; NaN where another variant's names differ)."""
    runs, mode = _runs_of(cmp), cmp.record.mode
    rows = []
    for variant in variants_by_level(cmp, factor):
        mine = runs[runs["variant"] == variant.variant.label]
        row: dict[str, Any] = {**variant.variant.levels, "variant": variant.variant.label}
        row["runs_finished"] = int((mine["run_status"] == "finished").sum())
        row["runs_planned"] = planned_runs(variant)
        row["runs_with_results"] = int(_numeric(mine, "best_val").notna().sum())
        for outcome in ("best_val", "test_accuracy", "test_loss"):
            values = _numeric(mine, outcome).dropna()
            row[f"{outcome}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{outcome}_std"] = float(values.std()) if len(values) > 1 else np.nan
        best = _best_run(mine, mode)
        row["selected_strategy"] = best["strategy"] if best is not None else None
        row["selected_seed"] = int(best["seed"]) if best is not None else None
        for name in selected_names(variant, best):
            row[f"config/{name}"] = best.get(f"config/{name}") if best is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def level_means(cmp: CompareResults, factor: str, outcome: str = "test_accuracy") -> pd.DataFrame:
    """Per level of `factor` (its order), the outcome's mean over every run of that level
    (all variants of the level together) and the number of runs with a value."""
    runs = _runs_of(cmp)
    values = runs.assign(_value=_numeric(runs, outcome)).dropna(subset=["_value"])
    grouped = values.groupby(factor)["_value"]
    levels = cmp.levels(factor)
    return pd.DataFrame(
        {
            "level": levels,
            "runs": [int(grouped.count().get(level, 0)) for level in levels],
            "mean": [float(grouped.mean().get(level, np.nan)) for level in levels],
        }
    )


def paired_outcomes(cmp: CompareResults, factor: str, outcome: str) -> pd.DataFrame:
    """The outcome per block (strategy, seed, other factors' levels) × level of `factor`."""
    runs = _runs_of(cmp)
    blocks = [*BLOCK_KEYS, *(f for f in cmp.factors if f != factor)]
    frame = runs.assign(_value=_numeric(runs, outcome)).dropna(subset=["_value"])
    if frame.empty:
        return pd.DataFrame(columns=cmp.levels(factor))
    wide = frame.pivot_table(index=blocks, columns=factor, values="_value", aggfunc="first")
    return wide.reindex(columns=cmp.levels(factor))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN). By hand: scipy offers only
    Benjamini–Hochberg, and one function is not worth statsmodels."""
    values = np.asarray(p_values, float)
    adjusted = np.full_like(values, np.nan)
    known = np.flatnonzero(~np.isnan(values))
    order = known[np.argsort(values[known], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def _wilcoxon(wide: pd.DataFrame, a: str, b: str, higher: bool, alpha: float) -> dict[str, Any]:
    pair = wide[[a, b]].dropna()
    n, _, mean_diff, better, statistic, p_value = paired_wilcoxon(pair, a, b, higher)
    testable = min_attainable_p(n) < alpha if n else False
    return {
        "test": "wilcoxon",
        "level_a": a,
        "level_b": b,
        "blocks": n,
        "mean_a": float(pair[a].mean()) if n else np.nan,
        "mean_b": float(pair[b].mean()) if n else np.nan,
        "difference": mean_diff,
        "better": better,
        "statistic": statistic,
        "p_value": p_value,
        "note": "" if testable else f"not testable: {n} pairs",
    }


def friedman_floor(blocks: int, levels: int) -> float:
    """The smallest p-value a Friedman test can give: every block ranks the levels alike,
    χ² = n(k − 1)."""
    from scipy import stats

    if blocks < 1:
        return math.nan
    return float(stats.chi2.sf(blocks * (levels - 1), levels - 1))


def _friedman(wide: pd.DataFrame, levels: list[str], alpha: float) -> dict[str, Any]:
    from scipy import stats

    complete = wide[levels].dropna()
    n = len(complete)
    statistic, p_value = np.nan, np.nan
    if n >= 2:
        result = stats.friedmanchisquare(*(complete[level] for level in levels))
        statistic, p_value = float(result.statistic), float(result.pvalue)
    testable = n >= 2 and friedman_floor(n, len(levels)) < alpha
    return {
        "test": "friedman",
        "level_a": "all",
        "level_b": None,
        "blocks": n,
        "statistic": statistic,
        "p_value": p_value,
        "note": "" if testable else f"not testable: {n} complete blocks",
    }


def factor_tests(cmp: CompareResults, factor: str, alpha: float = ALPHA) -> pd.DataFrame:
    """Paired tests of `factor`'s levels over blocks of (strategy, seed, the other factors'
    levels), for test_accuracy and best_val: Wilcoxon signed-rank for two levels; with
    three or more, Friedman over the complete blocks and pairwise Wilcoxon tests with
    Holm's correction (`p_adjusted`). `significant`: p_adjusted < alpha where the blocks
    are enough for that (`note` says "not testable: n pairs" otherwise)."""
    levels = cmp.levels(factor)
    rows = []
    for outcome in OUTCOMES:
        wide = paired_outcomes(cmp, factor, outcome)
        higher = _higher_is_better(outcome, cmp.record.mode)
        pairs = [_wilcoxon(wide, a, b, higher, alpha) for a, b in itertools.combinations(levels, 2)]
        for pair, adjusted in zip(pairs, holm([p["p_value"] for p in pairs]), strict=True):
            pair["p_adjusted"] = adjusted
        found = ([_friedman(wide, levels, alpha)] if len(levels) >= 3 else []) + pairs
        for row in found:
            row.setdefault("p_adjusted", row["p_value"])
            row["significant"] = bool(not row["note"] and row["p_adjusted"] < alpha)
            rows.append({"outcome": outcome, **row})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def factor_verdict(
    cmp: CompareResults, factor: str, tests: pd.DataFrame | None = None, alpha: float = ALPHA
) -> str:
    """One sentence: the level with the best mean test accuracy, its lead over the
    runner-up, and the paired test's p-value and blocks, saying plainly when that is not
    significant or not testable."""
    tests = factor_tests(cmp, factor, alpha) if tests is None else tests
    means = level_means(cmp, factor).dropna(subset=["mean"])
    if means.empty:
        return f"{factor}: no run has a test accuracy yet, so no level can be called best."
    ranked = means.sort_values("mean", ascending=False, kind="stable")
    winner = ranked.iloc[0]
    lead = f"{factor}: {winner['level']} has the best mean test accuracy, {winner['mean']:.4f} "
    lead += f"({winner['runs']} runs)"
    if len(ranked) < 2:
        return lead + "; no other level has a test accuracy yet to compare it with."
    second = ranked.iloc[1]
    gap = winner["mean"] - second["mean"]
    lead += (
        f", tied with {second['level']}"
        if math.isclose(gap, 0.0, abs_tol=5e-5)
        else f", {gap:.4f} above the runner-up {second['level']} ({second['mean']:.4f})"
    )
    return lead + _test_clause(tests, winner["level"], second["level"], alpha) + "."


def _test_clause(tests: pd.DataFrame, a: str, b: str, alpha: float) -> str:
    pairwise = tests[(tests["outcome"] == "test_accuracy") & (tests["test"] == "wilcoxon")]
    match = pairwise[
        ((pairwise["level_a"] == a) & (pairwise["level_b"] == b))
        | ((pairwise["level_a"] == b) & (pairwise["level_b"] == a))
    ]
    if match.empty:
        return ""
    row = match.iloc[0]
    n = int(row["blocks"])
    if row["note"]:
        return f"; paired Wilcoxon test over {n} blocks: {row['note']}, too few for p < {alpha:g}"
    holm_note = ", Holm-adjusted" if len(pairwise) > 1 else ""
    p = row["p_adjusted"]
    verdict = (
        f"significant at {alpha:g}" if row["significant"] else f"not significant (p ≥ {alpha:g})"
    )
    return f"; paired Wilcoxon test over {n} blocks: p = {p:.3g}{holm_note}, {verdict}"


def curve_means(curves: pd.DataFrame, factor: str) -> pd.DataFrame:
    """Per level and epoch, the mean over runs of their selected trials' curves (runs
    whose selected trial stopped earlier drop out of the later epochs) and how many."""
    if curves.empty:
        return pd.DataFrame(columns=[factor, "epoch", "runs", *CURVE_METRICS])
    values = curves.assign(**{m: _numeric(curves, m) for m in CURVE_METRICS})
    grouped = values.groupby([factor, "epoch"], sort=True)
    means = grouped[list(CURVE_METRICS)].mean()
    return means.assign(runs=grouped.size()).reset_index()


def bn_values(views_by_variant: Mapping[str, Mapping[str, Any]], parameter: str) -> pd.DataFrame:
    """Every value of the batch-norm parameter (gamma or beta) per layer and variant, from
    the views' `bn_<parameter>/<layer>` arrays; layers in the order stored."""
    prefix = f"bn_{parameter}/"
    frames = []
    for variant, views in views_by_variant.items():
        for key, array in views.items():
            if key.startswith(prefix):
                values = np.asarray(array, float).ravel()
                frames.append(
                    pd.DataFrame({"variant": variant, "layer": key[len(prefix) :], "value": values})
                )
    if not frames:
        return pd.DataFrame(columns=["variant", "layer", "value"])
    return pd.concat(frames, ignore_index=True)


def range_bounds(curve: pd.DataFrame) -> pd.DataFrame:
    """lr bounds per variant from a range-test curve (`range_curve` with a `variant`
    column): all its runs pooled, and each strategy × seed run alone (what a level's
    `lr_from` takes); `note` says why a row has none."""
    rows = []
    for variant, mine in curve.groupby("variant", sort=False):
        scopes = [("all runs", None, None, mine)]
        scopes += [(f"{s} seed {k}", s, k, run) for (s, k), run in mine.groupby(BLOCK_KEYS)]
        for scope, strategy, seed, points in scopes:
            row = {"variant": variant, "scope": scope, "strategy": strategy, "seed": seed}
            try:
                bounds = pick_lr_bounds(points["lr"], points["loss"])
                row.update(lr_min=bounds.lr_min, lr_max=bounds.lr_max, note="")
            except ValueError as error:
                row.update(lr_min=np.nan, lr_max=np.nan, note=str(error))
            rows.append(row)
    columns = ["variant", "scope", "strategy", "seed", "lr_min", "lr_max", "note"]
    return pd.DataFrame(rows, columns=columns)


def lr_lines(cmp: CompareResults) -> dict[str, tuple[str, pd.DataFrame]]:
    """Per variant, loss curves to colour by each trial's configured lr: its recorded
    mini-batch losses against the iteration where it has them, else train_loss against
    the epoch where it searches lr over at most MAX_LR_LINES values (a grid over lr, e.g.
    full-batch GD, which records no iterations). Range-test trials are left out (their
    lr changes on purpose; they have their own section)."""
    trials = cmp.trials
    if trials.empty or "config/lr" not in trials:
        return {}
    keys = ["variant", "strategy", "seed", "trial_id"]
    ordinary = trials.drop(range_test_trials(trials).index)
    configured = ordinary.groupby(keys, sort=False)["config/lr"].first().rename("config_lr")
    found = {}
    for variant in cmp.variants:
        label = variant.variant.label
        iterations = cmp.iterations
        if not iterations.empty:
            iterations = iterations[iterations["variant"] == label]
            iterations = iterations.join(configured, on=keys, how="inner")
        if not iterations.empty:
            lines = iterations[[*keys, "iteration", "loss", "config_lr"]]
            found[label] = ("iteration", running_mean(lines, keys, "iteration"))
            continue
        epochs = ordinary[ordinary["variant"] == label]
        searched = "lr" in variant.variant.study.space  # not an lr that differs by seed
        if searched and 2 <= epochs["config/lr"].nunique() <= MAX_LR_LINES:
            frame = epochs.assign(loss=_numeric(epochs, "train_loss")).join(configured, on=keys)
            found[label] = ("epoch", frame[[*keys, "epoch", "loss", "config_lr"]])
    return found


RUNNING_SHARE = 0.01  # per-iteration losses are drawn as a running mean over 1% of a trial


def running_mean(lines: pd.DataFrame, keys: list[str], x: str) -> pd.DataFrame:
    """Each trial's per-iteration loss as a running mean over RUNNING_SHARE of its recorded
    iterations (at least 1): one sample's loss (batch size 1) varies too much to read."""
    ordered = lines.sort_values([*keys, x], kind="stable")
    losses = ordered.groupby(keys, sort=False)["loss"]
    sizes = losses.transform("size")
    smoothed = [
        group.rolling(max(1, int(len(group) * RUNNING_SHARE)), min_periods=1).mean()
        for _, group in losses
    ]
    ordered = ordered.assign(loss=pd.concat(smoothed) if smoothed else ordered["loss"])
    return ordered.assign(window=(sizes * RUNNING_SHARE).astype(int).clip(lower=1))


def batch_size_table(
    trials: pd.DataFrame, factors: Sequence[str] = (), full_batch: float | None = None
) -> pd.DataFrame:
    """The final epoch of every trial of the variants whose trials try at least
    MIN_BATCH_SIZES batch sizes: batch size, log2 of it, train_loss and the
    generalization gap (train_accuracy − val_accuracy). Batch size 0 (full-batch gradient
    descent) counts as `full_batch` examples, the training split's size (left out where
    that is unknown)."""
    columns = [
        *factors,
        "variant",
        "strategy",
        "seed",
        "trial_id",
        "epoch",
        "batch_size",
        "log2_batch_size",
        "train_loss",
        "train_accuracy",
        "val_accuracy",
        "gap",
    ]
    if trials.empty or "config/batch_size" not in trials:
        return pd.DataFrame(columns=columns)
    ordinary = trials.drop(range_test_trials(trials).index)
    sizes = ordinary.groupby("variant")["config/batch_size"].nunique()
    chosen = ordinary[ordinary["variant"].isin(sizes.index[sizes >= MIN_BATCH_SIZES])]
    last = (
        chosen.sort_values("epoch", kind="stable")
        .groupby(["variant", "strategy", "seed", "trial_id"], sort=False)
        .tail(1)
    )
    batch = _numeric(last, "config/batch_size")
    batch = batch.mask(batch == 0, np.nan if full_batch is None else full_batch)
    table = last.assign(
        batch_size=batch,
        log2_batch_size=np.log2(batch.where(batch > 0)),
        train_loss=_numeric(last, "train_loss"),
        train_accuracy=_numeric(last, "train_accuracy"),
        val_accuracy=_numeric(last, "val_accuracy"),
    )
    table["gap"] = table["train_accuracy"] - table["val_accuracy"]
    table = table.dropna(subset=["log2_batch_size"])
    return table.sort_values(["variant", "batch_size"], kind="stable", ignore_index=True)[columns]


def batch_size_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant and batch size: the trials' mean final train_loss and gap."""
    grouped = table.groupby(["variant", "log2_batch_size"], sort=True)
    means = grouped[["train_loss", "gap"]].mean()
    return means.assign(trials=grouped.size()).reset_index()


def reference_gaps(curves: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Per variant (other than `exclude`), the generalization gap at the last epoch of
    each run's selected trial, averaged over its runs: the lines the batch sizes are
    compared with."""
    if curves.empty:
        return pd.DataFrame(columns=["variant", "gap", "runs"])
    last = (
        curves.sort_values("epoch", kind="stable")
        .groupby(["variant", *BLOCK_KEYS], sort=False)
        .tail(1)
    )
    last = last[~last["variant"].isin(list(exclude))]
    gaps = last.assign(gap=_numeric(last, "train_accuracy") - _numeric(last, "val_accuracy"))
    grouped = gaps.dropna(subset=["gap"]).groupby("variant", sort=False)["gap"]
    return grouped.agg(gap="mean", runs="size").reset_index()


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
                ax.plot(
                    run["epoch"], _numeric(run, metric), color=colors[level], lw=0.8, alpha=0.35
                )
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


# =================================================================== build
@dataclass
class Sections:
    """What the page shows beyond the factors, found in the data (empty: no section)."""

    range_curve: pd.DataFrame = field(default_factory=pd.DataFrame)
    range_bounds: pd.DataFrame = field(default_factory=pd.DataFrame)
    bn_views: dict[str, dict[str, Any]] = field(default_factory=dict)
    lr_lines: dict[str, tuple[str, pd.DataFrame]] = field(default_factory=dict)
    batch_sizes: pd.DataFrame = field(default_factory=pd.DataFrame)
    reference_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)


def special_sections(cmp: CompareResults) -> Sections:
    """The special sections the data calls for: range-test trials → the range test;
    views with bn_ arrays → violins; recorded iterations or a grid over lr → loss by lr;
    a variant trying ≥ MIN_BATCH_SIZES batch sizes → the batch-size sweep."""
    found = Sections()
    tests = range_test_trials(cmp.trials)
    if not tests.empty:
        curves = [
            range_curve(rows).assign(variant=label)
            for label, rows in tests.groupby("variant", sort=False)
        ]
        found.range_curve = pd.concat(curves, ignore_index=True)
        found.range_bounds = range_bounds(found.range_curve)
    found.bn_views = {
        label: {k: v for k, v in views.items() if k.startswith("bn_")}
        for label, views in cmp.views.items()
        if any(k.startswith("bn_") for k in views)
    }
    found.lr_lines = lr_lines(cmp)
    found.batch_sizes = batch_size_table(cmp.trials, cmp.factors, _train_size(cmp))
    if not found.batch_sizes.empty:
        # a variant that only runs range tests has no gap worth comparing with
        only_tests = set(tests["variant"]) - set(cmp.trials.drop(tests.index)["variant"])
        exclude = [*found.batch_sizes["variant"].unique(), *only_tests]
        found.reference_gaps = reference_gaps(cmp.curves, exclude)
    return found


def _train_size(cmp: CompareResults) -> float | None:
    """The training split's size as a run recorded it: a full batch."""
    for variant in cmp.variants:
        for run in variant.record.runs.values() if variant.record else []:
            if run.data_sizes.get("train"):
                return float(run.data_sizes["train"])
    return None


def build_compare_report(study_dir: str | Path) -> Path:
    """Each started variant's own report, then `<study_dir>/report/index.html` comparing
    them (figures as PNG and tables as CSV beside it); returns the page's path."""
    cmp = load_compare(study_dir)
    built = {v.variant.label: _build_variant(v) for v in cmp.variants}
    out = cmp.directory / REPORT_DIR
    tables = {f: (level_table(cmp, f), factor_tests(cmp, f)) for f in cmp.factors}
    found = special_sections(cmp)
    for name, frame in _csv_tables(cmp, tables, found).items():
        files.write_csv(out / name, frame)
    pngs = {name: fig.png_bytes(figure) for name, figure in _figures(cmp, found).items()}
    for name, data in pngs.items():
        files.write_bytes(out / name, data)
    return files.write_text(out / "index.html", _render(cmp, tables, found, built, pngs))


def _build_variant(variant: VariantResults) -> str | None:
    """Build the variant's own report; None when built, else why not (one line)."""
    if variant.record is None:
        return "not started"
    try:
        build_report(variant.directory)
    except StudyError as error:
        return str(error)
    return None


def _csv_tables(
    cmp: CompareResults, tables: dict[str, Any], found: Sections
) -> dict[str, pd.DataFrame]:
    names = {"best_val": f"best_{cmp.record.metric}"}
    names.update({f"best_val_{s}": f"best_{cmp.record.metric}_{s}" for s in ("mean", "std")})
    frames = {"runs.csv": _runs_of(cmp)}
    for factor, (levels, tests) in tables.items():
        frames[f"levels_{slug(factor)}.csv"] = levels
        frames[f"factor_tests_{slug(factor)}.csv"] = tests.replace({"outcome": names})
    if not found.range_curve.empty:
        frames["lr_range.csv"] = found.range_curve
        frames["lr_bounds.csv"] = found.range_bounds
    if not found.batch_sizes.empty:
        frames["batch_size.csv"] = found.batch_sizes
    return {name: frame.rename(columns=names) for name, frame in frames.items()}


def _file_names(cmp: CompareResults) -> dict[str, str]:
    """Variant label → the name its figures carry (its folder's)."""
    return {v.variant.label: v.variant.slug for v in cmp.variants}


def _figures(cmp: CompareResults, found: Sections) -> dict[str, Figure]:
    names = _file_names(cmp)
    figures = {
        f"curves_{slug(f)}.png": factor_curves_figure(cmp.curves, f, cmp.levels(f))
        for f in cmp.factors
    }
    for label, bounds in _pooled_bounds(found).items():
        curve = found.range_curve[found.range_curve["variant"] == label]
        figures[f"lr_range_{names[label]}.png"] = range_test_figure(
            curve, bounds, f"{label}: range test"
        )
    if found.bn_views:
        for parameter in ("gamma", "beta"):
            figures[f"bn_{parameter}.png"] = bn_violin_figure(found.bn_views, parameter)
    for label, (x, lines) in found.lr_lines.items():
        figures[f"lr_lines_{names[label]}.png"] = iteration_figure(lines, x, label)
    for label, table in (
        found.batch_sizes.groupby("variant", sort=False) if not found.batch_sizes.empty else []
    ):
        figures[f"batch_size_{names[label]}.png"] = batch_size_figure(
            table, found.reference_gaps, label
        )
    return figures


def _pooled_bounds(found: Sections) -> dict[str, LrBounds | None]:
    if found.range_bounds.empty:
        return {}
    pooled = found.range_bounds[found.range_bounds["scope"] == "all runs"]
    return {
        r.variant: None if h.is_missing(r.lr_min) else LrBounds(float(r.lr_min), float(r.lr_max))
        for r in pooled.itertuples()
    }


# ------------------------------------------------------------------ render
def _mean_std(mean: Any, std: Any) -> str:
    if h.is_missing(mean):
        return "n/a"
    return f"{mean:.4f}" + ("" if h.is_missing(std) else f" ± {std:.4f}")


def _p(value: Any) -> str:
    return "n/a" if h.is_missing(value) else f"{value:.3g}"


def _link(href: str, text: str) -> str:
    """A relative link to a variant's own report (the only markup built here; escaped)."""
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _variant_status(variant: VariantResults) -> str:
    if variant.record is None:
        return "not started"
    statuses = Counter(r.status for r in variant.record.runs.values())
    finished = statuses.pop("finished", 0)
    others = ", ".join(f"{n} {status}" for status, n in statuses.items())
    text = f"{finished} of {planned_runs(variant)} runs finished" + (
        f" ({others})" if others else ""
    )
    return text + ("" if not variant.trials.empty else "; no trial reported yet")


def _banner(cmp: CompareResults) -> tuple[str, str]:
    total = len(cmp.variants)
    unstarted = sum(v.record is None for v in cmp.variants)
    unfinished = sum(
        v.record is not None
        and (
            len(v.record.runs) < planned_runs(v)
            or any(r.status != "finished" for r in v.record.runs.values())
        )
        for v in cmp.variants
    )
    if unstarted or unfinished:
        return "warn", (
            f"Not finished: {total - unstarted - unfinished} of {total} variants complete, "
            f"{unfinished} partly run, {unstarted} not started; this page compares the "
            "results saved so far."
        )
    return "ok", f"Complete: every run of all {total} variants finished."


def _header(cmp: CompareResults) -> list[tuple[str, str]]:
    study, record = cmp.study, cmp.record
    budget = study.budget
    levels = "; ".join(f"{f}: {', '.join(cmp.levels(f))}" for f in cmp.factors)
    return [
        ("study", f"{study.name} — {study.description or 'no description'}"),
        ("study file", f"{record.study_file} (hash {record.study_hash[:12]})"),
        ("trainable", study.trainable),
        ("dataset", study.dataset.name),
        ("compared factors", levels),
        ("level settings", _level_settings(cmp) or "each level is the factor's value"),
        ("variants", f"{len(cmp.variants)}: every combination of the levels"),
        ("metric", f"{record.metric} ({record.mode}imize) on the validation split"),
        ("strategies", ", ".join(study.strategies)),
        ("seeds", ", ".join(map(str, study.seeds))),
        (
            "budget",
            f"{budget.total_epochs} epochs per strategy × seed run of each variant; "
            f"trials up to {budget.max_epochs} epochs",
        ),
    ]


def _level_settings(cmp: CompareResults) -> str:
    parts = []
    for factor in cmp.factors:
        for level in cmp.study.compare[factor]:
            added = [f"{k}={v}" for k, v in level.fixed.items()] + [
                f"searches {k}" for k in level.space
            ]
            added += [
                f"{link} {getattr(level, link)}"
                for link in ("warm_start", "lr_from")
                if getattr(level, link) is not None
            ]
            if added:
                parts.append(f"{factor}={level.name}: {', '.join(added)}")
    return "; ".join(parts)


def _render(
    cmp: CompareResults,
    tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
    found: Sections,
    built: dict[str, str | None],
    pngs: dict[str, bytes],
) -> str:
    metric = cmp.record.metric
    study = h.Section("study", "Study").add(h.facts(_header(cmp)), _variants_table(cmp))
    sections = [study]
    for factor, (levels, tests) in tables.items():
        section = h.Section(f"factor-{slug(factor)}", f"Factor: {factor}")
        section.add(*_factor_parts(cmp, factor, levels, tests, pngs, metric))
        sections.append(section)
    sections += _special_parts(found, pngs, _file_names(cmp))
    links = h.Section("variant-reports", "Each variant's own report")
    links.add(
        h.paragraph(
            "Every variant is an ordinary study; its own report has the strategies' "
            "leaderboard, anytime curves, statistics and hyperparameter analysis."
        )
    )
    items = "".join(
        "<li>"
        + (
            _link(
                f"../{v.directory.relative_to(cmp.directory).as_posix()}/{REPORT_DIR}/index.html",
                v.variant.label,
            )
            if built[v.variant.label] is None
            else html.escape(f"{v.variant.label}: no report ({built[v.variant.label]})")
        )
        + "</li>"
        for v in cmp.variants
    )
    links.add(f'<ul id="variant-links">{items}</ul>')
    sections.append(links)
    return h.page(
        f"Compared study: {cmp.study.name}",
        f"{len(cmp.factors)} compared factor{'s' * (len(cmp.factors) != 1)}, "
        f"{len(cmp.variants)} variants; generated by hpo",
        _banner(cmp),
        sections,
        "Each variant's numbers come from its own study.json and trials.csv; tables are "
        "written beside this page as CSV.",
    )


def _variants_table(cmp: CompareResults) -> str:
    frame = pd.DataFrame(
        {
            "variant": [v.variant.label for v in cmp.variants],
            "folder": [v.directory.relative_to(cmp.directory).as_posix() for v in cmp.variants],
            "status": [_variant_status(v) for v in cmp.variants],
        }
    )
    return h.table(frame, table_id="variants-table")


def _factor_parts(
    cmp: CompareResults,
    factor: str,
    levels: pd.DataFrame,
    tests: pd.DataFrame,
    pngs: dict[str, bytes],
    metric: str,
) -> list[str]:
    config = [c for c in levels.columns if c.startswith("config/")]
    shown = levels.assign(
        runs=[
            f"{f} of {p}"
            for f, p in zip(levels["runs_finished"], levels["runs_planned"], strict=True)
        ],
        best_val=[
            _mean_std(m, s)
            for m, s in zip(levels["best_val_mean"], levels["best_val_std"], strict=True)
        ],
        test_accuracy=[
            _mean_std(m, s)
            for m, s in zip(levels["test_accuracy_mean"], levels["test_accuracy_std"], strict=True)
        ],
        test_loss=[
            _mean_std(m, s)
            for m, s in zip(levels["test_loss_mean"], levels["test_loss_std"], strict=True)
        ],
        selected=[
            "—"
            if h.is_missing(s)
            else f"{s} seed {int(k)}: "
            + ", ".join(
                f"{c.removeprefix('config/')}={h.plain(row[c])}"
                for c in config
                if not h.is_missing(row[c])
            )
            for s, k, row in zip(
                levels["selected_strategy"],
                levels["selected_seed"],
                levels.to_dict("records"),
                strict=True,
            )
        ],
    )
    columns = {f: f for f in cmp.factors}
    columns.update(
        {
            "runs": "runs finished",
            "runs_with_results": "runs with results",
            "best_val": f"best {metric} (mean ± std over runs)",
            "test_accuracy": "test_accuracy (mean ± std)",
            "test_loss": "test_loss (mean ± std)",
            "selected": "best run by validation: its selected hyperparameters",
        }
    )
    name = slug(factor)
    tests_shown = tests.assign(
        outcome=tests["outcome"].replace({"best_val": f"best {metric}"}),
        significant=["yes" if s else "no" for s in tests["significant"]],
    )
    return [
        h.paragraph(
            f"One row per variant, grouped by {factor}. Means and standard deviations are over "
            "the variant's strategy × seed runs, each contributing its selected trial (chosen on "
            f"validation {metric} only) and that trial's test measurement. The last column is "
            "the variant's best run by validation and the hyperparameters it selected: the "
            "tuned values of this level."
        ),
        h.table(shown, columns, table_id=f"levels-{name}"),
        h.paragraph(factor_verdict(cmp, factor, tests), "verdict"),
        h.heading("Paired tests"),
        h.paragraph(
            f"Blocks pair runs that differ only in {factor}: same strategy, seed and levels of "
            "the other factors. Two levels: Wilcoxon signed-rank test; three or more: Friedman "
            "test over the blocks complete for every level, then pairwise Wilcoxon tests with "
            f"Holm's correction (adjusted p). 'Not testable': too few blocks for any p < {ALPHA:g} "
            "(a Wilcoxon test needs 6 pairs)."
        ),
        h.table(
            tests_shown,
            {
                "outcome": "outcome",
                "test": "test",
                "level_a": "a",
                "level_b": "b",
                "blocks": "blocks",
                "mean_a": "mean a",
                "mean_b": "mean b",
                "difference": "mean difference a − b",
                "better": "better",
                "p_value": "p",
                "p_adjusted": "adjusted p",
                "significant": f"significant at {ALPHA:g}",
                "note": "note",
            },
            {
                "p_value": _p,
                "p_adjusted": _p,
                "difference": lambda v: "n/a" if h.is_missing(v) else f"{v:+.4f}",
            },
            table_id=f"tests-{name}",
        ),
        h.image(
            pngs[f"curves_{name}.png"],
            f"learning curves per level of {factor}",
            "Loss and accuracy on the training and the validation split (rows) per epoch of "
            "each run's selected trial (thin) and their mean over runs (thick), one column "
            f"per level of {factor}; each row shares its y-axis. Test accuracy is measured "
            "once, on the selected model (table above).",
            f"curves_{name}.png",
        ),
    ]


def _special_parts(
    found: Sections, pngs: dict[str, bytes], names: dict[str, str]
) -> list[h.Section]:
    sections = []
    if not found.range_curve.empty:
        section = h.Section("lr-range-test", "Learning-rate range test")
        section.add(
            h.paragraph(
                "Range-test trials raise the learning rate exponentially while they train. Each "
                "point is one epoch: its training loss at the geometric mean of the lr it "
                "started and ended at. The bounds are picked on the loss smoothed by a rolling "
                "median: lr_max where it is lowest, lr_min where it has fallen by a tenth of its "
                "whole fall below the starting plateau; points after the loss diverges are ignored."
            ),
            h.table(
                found.range_bounds,
                {
                    "variant": "variant",
                    "scope": "runs",
                    "lr_min": "lr_min",
                    "lr_max": "lr_max",
                    "note": "note",
                },
                {"lr_min": _p, "lr_max": _p},
                table_id="lr-bounds-table",
            ),
        )
        for label in found.range_curve["variant"].unique():
            name = f"lr_range_{names[label]}.png"
            section.add(
                h.image(
                    pngs[name],
                    f"range test of {label}",
                    f"{label}: training loss against the learning rate (log axis), "
                    "lr_min and lr_max marked.",
                    name,
                )
            )
        sections.append(section)
    if found.bn_views:
        section = h.Section("batch-norm", "Batch-norm parameters")
        section.add(
            h.paragraph(
                "The learned batch-norm scale (gamma) and shift (beta) of every "
                "channel, per layer, in the selected model of each variant's best "
                "run; one violin per variant and layer, on one y-axis."
            )
        )
        for parameter in ("gamma", "beta"):
            name = f"bn_{parameter}.png"
            section.add(
                h.image(
                    pngs[name],
                    f"batch-norm {parameter} per layer",
                    f"Batch-norm {parameter} per layer and variant.",
                    name,
                )
            )
        sections.append(section)
    if found.lr_lines:
        section = h.Section("learning-rates", "Loss by learning rate")
        section.add(
            h.paragraph(
                "Training loss of every trial, coloured by its configured learning "
                "rate: against the mini-batch iteration where trials recorded it "
                "(SGD), else against the epoch (e.g. full-batch gradient descent)."
            )
        )
        for label, (x, _) in found.lr_lines.items():
            name = f"lr_lines_{names[label]}.png"
            section.add(
                h.image(
                    pngs[name],
                    f"loss by learning rate, {label}",
                    f"{label}: training loss against the {x}, one line per trial, "
                    "colour: its configured lr.",
                    name,
                )
            )
        sections.append(section)
    if not found.batch_sizes.empty:
        section = h.Section("batch-size", "Batch size")
        section.add(
            h.paragraph(
                "Final-epoch training loss and generalization gap (train − "
                "validation accuracy) of each trial against log2 of its batch size; "
                "dashed: the other variants' selected trials' mean gap."
            )
        )
        for label in found.batch_sizes["variant"].unique():
            name = f"batch_size_{names[label]}.png"
            section.add(
                h.image(
                    pngs[name],
                    f"batch-size sweep of {label}",
                    f"{label}: final training loss and gap against log2(batch size).",
                    name,
                )
            )
        sections.append(section)
    return sections


__all__ = [
    "ALPHA",
    "batch_size_figure",
    "batch_size_table",
    "bn_values",
    "bn_violin_figure",
    "build_compare_report",
    "curve_means",
    "factor_curves_figure",
    "factor_tests",
    "factor_verdict",
    "holm",
    "iteration_figure",
    "level_means",
    "level_table",
    "lr_lines",
    "range_bounds",
    "range_test_figure",
    "reference_gaps",
    "special_sections",
]

"""Tables of a compared study's page (pure: CompareResults or DataFrames in, DataFrames
out): each factor's levels, paired tests over (strategy, seed, other levels) blocks and the
verdict, mean curves, batch-norm values, loss by learning rate, the batch-size sweep."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hpo.compare import CompareResults, VariantResults
from hpo.lr_range import (
    pick_lr_bounds,
    range_test_trials,
)
from hpo.report import html as h
from hpo.report.tables import min_attainable_p, paired_wilcoxon

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
def runs_of(cmp: CompareResults) -> pd.DataFrame:
    runs = cmp.runs
    if runs.empty:
        return pd.DataFrame(columns=["variant", *cmp.factors, *BLOCK_KEYS, "run_status"])
    return runs


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
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
    scored = runs.assign(_value=numeric(runs, "best_val")).dropna(subset=["_value"])
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
    runs, mode = runs_of(cmp), cmp.record.mode
    rows = []
    for variant in variants_by_level(cmp, factor):
        mine = runs[runs["variant"] == variant.variant.label]
        row: dict[str, Any] = {**variant.variant.levels, "variant": variant.variant.label}
        row["runs_finished"] = int((mine["run_status"] == "finished").sum())
        row["runs_planned"] = planned_runs(variant)
        row["runs_with_results"] = int(numeric(mine, "best_val").notna().sum())
        for outcome in ("best_val", "test_accuracy", "test_loss"):
            values = numeric(mine, outcome).dropna()
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
    runs = runs_of(cmp)
    values = runs.assign(_value=numeric(runs, outcome)).dropna(subset=["_value"])
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
    runs = runs_of(cmp)
    blocks = [*BLOCK_KEYS, *(f for f in cmp.factors if f != factor)]
    frame = runs.assign(_value=numeric(runs, outcome)).dropna(subset=["_value"])
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
    values = curves.assign(**{m: numeric(curves, m) for m in CURVE_METRICS})
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
            frame = epochs.assign(loss=numeric(epochs, "train_loss")).join(configured, on=keys)
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
    batch = numeric(last, "config/batch_size")
    batch = batch.mask(batch == 0, np.nan if full_batch is None else full_batch)
    table = last.assign(
        batch_size=batch,
        log2_batch_size=np.log2(batch.where(batch > 0)),
        train_loss=numeric(last, "train_loss"),
        train_accuracy=numeric(last, "train_accuracy"),
        val_accuracy=numeric(last, "val_accuracy"),
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
    gaps = last.assign(gap=numeric(last, "train_accuracy") - numeric(last, "val_accuracy"))
    grouped = gaps.dropna(subset=["gap"]).groupby("variant", sort=False)["gap"]
    return grouped.agg(gap="mean", runs="size").reset_index()

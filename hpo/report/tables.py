"""The report's numbers: pure functions, DataFrame in → DataFrame out.

Everything the report shows is computed here and drawn elsewhere (`figures.py`), so the
numbers can be checked by value on small hand-made frames. Inputs are the tidy
`trials.csv` (one row per trial per reported epoch) and `runs_frame(study.json)`.
The validation metric and its mode (max/min) are always parameters, never assumed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hpo.records import StudyRecord
from hpo.results import DIVERGED, TRIAL_STATUSES, best_row
from hpo.space import LOG_KINDS, optuna_distribution, quantize
from hpo.spec import Budget, Param
from hpo.strategies import STRATEGIES, strategy_order

RUN_KEYS = ["strategy", "seed"]
TRIAL_KEYS = ["strategy", "seed", "trial_id"]
# A trial's metric at the fidelity the hyperparameter analysis compares trials at.
AT_FIDELITY = "at_fidelity"
# Fewest trials a fidelity may rest on; below it the analysis takes a lower rung.
MIN_FIDELITY_TRIALS = 8
# trials.csv's proposed_by values, in the order the proposals table shows them.
PROPOSERS: tuple[str, ...] = ("grid", "random", "startup", "model", "perturbation")
# Strategies the others' speed-ups are measured against (time to target).
BASELINES: tuple[str, ...] = tuple(name for name, s in STRATEGIES.items() if s.baseline)


def better_is_higher(mode: str) -> bool:
    if mode not in ("max", "min"):
        raise ValueError(f"metric mode must be 'max' or 'min', got {mode!r}")
    return mode == "max"


def _finite(values: pd.Series) -> pd.Series:
    """Metric values as floats with ±inf turned into NaN (a diverged epoch has no score)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers.where(np.isfinite(numbers))


def test_metric_name(metric: str) -> str:
    """The test-split counterpart of a validation metric: val_accuracy → test_accuracy."""
    return "test_" + metric.removeprefix("val_")


# ------------------------------------------------------------------------- runs
def runs_frame(record: StudyRecord) -> pd.DataFrame:
    """One row per strategy × seed of study.json: planned runs that never started
    included (status "not started"), so a partial study shows what is missing."""
    study = record.study
    tests = [test_metric_name(study.metric.name), "test_accuracy"]
    bests = [r.best for r in record.runs.values() if r.best is not None]
    test_key = next((k for k in tests if any(k in b.test for b in bests)), tests[0])
    planned = [(s, k) for s in study.strategies for k in study.seeds]
    keys = planned + [(r.strategy, r.seed) for r in record.runs.values()]
    rows = []
    for strategy, seed in dict.fromkeys(keys):
        run = record.run(strategy, seed)
        best = run.best if run is not None else None
        sizes = run.data_sizes if run is not None else {}
        rows.append(
            {
                "strategy": strategy,
                "seed": seed,
                "run_status": run.status if run is not None else "not started",
                "run_wall_s": run.wall_s if run is not None else None,
                # seconds in the searcher's and scheduler's calls; absent in older records
                "decision_s": getattr(run, "decision_s", None),
                "run_errors": run.errors if run is not None else None,
                "selected_trial": best.trial_id if best else None,
                "selected_epoch": best.epoch if best else None,
                "checkpoint_epoch": best.checkpoint_epoch if best else None,
                "selected_val": best.value if best else None,
                "test": best.test.get(test_key) if best else None,
                "test_metric": test_key,
                "train_size": sizes.get("train"),
                "val_size": sizes.get("val"),
                "test_size": sizes.get("test"),
                **{f"config/{k}": v for k, v in (best.config if best else {}).items()},
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    numeric = ("run_wall_s", "decision_s", "run_errors", "selected_val", "test", "selected_epoch")
    for column in (*numeric, "checkpoint_epoch"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def trial_table(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per trial: its status, epochs reached, best and last finite metric and its
    config. A trial's `best` is over whatever epochs it reached (early-stopped trials
    count at their last rung); a trial with no finite value (diverged at once) has NaN."""
    higher = better_is_higher(mode)
    if trials.empty:
        return pd.DataFrame(columns=[*TRIAL_KEYS, "status", "epochs", "best", "last"])
    frame = trials.assign(_value=_finite(trials[metric]))
    grouped = frame.groupby(TRIAL_KEYS, sort=False)
    config_columns = [c for c in trials.columns if c.startswith("config/")]
    table = grouped.agg(
        status=("status", "last"),
        epochs=("epoch", "max"),
        best=("_value", "max" if higher else "min"),
        last=("_value", "last"),
        first_cum_epochs=("cum_epochs", "min"),
        **{c: (c, "first") for c in config_columns},
    )
    return table.reset_index()


def run_table(runs: pd.DataFrame, trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per strategy × seed: trials started, epochs spent, wall time and best validation
    metric, all from trials.csv (so a run still in progress counts what it reported),
    plus the run's status and its selected config's test metric from study.json.

    Wall time is the run's own `Tuner.fit` time where recorded, else the last report's
    seconds since the run started; decision time (the driver's seconds in the searcher's
    and scheduler's calls) is NaN where the run did not record it."""
    higher = better_is_higher(mode)
    if trials.empty:
        per_run = pd.DataFrame(columns=[*RUN_KEYS, "trials", "epochs", "best_val", "last_wall_s"])
    else:
        per_run = (
            trials.assign(_value=_finite(trials[metric]))
            .groupby(RUN_KEYS, sort=False)
            .agg(
                trials=("trial_id", "nunique"),
                epochs=("cum_epochs", "size"),
                best_val=("_value", "max" if higher else "min"),
                last_wall_s=("wall_s", "max"),
            )
            .reset_index()
        )
    recorded = ["run_wall_s", "decision_s", "test"]
    if runs.empty:
        table = per_run.assign(run_status="unknown", **dict.fromkeys(recorded, np.nan))
    else:
        base = runs.reindex(columns=[*RUN_KEYS, "run_status", *recorded])
        table = base.merge(per_run, on=RUN_KEYS, how="outer")
        table["run_status"] = table["run_status"].fillna("unknown")
    table["trials"] = table["trials"].fillna(0).astype(int)
    table["epochs"] = table["epochs"].fillna(0).astype(int)
    table["wall_s"] = table["run_wall_s"].astype(float).fillna(table["last_wall_s"].astype(float))
    for column in ("best_val", "decision_s", "test"):
        table[column] = table[column].astype(float)
    order = {s: i for i, s in enumerate(strategy_order(table["strategy"]))}
    table = table.sort_values(
        ["strategy", "seed"], key=lambda c: c.map(order) if c.name == "strategy" else c
    )
    columns = [*RUN_KEYS, "run_status", "trials", "epochs", "wall_s", "decision_s"]
    return table[[*columns, "best_val", "test"]].reset_index(drop=True)


def sort_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the fixed strategy order, then by seed."""
    order = {s: i for i, s in enumerate(strategy_order(frame["strategy"]))}
    position = frame["strategy"].map(order)
    return (
        frame.assign(_order=position)
        .sort_values(["_order", "seed"], kind="stable")
        .drop(columns="_order")
    )


def seed_ranks(runs: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Rank of each strategy within each seed by best validation metric (1 = best; ties
    share the average rank; runs without a finite value are not ranked)."""
    higher = better_is_higher(mode)
    ranked = runs.dropna(subset=["best_val"]).copy()
    ranked["rank"] = ranked.groupby("seed")["best_val"].rank(method="average", ascending=not higher)
    return ranked[[*RUN_KEYS, "best_val", "rank"]].reset_index(drop=True)


def leaderboard(runs: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per strategy, over seeds: mean ± std of best validation metric and of the selected
    config's test metric, mean trials/epochs/seconds per run (wall and decision time; the
    latter over the seeds that measured it), mean rank over seeds, and how many of its
    runs finished (an unfinished run counts with its best so far).
    Sorted by mean rank (then best validation mean): the comparison the study is for."""
    higher = better_is_higher(mode)
    if runs.empty:
        return pd.DataFrame()
    ranks = seed_ranks(runs, mode)
    reported = runs[runs["epochs"] > 0]  # a run that never reported spent nothing yet
    table = reported.groupby("strategy", sort=False).agg(
        seeds=("best_val", "count"),
        best_val_mean=("best_val", "mean"),
        best_val_std=("best_val", "std"),
        test_seeds=("test", "count"),
        test_mean=("test", "mean"),
        test_std=("test", "std"),
        trials_per_run=("trials", "mean"),
        epochs_per_run=("epochs", "mean"),
        wall_s_per_run=("wall_s", "mean"),
        decision_s_per_run=("decision_s", "mean"),
    )
    table = table.reindex(pd.Index(strategy_order(runs["strategy"]), name="strategy"))
    table[["seeds", "test_seeds"]] = table[["seeds", "test_seeds"]].fillna(0).astype(int)
    finished = runs["run_status"].eq("finished").groupby(runs["strategy"]).agg(["sum", "size"])
    table["runs_finished"] = finished["sum"].astype(int)
    table["runs"] = finished["size"].astype(int)
    table["mean_rank"] = ranks.groupby("strategy")["rank"].mean()
    table = table.reset_index()
    table["_best"] = -table["best_val_mean"] if higher else table["best_val_mean"]
    table = table.sort_values(["mean_rank", "_best"], na_position="last", kind="stable")
    return table.drop(columns="_best").reset_index(drop=True)


# -------------------------------------------------------------------- anytime
def anytime(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Best-so-far validation metric of each run after every reported epoch, against
    cumulative epochs and wall-clock seconds (the anytime-performance curve). Epochs
    before the first finite value stay NaN; a diverged epoch keeps the previous best."""
    higher = better_is_higher(mode)
    columns = [*RUN_KEYS, "cum_epochs", "wall_s", "best_so_far"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    frame = trials[[*RUN_KEYS, "cum_epochs", "wall_s"]].copy()
    frame["_value"] = _finite(trials[metric])
    frame = frame.sort_values([*RUN_KEYS, "cum_epochs"], kind="stable")
    grouped = frame.groupby(RUN_KEYS, sort=False)["_value"]
    running = grouped.cummax() if higher else grouped.cummin()
    frame["best_so_far"] = running.groupby([frame[k] for k in RUN_KEYS], sort=False).ffill()
    return frame[columns].reset_index(drop=True)


def anytime_on_grid(curves: pd.DataFrame, x: str, points: int = 200) -> pd.DataFrame:
    """Each run's best-so-far step function read off one shared grid of `x` values, so
    seeds can be averaged with a band.

    Per strategy the grid spans from the first point where every seed has a value to
    the end of its longest seed; a seed that ended earlier keeps its final best there
    (it is what that seed found by then). So the mean over seeds is taken over the same
    seeds everywhere and stays monotone."""
    columns = [*RUN_KEYS, x, "best_so_far"]
    curves = curves.dropna(subset=[x, "best_so_far"])
    if curves.empty:
        return pd.DataFrame(columns=columns)
    top = float(curves[x].max())
    if x == "cum_epochs":
        grid = np.unique(np.linspace(1, max(top, 1), points).round())
    else:
        grid = np.linspace(0.0, top, points)
    frames = []
    for strategy, mine in curves.groupby("strategy", sort=False):
        runs = [run.sort_values(x, kind="stable") for _, run in mine.groupby("seed", sort=False)]
        start = max(float(run[x].iloc[0]) for run in runs)
        end = max(float(run[x].iloc[-1]) for run in runs)
        inside = np.unique(np.concatenate([[start], grid[(grid >= start) & (grid <= end)], [end]]))
        for run in runs:
            xs, ys = run[x].to_numpy(float), run["best_so_far"].to_numpy(float)
            index = np.searchsorted(xs, inside, side="right") - 1
            frames.append(
                pd.DataFrame(
                    {
                        "strategy": strategy,
                        "seed": run["seed"].iloc[0],
                        x: inside,
                        "best_so_far": ys[index],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[columns]


# ------------------------------------------------------------- time to target
def target_levels(
    best: float, mode: str, bounded: bool, points: Sequence[float] = (0.5, 1.0)
) -> pd.DataFrame:
    """Targets "within p points of the best value any strategy found".

    For a metric bounded in [0, 1] and maximized (accuracy) a point is a percentage
    point (0.01); otherwise a point is 1 % of the best value, so the targets also make
    sense for a loss."""
    higher = better_is_higher(mode)
    rows = []
    for p in points:
        delta = p * 0.01 if bounded else p * 0.01 * abs(best)
        level = best - delta if higher else best + delta
        unit = "points" if bounded else "% of best"
        rows.append({"target": f"within {p:.1f} {unit}", "points": p, "level": level})
    return pd.DataFrame(rows)


def metric_is_bounded(values: pd.Series, mode: str) -> bool:
    """An accuracy-like metric: maximized and every finite value inside [0, 1]."""
    finite = _finite(values).dropna()
    return mode == "max" and not finite.empty and bool(finite.between(0, 1).all())


def time_to_target(curves: pd.DataFrame, targets: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per run and target: cumulative epochs and seconds at the first report whose
    best-so-far reaches the target level (NaN: not reached)."""
    higher = better_is_higher(mode)
    rows = []
    for (strategy, seed), run in curves.groupby(RUN_KEYS, sort=False):
        run = run.sort_values("cum_epochs", kind="stable")
        values = run["best_so_far"].to_numpy(float)
        for target in targets.itertuples():
            with np.errstate(invalid="ignore"):
                hit = values >= target.level if higher else values <= target.level
            first = int(np.argmax(hit)) if hit.any() else None
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "target": target.target,
                    "level": target.level,
                    "epochs": np.nan if first is None else float(run["cum_epochs"].iloc[first]),
                    "seconds": np.nan if first is None else float(run["wall_s"].iloc[first]),
                }
            )
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "target", "level", "epochs", "seconds"])


def time_to_target_summary(
    per_run: pd.DataFrame, baselines: Sequence[str] = BASELINES
) -> pd.DataFrame:
    """Per strategy and target: median over seeds of epochs and seconds to the target,
    counting a seed that never reached it as infinitely slow (so the median is "not
    reached", NaN here, when half the seeds or more missed it), and the speed-up
    baseline median / strategy median against each baseline strategy (inf where the
    strategy reached a target the baseline never did)."""
    if per_run.empty:
        return pd.DataFrame()
    rows = []
    for (target, strategy), group in per_run.groupby(["target", "strategy"], sort=False):
        epochs = group["epochs"].fillna(np.inf).to_numpy(float)
        seconds = group["seconds"].fillna(np.inf).to_numpy(float)
        rows.append(
            {
                "target": target,
                "level": group["level"].iloc[0],
                "strategy": strategy,
                "seeds": len(group),
                "seeds_reached": int(group["epochs"].notna().sum()),
                "median_epochs": float(np.median(epochs)),
                "median_seconds": float(np.median(seconds)),
            }
        )
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(strategy_order(table["strategy"]))}
    targets = {t: i for i, t in enumerate(per_run["target"].unique())}
    table = table.iloc[
        np.lexsort((table["strategy"].map(order), table["target"].map(targets)))
    ].reset_index(drop=True)
    for baseline in baselines:
        base = table[table["strategy"] == baseline].set_index("target")
        if base.empty:
            continue
        for unit in ("epochs", "seconds"):
            reference = table["target"].map(base[f"median_{unit}"])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = reference / table[f"median_{unit}"]
            own = table[f"median_{unit}"]
            ratio = ratio.where(np.isfinite(own))  # strategy never reached: no speed-up
            ratio = ratio.where(~(np.isinf(reference) & np.isfinite(own)), np.inf)
            table[f"speedup_{unit}_vs_{baseline}"] = ratio
    for unit in ("epochs", "seconds"):
        column = f"median_{unit}"
        table[column] = table[column].where(np.isfinite(table[column]))
    return table


# --------------------------------------------------------------- statistics
def min_attainable_p(seeds: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give on
    `seeds` paired values: every difference of one sign, 2 / 2**n (NaN below one seed)."""
    return min(1.0, 2.0 / 2**seeds) if seeds >= 1 else math.nan


def seeds_needed(alpha: float = 0.05) -> int:
    """The fewest paired seeds with which that test can reach p < alpha at all."""
    seeds = 1
    while min_attainable_p(seeds) >= alpha:
        seeds += 1
    return seeds


def paired_wilcoxon(pair: pd.DataFrame, a: str, b: str, higher: bool) -> tuple:
    """Wilcoxon signed-rank test (scipy, exact for small samples) of columns a and b of
    complete pairs: (pairs, differences a − b, their mean, the level the mean favours,
    statistic, p); p is NaN below 2 pairs and 1 where every pair is equal."""
    from scipy import stats

    n = len(pair)
    diff = (pair[a] - pair[b]).to_numpy(float)
    mean_diff = float(diff.mean()) if n else np.nan
    if n < 2:
        statistic, p_value = np.nan, np.nan
    elif np.allclose(diff, 0.0):
        statistic, p_value = 0.0, 1.0  # identical in every pair
    else:
        result = stats.wilcoxon(pair[a], pair[b], alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    if n == 0 or math.isclose(mean_diff, 0.0, abs_tol=1e-12):
        better = "tie" if n else "n/a"
    else:
        better = a if (mean_diff > 0) == higher else b
    return n, diff, mean_diff, better, statistic, p_value


def pairwise_tests(runs: pd.DataFrame, mode: str, alpha: float = 0.05) -> pd.DataFrame:
    """For each pair of strategies, the Wilcoxon signed-rank test (scipy.stats, exact for
    small samples) on the final best validation metric, paired by seed.

    `difference` is mean(a − b) over the paired seeds; `better` names the strategy the
    mean favours; `min_p` is the smallest p-value the test could give on that many seeds
    (`min_attainable_p`: below `seeds_needed(alpha)` seeds nothing can be significant)."""
    higher = better_is_higher(mode)
    wide = runs.pivot_table(index="seed", columns="strategy", values="best_val", aggfunc="first")
    rows = []
    for a, b in itertools.combinations(strategy_order(wide.columns), 2):
        pair = wide[[a, b]].dropna()
        n, diff, mean_diff, better, statistic, p_value = paired_wilcoxon(pair, a, b, higher)
        rows.append(
            {
                "strategy_a": a,
                "strategy_b": b,
                "seeds": n,
                "mean_a": float(pair[a].mean()) if n else np.nan,
                "mean_b": float(pair[b].mean()) if n else np.nan,
                "difference": mean_diff,
                "better": better,
                "wins_a": int((diff > 0).sum() if higher else (diff < 0).sum()),
                "wins_b": int((diff < 0).sum() if higher else (diff > 0).sum()),
                "statistic": statistic,
                "p_value": p_value,
                "min_p": min_attainable_p(n),
                "significant": bool(p_value < alpha) if not np.isnan(p_value) else False,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------ configurations
def best_configs(runs: pd.DataFrame, trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per strategy and seed, the selected config with its validation and test metric:
    the runner's selection from study.json where the run has one, else (a run still
    going) the best epoch reported so far by the runner's rule (best finite value,
    ties: earliest in the run), marked provisional and with no test metric yet."""
    higher = better_is_higher(mode)
    config_columns = sorted(
        {c for c in [*runs.columns, *trials.columns] if c.startswith("config/")}
    )
    rows = []
    for run in runs.to_dict("records"):
        row = {"strategy": run["strategy"], "seed": run["seed"], "run_status": run["run_status"]}
        if isinstance(run.get("selected_trial"), str):  # the runner's selection
            row.update(
                selection="selected",
                trial_id=run["selected_trial"],
                epoch=run["selected_epoch"],
                val=run["selected_val"],
                test=run["test"],
                checkpoint_epoch=run.get("checkpoint_epoch"),
            )
            config = {c: run.get(c) for c in config_columns}
        else:
            mine = (
                trials.iloc[0:0]
                if trials.empty
                else trials[
                    (trials["strategy"] == run["strategy"]) & (trials["seed"] == run["seed"])
                ]
            )
            mine = mine.assign(_value=_finite(mine[metric])).dropna(subset=["_value"])
            if mine.empty:
                continue
            ordered = mine.sort_values(
                ["_value", "cum_epochs"], ascending=[not higher, True], kind="stable"
            )
            top = ordered.iloc[0]
            row.update(
                selection="provisional",
                trial_id=top["trial_id"],
                epoch=float(top["epoch"]),
                val=float(top["_value"]),
                test=np.nan,
                checkpoint_epoch=np.nan,
            )
            config = {c: top.get(c) for c in config_columns}
        rows.append({**row, **config})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ fidelity
@dataclass(frozen=True)
class Fidelity:
    """The one epoch at which the hyperparameter analysis compares trials, and why: a
    trial stopped after one epoch by SHA must not sit beside one trained to the end."""

    epoch: int
    reason: str  # why this epoch, e.g. "max_epochs"
    trials: int  # trials with a finite metric at `epoch`: what the analysis rests on
    by_strategy: dict[str, int]  # those trials per strategy, in registry order
    diverged: int  # trials that diverged before reaching `epoch` (left out)
    stopped: int  # trials that stopped, or are still running, before `epoch` (left out)

    def describe(self) -> str:
        """E.g. "at epoch 9 (max_epochs): 93 trials that reached it (grid 30, sha 13)"."""
        strategies = ", ".join(f"{s} {n}" for s, n in self.by_strategy.items())
        return f"at epoch {self.epoch} ({self.reason}): {self.trials} trials that reached it" + (
            f" ({strategies})" if strategies else ""
        )

    def left_out(self) -> str:
        """The trials the analysis leaves out, in words."""
        return (
            f"left out: {self.stopped} trials that stopped (or are still running) before "
            f"epoch {self.epoch} and {self.diverged} that diverged before reaching it"
        )


def fidelity_rungs(budget: Budget) -> list[int]:
    """Successive-halving rungs min_epochs·η^k that fit in max_epochs, highest first."""
    rungs, epoch = [], budget.min_epochs
    while epoch <= budget.max_epochs:
        rungs.append(epoch)
        epoch *= budget.reduction_factor
    return rungs[::-1]


def _reached(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per trial and epoch with a finite metric (the last report of that epoch)."""
    rows = trials.assign(**{AT_FIDELITY: _finite(trials[metric])}).dropna(subset=[AT_FIDELITY])
    return rows.drop_duplicates([*TRIAL_KEYS, "epoch"], keep="last")


def choose_fidelity(
    trials: pd.DataFrame, metric: str, budget: Budget, min_trials: int = MIN_FIDELITY_TRIALS
) -> Fidelity:
    """The highest fidelity at least `min_trials` trials reached with a finite metric:
    max_epochs if they did, else the highest successive-halving rung, else the highest
    epoch; with fewer trials than that anywhere, the epoch most trials reached."""
    counts = (
        _reached(trials, metric).groupby("epoch")["trial_id"].size()
        if not trials.empty
        else pd.Series(dtype=int)
    )
    counts.index = counts.index.astype(int)
    top = budget.max_epochs
    short = f"fewer than {min_trials} trials reached max_epochs = {top}"
    rungs = [r for r in fidelity_rungs(budget) if r != top]
    candidates = [(top, "max_epochs")]
    for rung in rungs:
        k = round(math.log(rung / budget.min_epochs, budget.reduction_factor))
        candidates.append((rung, f"rung min_epochs·η^{k}; {short}"))
    for epoch in sorted(set(counts.index) - {top, *rungs}, reverse=True):
        candidates.append((epoch, f"{short} or any rung"))
    chosen = next(((e, why) for e, why in candidates if counts.get(e, 0) >= min_trials), None)
    if chosen is None and counts.empty:
        chosen = (top, "max_epochs; no trial has a finite metric yet")
    elif chosen is None:  # a small study: the epoch most trials reached (highest of ties)
        most = int(counts.max())
        epoch = int(max(counts.index[counts == most]))
        chosen = (epoch, f"fewer than {min_trials} trials reached any epoch; most reached this")
    return _fidelity(trials, metric, *chosen)


def _fidelity(trials: pd.DataFrame, metric: str, epoch: int, reason: str) -> Fidelity:
    at = trials_at(trials, metric, epoch)
    counts = at["strategy"].value_counts()
    by_strategy = {s: int(counts[s]) for s in strategy_order(counts.index)}
    if trials.empty:
        return Fidelity(epoch, reason, 0, by_strategy, 0, 0)
    status = trials.groupby(TRIAL_KEYS, sort=False)["status"].last()
    missing = ~status.index.isin(pd.MultiIndex.from_frame(at[TRIAL_KEYS]))
    diverged = int((status[missing] == DIVERGED).sum())
    return Fidelity(epoch, reason, len(at), by_strategy, diverged, int(missing.sum()) - diverged)


def trials_at(trials: pd.DataFrame, metric: str, epoch: int) -> pd.DataFrame:
    """One row per trial that has a finite metric at `epoch`: that value (`at_fidelity`,
    not a best-so-far from later epochs), the trial's status and epochs, and the config in
    force at that epoch (PBT changes a trial's config as it trains)."""
    config = [c for c in trials.columns if c.startswith("config/")]
    columns = [*TRIAL_KEYS, "status", "epochs", AT_FIDELITY, *config]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    ends = trials.groupby(TRIAL_KEYS, sort=False).agg(
        status=("status", "last"), epochs=("epoch", "max")
    )
    rows = _reached(trials, metric)
    rows = rows[rows["epoch"] == epoch].drop(columns="status")
    table = rows.merge(ends.reset_index(), on=TRIAL_KEYS, how="left")
    return table[columns].reset_index(drop=True)


# ----------------------------------------------------------------- proposals
def trial_proposers(trials: pd.DataFrame) -> pd.Series:
    """How each trial's config was proposed (trials.csv's proposed_by), one value per
    trial: "perturbation" if any of its rows says so (a PBT trial that exploited another),
    else its first recorded value; "not_recorded" where it has none."""
    keys = [trials[k] for k in TRIAL_KEYS]
    first = trials["proposed_by"].groupby(keys, sort=False).first()
    perturbed = trials["proposed_by"].eq("perturbation").groupby(keys, sort=False).any()
    first = first.fillna("not_recorded").astype(str)
    return first.mask(perturbed, "perturbation").rename("proposed_by")


def proposals(trials: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: seeds, trials (over all seeds), trials by how they were proposed
    (grid, random, startup, model, perturbation, others found) and the model-based share
    (model / trials) as the mean and the lowest over seeds. Empty for results from before
    trials.csv recorded proposed_by."""
    columns = ["strategy", "seeds", "trials", *PROPOSERS, "model_share_mean", "model_share_min"]
    if trials.empty or "proposed_by" not in trials:
        return pd.DataFrame(columns=columns)
    proposers = trial_proposers(trials).reset_index()
    counts = pd.crosstab([proposers["strategy"], proposers["seed"]], proposers["proposed_by"])
    found = [*PROPOSERS, *sorted(set(counts.columns) - set(PROPOSERS))]
    counts = counts.reindex(columns=found, fill_value=0)
    counts["trials"] = counts.sum(axis=1)
    counts["share"] = counts["model"] / counts["trials"]
    table = counts.groupby(level="strategy").agg(
        seeds=("trials", "size"),
        trials=("trials", "sum"),
        **{p: (p, "sum") for p in found},
        model_share_mean=("share", "mean"),
        model_share_min=("share", "min"),
    )
    table = table.reindex(strategy_order(table.index)).reset_index()
    return table[[*columns[:-2], *found[len(PROPOSERS) :], *columns[-2:]]]


# ------------------------------------------------------------------------ pbt
def pbt_schedule(
    trials: pd.DataFrame, metric: str, mode: str, strategy: str = "pbt"
) -> pd.DataFrame:
    """Per seed of `strategy`, the hyperparameter schedule of its best trial (the runner's
    rule: best finite metric, never a diverged trial): one row per epoch and
    hyperparameter — lr (from config/lr, else the `lr` metric) and every other numeric
    config that changes in one of these trials — with `exploited` True at the first
    epoch trained after the trial took another's weights and a perturbed config."""
    columns = ["seed", "trial_id", "best", "epoch", "param", "value", "exploited"]
    mine = trials[trials["strategy"] == strategy] if not trials.empty else trials
    bests = []
    for _, run in mine.groupby("seed", sort=True):
        top = best_row(run.assign(**{metric: _finite(run[metric])}), metric, mode)
        if top is not None:
            trial = run[run["trial_id"] == top["trial_id"]].sort_values("epoch", kind="stable")
            bests.append((top, trial.drop_duplicates("epoch", keep="last")))
    values = [_schedule_params(trial) for _, trial in bests]
    changing = {n for params in values for n, v in params.items() if v.nunique() > 1}
    names = list(dict.fromkeys(n for params in values for n in params))
    names = [n for n in names if n == "lr" or n in changing]
    rows = [
        pd.DataFrame(
            {
                "seed": top["seed"],
                "trial_id": top["trial_id"],
                "best": float(top[metric]),
                "epoch": trial["epoch"].to_numpy(int),
                "param": name,
                "value": params[name].to_numpy(float),
                "exploited": _exploits(trial).to_numpy(),
            }
        )
        for (top, trial), params in zip(bests, values, strict=True)
        for name in names
        if name in params
    ]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def _schedule_params(trial: pd.DataFrame) -> dict[str, pd.Series]:
    """A trial's numeric hyperparameters per epoch, lr first (config/lr, else the lr
    metric, which also follows a learning-rate schedule)."""
    numeric = {
        c.removeprefix("config/"): pd.to_numeric(trial[c], errors="coerce")
        for c in trial.columns
        if c.startswith("config/") and trial[c].dtype != bool
    }
    params = {n: v for n, v in numeric.items() if v.notna().all()}
    if "lr" not in params and "lr" in trial:
        lr = pd.to_numeric(trial["lr"], errors="coerce")
        if lr.notna().any():
            params["lr"] = lr
    return dict(sorted(params.items(), key=lambda item: item[0] != "lr"))


def _exploits(trial: pd.DataFrame) -> pd.Series:
    """True at the rows where the trial's config changed or proposed_by first turned
    "perturbation": the first epoch after an exploit."""
    config = trial[[c for c in trial.columns if c.startswith("config/")]].astype(str)
    changed = (config != config.shift()).any(axis=1)
    changed.iloc[:1] = False
    if "proposed_by" in trial:
        perturbed = trial["proposed_by"].eq("perturbation")
        changed |= perturbed & ~perturbed.shift(fill_value=False)
    return changed


# ------------------------------------------------------------- hyperparameters
# Integer domains, whose high is exclusive (as Ray Tune's randint and lograndint).
INT_KINDS = ("randint", "lograndint")


def space_kind(domain: Mapping[str, Any]) -> str:
    """The domain (hpo.spec.KINDS: uniform, loguniform, randint, ..., choice) of one study
    `space` entry (as saved in study.json), read through the study spec's own model."""
    return Param.model_validate(dict(domain)).kind


def _has_condition(domain: Mapping[str, Any]) -> bool:
    """Whether the entry has a `when:` (absent from the trials where it is inactive)."""
    return bool(dict(domain).get("when"))


def choice_index(values: pd.Series, choices: Sequence[Any]) -> pd.Series:
    """Position of each value in a `choice` list (NaN if none), matching numbers as
    numbers (CSV may read 32 as 32.0) and everything else by its text."""
    index = pd.Series(np.nan, index=values.index)
    numeric = pd.to_numeric(values, errors="coerce")
    for i, option in enumerate(choices):
        if isinstance(option, (int, float)) and not isinstance(option, bool):
            mask = numeric == option
        else:
            mask = values.astype(str) == str(option)
        index[mask & index.isna()] = i
    return index


def normalized_position(values: pd.Series, domain: Mapping[str, Any]) -> pd.Series:
    """A hyperparameter's values placed on [0, 1] of its domain (log scale for log
    domains, choice index for categories): the axes of a parallel-coordinates view."""
    kind = space_kind(domain)
    if kind == "choice":
        count = len(domain["choice"])
        return choice_index(values, domain["choice"]) / max(count - 1, 1)
    low, high = float(domain[kind]["low"]), float(domain[kind]["high"])
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    if kind in INT_KINDS:
        high = high - 1  # high is exclusive
    if kind in LOG_KINDS:
        numbers, low, high = np.log(numbers), math.log(low), math.log(high)
    return (numbers - low) / (high - low) if high > low else numbers * 0 + 0.5


def top_trials(table: pd.DataFrame, mode: str, count: int) -> pd.DataFrame:
    """The `count` trials of `trials_at` with the best metric at its fidelity."""
    higher = better_is_higher(mode)
    ranked = table.dropna(subset=[AT_FIDELITY]).sort_values(
        AT_FIDELITY, ascending=not higher, kind="stable"
    )
    return ranked.head(count).reset_index(drop=True)


def parallel_coordinates(
    table: pd.DataFrame, space: Mapping[str, Mapping[str, Any]], mode: str, count: int = 30
) -> pd.DataFrame:
    """Top trials of `trials_at` as rows, one [0, 1] column per hyperparameter plus the
    metric (scaled over the shown trials, 1 = best), ready for a parallel-coordinates
    drawing."""
    top = top_trials(table, mode, count)
    frame = top[[*TRIAL_KEYS, AT_FIDELITY]].copy()
    for name, domain in space.items():
        column = f"config/{name}"
        if column in top:
            frame[name] = normalized_position(top[column], domain).to_numpy()
    best = top[AT_FIDELITY].astype(float)
    spread = best.max() - best.min()
    scaled = (best - best.min()) / spread if spread > 0 else best * 0 + 1.0
    frame["metric"] = scaled if mode == "max" else 1 - scaled
    return frame


def importance(
    table: pd.DataFrame,
    space: Mapping[str, Mapping[str, Any]],
    mode: str,
    n_trees: int = 32,
    max_depth: int = 8,
    seed: int = 0,
) -> tuple[pd.DataFrame, str]:
    """fANOVA hyperparameter importance (Optuna's FanovaImportanceEvaluator) over the
    trials of `trials_at` (each trial's metric at one fidelity), through an in-memory
    Optuna study built with create_trial/add_trials and distributions from `space`.
    Each trial has the parameters it had: a conditional one is absent where inactive
    (an empty config cell), and fANOVA ranks the parameters every used trial has.

    Returns the table (param, importance, sorted) and a note on what was left out.
    The forest is smaller than Optuna's default (64 trees, depth 64), which takes ~25 s
    for 1,000 trials on two cores; the ranking it gives is the same on our studies."""
    import optuna

    names = [n for n in space if f"config/{n}" in table]
    empty = pd.DataFrame(columns=["param", "importance"])
    trials = _optuna_trials(table, space, names)
    skipped = int(len(table) - len(trials))
    note = f"{len(trials)} trials used" + (
        f"; {skipped} left out (no finite metric or value outside the space)" if skipped else ""
    )
    common = [n for n in names if all(n in t.params for t in trials)]
    if len(common) < len(names):
        left = ", ".join(n for n in names if n not in common)
        note += f"; conditional parameters absent from some trials left out: {left}"
    varying = [n for n in common if len({str(t.params[n]) for t in trials}) > 1]
    if len(trials) < 2 or not varying:
        return empty, note + "; too few distinct trials for fANOVA"
    if len({t.value for t in trials}) < 2:  # fANOVA divides by the metric's variance
        return empty, note + "; every trial reached the same metric, so no importance"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials(trials)
    evaluator = optuna.importance.FanovaImportanceEvaluator(
        n_trees=n_trees, max_depth=max_depth, seed=seed
    )
    scores = optuna.importance.get_param_importances(
        study, evaluator=evaluator, params=varying, normalize=True
    )
    frame = pd.DataFrame({"param": list(scores), "importance": [float(v) for v in scores.values()]})
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(
        drop=True
    ), note


def _optuna_trials(
    table: pd.DataFrame, space: Mapping[str, Mapping[str, Any]], names: list[str]
) -> list[Any]:
    """One finished Optuna trial per row with a finite metric and every value it has in
    the space; a conditional parameter's empty cell is its absence, not a bad value."""
    import optuna

    distributions = {n: optuna_distribution(Param.model_validate(space[n])) for n in names}
    values = {n: _param_values(table[f"config/{n}"], space[n]) for n in names}
    usable = np.isfinite(table[AT_FIDELITY].astype(float).to_numpy())
    for name, column in values.items():
        fits = column.notna().to_numpy()
        if _has_condition(space[name]):
            fits = fits | table[f"config/{name}"].isna().to_numpy()
        usable = usable & fits
    trials = []
    for i in np.flatnonzero(usable):
        params = {n: values[n].iloc[i] for n in names if values[n].iloc[i] is not None}
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions={n: distributions[n] for n in params},
                value=float(table[AT_FIDELITY].iloc[i]),
            )
        )
    return trials


def _param_values(values: pd.Series, domain: Mapping[str, Any]) -> pd.Series:
    """Trials' values of one hyperparameter as Optuna wants them (the choice object itself
    for categories; a quantized value as the grid's short float), None where a value is
    missing or cannot be placed in the space."""
    kind = space_kind(domain)
    if kind == "choice":
        index = choice_index(values, domain["choice"])
        options = list(domain["choice"])
        return pd.Series(
            [None if np.isnan(i) else options[int(i)] for i in index],
            index=values.index,
            dtype=object,
        )
    param = Param.model_validate(dict(domain))
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    placed = []
    for v in numbers:
        if not (math.isfinite(v) and param.contains(v)):
            placed.append(None)
        elif kind in INT_KINDS:
            placed.append(int(v))
        elif "q" in domain[kind]:
            bounds = domain[kind]
            placed.append(quantize(v, bounds["q"], bounds["low"], bounds["high"]))
        else:
            placed.append(float(v))
    return pd.Series(placed, index=values.index, dtype=object)


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many trials ended in each status (every known status listed, zeros kept)."""
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    known = {s: int(counts.pop(s, 0)) for s in TRIAL_STATUSES}
    return {**known, **{str(k): int(v) for k, v in counts.items()}}


def choice_effects(
    table: pd.DataFrame,
    space: Mapping[str, Any],
    mode: str,
    started: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """For each categorical hyperparameter, per value: the trials of `trials_at` that used
    it and the median and best of their metric at that fidelity (e.g. what each freezing
    policy reached); with `started` (`trial_table`), also every trial started with it and
    the epochs they spent."""
    higher = better_is_higher(mode)
    columns = ["param", "value", "trials", "median", "best"]
    if started is not None:
        columns[3:3] = ["trials_started", "epochs"]
    rows = []
    for name, domain in space.items():
        column = f"config/{name}"
        if space_kind(domain) != "choice" or column not in table:
            continue
        choices = list(dict(domain)["choice"])
        index = choice_index(table[column], choices)
        spent = None if started is None else choice_index(started[column], choices)
        for i, option in enumerate(choices):
            values = table.loc[index == i, AT_FIDELITY].dropna()
            row = {"param": name, "value": str(option), "trials": len(values)}
            if spent is not None:
                row["trials_started"] = int((spent == i).sum())
                row["epochs"] = int(started.loc[spent == i, "epochs"].sum())
            best = values.max() if higher else values.min()
            row["median"] = float(values.median()) if len(values) else math.nan
            row["best"] = float(best) if len(values) else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)

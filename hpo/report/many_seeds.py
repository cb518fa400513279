"""Comparisons that need many seeds (a replay gives 50): pure functions, DataFrame in →
DataFrame out, drawn in `figures.py` and shown by `build.py` only when every strategy
has at least `MANY_SEEDS` seeds.

With a handful of seeds the report's Wilcoxon tests say what they can; with many, the
questions change: how the ranking evolves over the budget (mean rank with bootstrap
bands), how often one strategy ends better than another (P(A ends better than B)), and
whether the strategies differ at all (Friedman test, Nemenyi critical difference).

Every comparison is over the *paired seeds*: the seeds on which every strategy shown
reported (complete blocks), so a rank always ranks the same strategies. A run's best so
far is `tables.anytime`'s (diverged epochs have no score, as in the anytime curves and
the leaderboard); a run with no finite value yet ranks below every run with one (ties
among them share the rank). Bootstrap intervals resample seeds with a fixed numpy seed,
so the same results give the same report.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpo.report.tables import better_is_higher
from hpo.strategies import strategy_order

MANY_SEEDS = 10  # fewest paired seeds for the many-seeds section
BUDGET_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 21))
WINNER_FRACTIONS: tuple[float, ...] = (0.1, 0.3, 1.0)  # "who wins at 10 %, 30 %, 100 %"
RESAMPLES = 1000  # bootstrap resamples of the seeds
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05  # the level of the Friedman test and the Nemenyi critical difference
RANK_COLUMNS: list[str] = [
    "fraction",
    "budget_epochs",
    "strategy",
    "seeds",
    "seeds_with_value",
    "mean_rank",
    "rank_low",
    "rank_high",
]
WINNER_COLUMNS: list[str] = [
    "fraction",
    "budget_epochs",
    "winner",
    "mean_rank",
    "rank_low",
    "rank_high",
    "runner_up",
    "runner_up_mean_rank",
    "runner_up_low",
    "runner_up_high",
    "clear",
]
PAIR_COLUMNS: list[str] = [
    "strategy_a",
    "strategy_b",
    "seeds",
    "wins_a",
    "ties",
    "wins_b",
    "p_a_better",
    "p_low",
    "p_high",
]


def paired_seeds(frame: pd.DataFrame) -> tuple[list[str], list[int]]:
    """The strategies in `frame` (registry order) and the seeds on which every one of
    them has a row: the complete blocks every comparison here is over. `frame` is the
    run table (runs that never reported, epochs == 0, are left out) or anytime curves."""
    if "epochs" in frame:
        frame = frame[frame["epochs"] > 0]
    if frame.empty:
        return [], []
    strategies = strategy_order(frame["strategy"].unique())
    per_seed = frame.groupby("seed")["strategy"].nunique()
    seeds = sorted(int(s) for s in per_seed.index[per_seed == len(strategies)])
    return strategies, seeds


def many_seeds_shortfall(runs: pd.DataFrame, minimum: int = MANY_SEEDS) -> str | None:
    """None when the many-seeds comparisons apply (at least two strategies and `minimum`
    paired seeds), else one line saying why they are left out."""
    strategies, seeds = paired_seeds(runs)
    if len(strategies) < 2:
        return "The many-seeds comparisons need at least two strategies with results."
    if len(seeds) < minimum:
        return (
            f"The many-seeds comparisons (mean rank over the budget, P(A ends better than B), "
            f"Friedman and Nemenyi tests) need at least {minimum} seeds that every strategy "
            f"ran; these results have {len(seeds)}."
        )
    return None


# ------------------------------------------------------------------ helpers
def _ranks(values: np.ndarray, higher: bool) -> np.ndarray:
    """Rank along the last axis (1 = best, ties share the average rank); NaN (no value
    yet) ranks below every value."""
    from scipy.stats import rankdata

    score = -values if higher else values.copy()
    score[np.isnan(score)] = np.inf
    return rankdata(score, axis=-1, method="average")


def _resample_counts(seeds: int, resamples: int, seed: int) -> np.ndarray:
    """How often each seed is drawn in each bootstrap resample (resamples × seeds): a
    resample of n seeds with replacement is a multinomial draw of n over n seeds."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=resamples).astype(float)


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return low, high


def _final_matrix(runs: pd.DataFrame) -> tuple[list[str], list[int], np.ndarray]:
    """Each paired seed's final best validation metric per strategy (seeds × strategies)."""
    strategies, seeds = paired_seeds(runs)
    reported = runs[runs["epochs"] > 0]
    wide = reported.pivot_table(
        index="seed", columns="strategy", values="best_val", aggfunc="first"
    )
    wide = wide.reindex(index=seeds, columns=strategies)
    return strategies, seeds, wide.to_numpy(float)


def budget_best(
    curves: pd.DataFrame, total_epochs: float, fractions: Sequence[float] = BUDGET_FRACTIONS
) -> tuple[list[str], list[int], np.ndarray]:
    """Each paired run's best so far once it had spent each fraction of the budget
    (cum_epochs ≤ fraction × total_epochs), from `tables.anytime` curves: an array
    fractions × seeds × strategies (NaN: no finite value by then). A run that ended
    earlier keeps its final best. One searchsorted over all runs, no loop per run."""
    strategies, seeds = paired_seeds(curves)
    result = np.full((len(fractions), len(seeds), len(strategies)), np.nan)
    if not seeds:
        return strategies, seeds, result
    frame = curves[curves["strategy"].isin(strategies) & curves["seed"].isin(seeds)]
    strategy_code = pd.Categorical(frame["strategy"], categories=strategies).codes
    seed_code = pd.Categorical(frame["seed"], categories=seeds).codes
    run = seed_code.astype(np.int64) * len(strategies) + strategy_code
    x = frame["cum_epochs"].to_numpy(float)
    y = frame["best_so_far"].to_numpy(float)
    order = np.lexsort((x, run))
    run, x, y = run[order], x[order], y[order]
    points = np.asarray(fractions, float) * float(total_epochs)
    span = max(float(np.nanmax(x)), float(points.max())) + 1.0  # keeps runs apart in one key
    key = run * span + x
    runs = np.arange(len(seeds) * len(strategies))
    queries = runs[None, :] * span + points[:, None]  # fractions × runs
    index = np.searchsorted(key, queries, side="right") - 1
    found = (index >= 0) & (run[index.clip(0)] == runs[None, :])
    values = np.where(found, y[index.clip(0)], np.nan)
    return strategies, seeds, values.reshape(len(fractions), len(seeds), len(strategies))


# ---------------------------------------------------------- mean rank over budget
def budget_ranks(
    curves: pd.DataFrame,
    total_epochs: float,
    mode: str,
    fractions: Sequence[float] = BUDGET_FRACTIONS,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Mean rank of each strategy over the paired seeds at each fraction of the budget
    (each run's best so far ranked within its seed, 1 = best, ties average), with a
    percentile bootstrap interval from resampling seeds: one row per fraction × strategy
    (fraction, budget_epochs, strategy, seeds, seeds_with_value, mean_rank, rank_low,
    rank_high)."""
    higher = better_is_higher(mode)
    columns = RANK_COLUMNS
    strategies, seeds, values = budget_best(curves, total_epochs, fractions)
    if not seeds:
        return pd.DataFrame(columns=columns)
    ranks = _ranks(values, higher)  # fractions × seeds × strategies
    n = len(seeds)
    counts = _resample_counts(n, resamples, seed)  # resamples × seeds
    boot = np.einsum("bn,fnk->bfk", counts, ranks) / n
    low, high = _interval(boot, confidence)
    fraction = np.repeat(np.asarray(fractions, float), len(strategies))
    return pd.DataFrame(
        {
            "fraction": fraction,
            "budget_epochs": fraction * float(total_epochs),
            "strategy": np.tile(strategies, len(fractions)),
            "seeds": n,
            "seeds_with_value": (~np.isnan(values)).sum(axis=1).ravel(),
            "mean_rank": ranks.mean(axis=1).ravel(),
            "rank_low": low.ravel(),
            "rank_high": high.ravel(),
        }
    )[columns]


def budget_winners(
    ranks: pd.DataFrame, fractions: Sequence[float] = WINNER_FRACTIONS
) -> pd.DataFrame:
    """Which strategy has the best mean rank at each of `fractions` of the budget (ties:
    registry order), with its interval and the runner-up's; `clear` is True when the
    winner's interval lies wholly below (better than) the runner-up's."""
    columns = WINNER_COLUMNS
    rows = []
    for fraction in fractions:
        at = ranks[np.isclose(ranks["fraction"].astype(float), fraction)]
        if at.empty:
            continue
        ordered = at.sort_values("mean_rank", kind="stable")
        first = ordered.iloc[0]
        second = ordered.iloc[1] if len(ordered) > 1 else None
        rows.append(
            {
                "fraction": float(fraction),
                "budget_epochs": float(first["budget_epochs"]),
                "winner": first["strategy"],
                "mean_rank": float(first["mean_rank"]),
                "rank_low": float(first["rank_low"]),
                "rank_high": float(first["rank_high"]),
                "runner_up": None if second is None else second["strategy"],
                "runner_up_mean_rank": np.nan if second is None else float(second["mean_rank"]),
                "runner_up_low": np.nan if second is None else float(second["rank_low"]),
                "runner_up_high": np.nan if second is None else float(second["rank_high"]),
                "clear": bool(second is not None and first["rank_high"] < second["rank_low"]),
            }
        )
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------ P(A beats B)
def beat_probabilities(
    runs: pd.DataFrame,
    mode: str,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """For each ordered pair (a, b) of strategies, the share of paired seeds on which a's
    final best validation metric is better than b's (ties count half; a run with no
    finite value loses to one with a value), with a percentile bootstrap interval from
    resampling seeds. P(a, b) + P(b, a) = 1."""
    higher = better_is_higher(mode)
    columns = PAIR_COLUMNS
    strategies, seeds, finals = _final_matrix(runs)
    k, n = len(strategies), len(seeds)
    if k < 2 or n == 0:
        return pd.DataFrame(columns=columns)
    score = finals if higher else -finals
    score = np.where(np.isnan(score), -np.inf, score)  # nothing found: worse than anything
    a, b = score[:, :, None], score[:, None, :]  # seeds × a × b
    wins = (a > b).astype(float)
    ties = (a == b).astype(float)
    shares = wins + 0.5 * ties
    counts = _resample_counts(n, resamples, seed)
    boot = (counts @ shares.reshape(n, k * k) / n).reshape(resamples, k, k)
    low, high = _interval(boot, confidence)
    ia, ib = np.nonzero(~np.eye(k, dtype=bool))
    return pd.DataFrame(
        {
            "strategy_a": np.asarray(strategies)[ia],
            "strategy_b": np.asarray(strategies)[ib],
            "seeds": n,
            "wins_a": wins.sum(axis=0)[ia, ib].astype(int),
            "ties": ties.sum(axis=0)[ia, ib].astype(int),
            "wins_b": wins.sum(axis=0)[ib, ia].astype(int),
            "p_a_better": shares.mean(axis=0)[ia, ib],
            "p_low": low[ia, ib],
            "p_high": high[ia, ib],
        }
    )[columns]


# ------------------------------------------------- Friedman and Nemenyi
@dataclass(frozen=True)
class RankTest:
    """The Friedman test on the final best per paired seed and the Nemenyi post-hoc
    critical difference (CD) of mean ranks: two strategies whose mean ranks differ by
    more than CD differ significantly at `alpha` (Demšar 2006)."""

    strategies: list[str]
    seeds: int
    statistic: float  # Friedman's chi-square (NaN with fewer than three strategies)
    p_value: float
    alpha: float
    q_alpha: float  # studentized range quantile / √2
    critical_difference: float
    mean_ranks: pd.Series  # per strategy, best (lowest) first
    groups: list[tuple[str, ...]] = field(default_factory=list)  # within CD of each other

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha) if not math.isnan(self.p_value) else False

    def summary(self) -> pd.DataFrame:
        """One row: the tests, their statistic, p-value and CD (friedman.csv)."""
        return pd.DataFrame(
            [
                {
                    "method": "Friedman (scipy.stats.friedmanchisquare) + Nemenyi post-hoc",
                    "strategies": len(self.strategies),
                    "seeds": self.seeds,
                    "chi_square": self.statistic,
                    "p_value": self.p_value,
                    "alpha": self.alpha,
                    "q_alpha": self.q_alpha,
                    "critical_difference": self.critical_difference,
                    "groups": "; ".join(" = ".join(g) for g in self.groups if len(g) > 1),
                }
            ]
        )

    def table(self) -> pd.DataFrame:
        """Per strategy, best first: mean rank, its group letters (strategies sharing a
        letter are not significantly different) and those strategies by name."""
        letters = {s: "" for s in self.mean_ranks.index}
        same: dict[str, set[str]] = {s: set() for s in self.mean_ranks.index}
        for letter, group in zip(string.ascii_lowercase, self.groups, strict=False):
            for name in group:
                letters[name] += letter
                same[name].update(set(group) - {name})
        return pd.DataFrame(
            {
                "strategy": list(self.mean_ranks.index),
                "mean_rank": self.mean_ranks.to_numpy(float),
                "group": [letters[s] for s in self.mean_ranks.index],
                "not_different_from": [
                    ", ".join(s for s in self.mean_ranks.index if s in same[name])
                    for name in self.mean_ranks.index
                ],
            }
        )


def nemenyi_cd(strategies: int, seeds: int, alpha: float = ALPHA) -> tuple[float, float]:
    """q_alpha = studentized_range.ppf(1 − alpha, k, ∞) / √2 and the critical difference
    CD = q_alpha · √(k(k+1) / 6N) of the Nemenyi test (k strategies, N seeds)."""
    from scipy.stats import studentized_range

    q_alpha = float(studentized_range.ppf(1.0 - alpha, strategies, np.inf)) / math.sqrt(2.0)
    return q_alpha, q_alpha * math.sqrt(strategies * (strategies + 1) / (6.0 * seeds))


def cd_groups(mean_ranks: pd.Series, critical_difference: float) -> list[tuple[str, ...]]:
    """The maximal runs of strategies (in mean-rank order) whose mean ranks lie within the
    critical difference of each other — the bars of a CD diagram; a strategy in no such
    run of two or more forms a group of its own. In mean-rank order."""
    ordered = mean_ranks.sort_values(kind="stable")
    names, values = list(ordered.index), ordered.to_numpy(float)
    groups: list[tuple[str, ...]] = []
    reach = -1
    for i in range(len(names)):
        last = int(np.searchsorted(values, values[i] + critical_difference, side="right")) - 1
        if last > reach:  # not inside the previous group
            groups.append(tuple(names[i : last + 1]))
            reach = last
    return groups


def rank_test(runs: pd.DataFrame, mode: str, alpha: float = ALPHA) -> RankTest:
    """Friedman test (scipy.stats.friedmanchisquare) over the paired seeds on each run's
    final best validation metric, then the Nemenyi critical difference of mean ranks and
    the groups of strategies it cannot tell apart."""
    from scipy.stats import friedmanchisquare

    higher = better_is_higher(mode)
    strategies, seeds, finals = _final_matrix(runs)
    k, n = len(strategies), len(seeds)
    if k < 2 or n == 0:
        empty = pd.Series(dtype=float, name="mean_rank")
        return RankTest(strategies, n, math.nan, math.nan, alpha, math.nan, math.nan, empty)
    ranks = _ranks(finals, higher)  # seeds × strategies
    mean_ranks = pd.Series(ranks.mean(axis=0), index=strategies, name="mean_rank")
    mean_ranks = mean_ranks.sort_values(kind="stable")
    if k < 3:  # scipy's Friedman test needs three groups; the Wilcoxon table covers two
        statistic, p_value = math.nan, math.nan
    elif np.all(ranks == ranks[:, :1]):  # every seed a tie: no difference (scipy: 0/0)
        statistic, p_value = 0.0, 1.0
    else:  # ranks re-rank to themselves, so this is the test on the final values
        result = friedmanchisquare(*ranks.T)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    q_alpha, cd = nemenyi_cd(k, n, alpha)
    return RankTest(
        strategies, n, statistic, p_value, alpha, q_alpha, cd, mean_ranks,
        cd_groups(mean_ranks, cd),
    )  # fmt: skip


# ------------------------------------------------------------------ together
@dataclass
class ManySeeds:
    """Every many-seeds table of the report, computed once."""

    strategies: list[str]
    seeds: list[int]
    total_epochs: int
    ranks: pd.DataFrame  # budget_ranks
    winners: pd.DataFrame  # budget_winners
    beats: pd.DataFrame  # beat_probabilities
    test: RankTest

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        return {
            "many_seeds_mean_rank.csv": self.ranks,
            "many_seeds_winners.csv": self.winners,
            "many_seeds_p_better.csv": self.beats,
            "many_seeds_friedman.csv": self.test.summary(),
            "many_seeds_critical_difference.csv": self.test.table(),
        }


def many_seeds(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    total_epochs: int,
    mode: str,
    minimum: int = MANY_SEEDS,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> ManySeeds | None:
    """The many-seeds comparisons of `tables.run_table` runs and `tables.anytime`
    curves, or None with fewer than `minimum` paired seeds (`many_seeds_shortfall`)."""
    if many_seeds_shortfall(runs, minimum) is not None:
        return None
    strategies, seeds = paired_seeds(runs)
    fractions = sorted({*BUDGET_FRACTIONS, *WINNER_FRACTIONS})
    ranks = budget_ranks(curves, total_epochs, mode, fractions, resamples, seed)
    return ManySeeds(
        strategies=strategies,
        seeds=seeds,
        total_epochs=int(total_epochs),
        ranks=ranks,
        winners=budget_winners(ranks),
        beats=beat_probabilities(runs, mode, resamples, seed),
        test=rank_test(runs, mode),
    )


__all__ = [
    "ALPHA",
    "BUDGET_FRACTIONS",
    "MANY_SEEDS",
    "RESAMPLES",
    "WINNER_FRACTIONS",
    "ManySeeds",
    "RankTest",
    "beat_probabilities",
    "budget_best",
    "budget_ranks",
    "budget_winners",
    "cd_groups",
    "many_seeds",
    "many_seeds_shortfall",
    "nemenyi_cd",
    "paired_seeds",
    "rank_test",
]

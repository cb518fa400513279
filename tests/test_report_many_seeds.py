"""The report's many-seeds comparisons and the replay banner: numbers checked on small
hand-made frames, the section and banner on synthetic results (no Ray, no training)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from hpo.records import ReplayInfo, read_study_record, write_study_record
from hpo.report import build_report
from hpo.report import many_seeds as ms
from hpo.report.bench import synthetic_study
from hpo.report.build import MANY_SEEDS_SECTION, SECTION_IDS, replay_summary
from tests.test_report_build import section

STRATEGIES = ["grid", "random", "sha"]  # registry order


def runs_of(finals: dict[str, list[float]]) -> pd.DataFrame:
    """A run table: each strategy's final best per seed 0, 1, …"""
    rows = [
        {"strategy": s, "seed": k, "epochs": 5, "best_val": v}
        for s, values in finals.items()
        for k, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def curves_of(bests: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """Anytime curves: each run's best so far after cumulative epochs 1, 2, …"""
    rows = [
        {"strategy": s, "seed": k, "cum_epochs": i + 1, "wall_s": float(i), "best_so_far": v}
        for (s, k), values in bests.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def pair(beats: pd.DataFrame, a: str, b: str) -> pd.Series:
    return beats[(beats["strategy_a"] == a) & (beats["strategy_b"] == b)].iloc[0]


# ------------------------------------------------------------------ numbers
def test_a_strategy_that_wins_on_every_seed_beats_with_probability_one_and_separates():
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 0.02, (3, 12))
    runs = runs_of({"grid": 0.9 + noise[0], "random": 0.8 + noise[1], "sha": 0.7 + noise[2]})
    beats = ms.beat_probabilities(runs, "max")
    assert len(beats) == 6  # ordered pairs
    top = pair(beats, "grid", "random")
    assert (top.p_a_better, top.p_low, top.p_high) == (1.0, 1.0, 1.0)
    assert (top.wins_a, top.ties, top.wins_b, top.seeds) == (12, 0, 0, 12)
    assert pair(beats, "sha", "grid").p_a_better == 0.0
    test = ms.rank_test(runs, "max")
    assert list(test.mean_ranks.index) == ["grid", "random", "sha"]
    assert test.mean_ranks.tolist() == [1.0, 2.0, 3.0]
    # every seed ranks 1, 2, 3: chi² = 12N/(k(k+1)) Σ R² − 3N(k+1) = 24 with N = 12, k = 3
    assert test.statistic == pytest.approx(24.0)
    assert test.p_value == pytest.approx(math.exp(-12.0))  # chi² with 2 df: exp(−x/2)
    assert test.significant
    assert test.critical_difference == pytest.approx(2.3437 * math.sqrt(12 / 72), abs=1e-3)
    assert test.groups == [("grid",), ("random",), ("sha",)]
    assert test.table()["group"].tolist() == ["a", "b", "c"]


def test_a_loss_is_better_lower():
    runs = runs_of({"grid": [0.5, 0.4, 0.6], "random": [0.3, 0.2, 0.1]})
    assert pair(ms.beat_probabilities(runs, "min"), "random", "grid").p_a_better == 1.0
    assert list(ms.rank_test(runs, "min").mean_ranks.index) == ["random", "grid"]


def test_identical_strategies_are_even_and_not_significantly_different():
    rng = np.random.default_rng(7)
    runs = runs_of({s: rng.normal(0.8, 0.02, 40) for s in STRATEGIES})
    beats = ms.beat_probabilities(runs, "max")
    assert beats["p_a_better"].between(0.3, 0.7).all()
    assert ((beats["p_low"] <= 0.5) & (beats["p_high"] >= 0.5)).all()
    test = ms.rank_test(runs, "max")
    assert test.p_value > 0.2 and not test.significant
    assert test.groups == [tuple(test.mean_ranks.index)]  # one group: no pair differs


def test_equal_values_on_every_seed_are_ties():
    runs = runs_of({s: [0.5] * 10 for s in STRATEGIES})
    beats = ms.beat_probabilities(runs, "max")
    assert set(beats["p_a_better"]) == {0.5} and set(beats["ties"]) == {10}
    test = ms.rank_test(runs, "max")
    assert (test.statistic, test.p_value) == (0.0, 1.0)
    assert test.mean_ranks.tolist() == [2.0, 2.0, 2.0]


def test_a_run_without_a_value_loses_and_two_such_runs_tie():
    runs = runs_of({"grid": [0.5, np.nan], "random": [np.nan, np.nan], "sha": [0.4, 0.1]})
    beats = ms.beat_probabilities(runs, "max")
    assert pair(beats, "grid", "random").p_a_better == 0.75  # wins seed 0, ties seed 1
    assert pair(beats, "sha", "random").p_a_better == 1.0


def test_mean_rank_over_the_budget_by_hand():
    # budget 4 epochs: 50 % is cum_epochs ≤ 2, 100 % ≤ 4
    curves = curves_of(
        {
            ("grid", 0): [0.5, 0.5, 0.9, 0.9],  # seed 0 at 50 %: random 1, grid 2, sha 3
            ("random", 0): [0.6, 0.7, 0.7, 0.7],
            ("sha", 0): [np.nan, 0.4, 0.5],  # ended early: keeps 0.5 at 100 %
            ("grid", 1): [0.1, 0.2, 0.2, 0.2],  # seed 1 at 50 %: sha 1, random 2, grid 3
            ("random", 1): [0.3, 0.3, 0.3, 0.3],
            ("sha", 1): [0.8, 0.8, 0.8, 0.8],
            ("grid", 2): [0.1, 0.2, 0.2, 0.2],  # seed 2 lacks random: not a paired seed
        }
    )
    ranks = ms.budget_ranks(curves, 4, "max", fractions=(0.25, 0.5, 1.0), resamples=200)
    mean = ranks.set_index(["fraction", "strategy"])["mean_rank"]
    assert ranks["seeds"].eq(2).all()
    # at 25 % (1 epoch) sha of seed 0 has no value yet: it ranks last
    assert mean[0.25].to_dict() == {"grid": 2.5, "random": 1.5, "sha": 2.0}
    assert mean[0.5].to_dict() == {"grid": 2.5, "random": 1.5, "sha": 2.0}
    # at 100 %: seed 0 grid 1, random 2, sha 3; seed 1 sha 1, random 2, grid 3
    assert mean[1.0].to_dict() == {"grid": 2.0, "random": 2.0, "sha": 2.0}
    at_end = ranks[ranks["fraction"] == 1.0].set_index("strategy")
    assert at_end.loc["random", ["rank_low", "rank_high"]].tolist() == [2.0, 2.0]  # always 2
    assert at_end.loc["grid", "rank_low"] == 1.0 and at_end.loc["grid", "rank_high"] == 3.0
    assert ranks.set_index(["fraction", "strategy"]).loc[(0.25, "sha"), "seeds_with_value"] == 1
    _, seeds, values = ms.budget_best(curves, 4, (0.5,))
    assert seeds == [0, 1] and values[0, 0].tolist() == [0.5, 0.7, 0.4]


def test_budget_winners_name_the_best_mean_rank_and_whether_it_is_clear():
    ranks = pd.DataFrame(
        {
            "fraction": [0.1, 0.1, 1.0, 1.0],
            "budget_epochs": [10.0, 10.0, 100.0, 100.0],
            "strategy": ["grid", "sha", "grid", "sha"],
            "mean_rank": [1.8, 1.2, 1.1, 1.9],
            "rank_low": [1.5, 1.0, 1.0, 1.7],
            "rank_high": [2.0, 1.6, 1.3, 2.0],
        }
    )
    winners = ms.budget_winners(ranks, (0.1, 1.0))
    assert winners["winner"].tolist() == ["sha", "grid"]
    assert winners["runner_up"].tolist() == ["grid", "sha"]
    assert winners["clear"].tolist() == [False, True]  # 1.6 ≥ 1.5; 1.3 < 1.7


@pytest.mark.parametrize(
    ("k", "q"), [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (8, 3.031), (10, 3.164)]
)
def test_nemenyi_q_alpha_is_demsars_table(k, q):
    q_alpha, cd = ms.nemenyi_cd(k, 50)
    assert q_alpha == pytest.approx(q, abs=1e-3)
    assert cd == pytest.approx(q_alpha * math.sqrt(k * (k + 1) / 300))


def test_cd_groups_are_the_maximal_runs_within_the_critical_difference():
    apart = pd.Series({"a": 1.0, "b": 1.5, "c": 3.0, "d": 3.2})
    assert ms.cd_groups(apart, 1.0) == [("a", "b"), ("c", "d")]
    chain = pd.Series({"c": 2.6, "a": 1.0, "b": 1.8})
    assert ms.cd_groups(chain, 1.0) == [("a", "b"), ("b", "c")]
    assert ms.cd_groups(chain, 0.1) == [("a",), ("b",), ("c",)]


def test_paired_seeds_are_the_seeds_every_reported_strategy_ran():
    runs = runs_of({"grid": [0.5] * 4, "sha": [0.5] * 4})
    runs.loc[(runs["strategy"] == "sha") & (runs["seed"] == 3), "epochs"] = 0  # never reported
    assert ms.paired_seeds(runs) == (["grid", "sha"], [0, 1, 2])
    assert "these results have 3" in ms.many_seeds_shortfall(runs)
    assert ms.many_seeds_shortfall(runs, minimum=3) is None


# ------------------------------------------------------------ in the report
MANY = 10  # seeds: ms.MANY_SEEDS
REPLAY = ReplayInfo(
    table="results/synthetic/table",
    table_hash="a" * 64,
    table_configs=600,
    table_seeds=[0, 1, 2],
    workers=4,
    charge_decisions=True,
    surrogate="k-nearest neighbours (k=5)",
    surrogate_mae_final=0.0123,
    surrogate_mae_curve=0.015,
    predicted_share=0.12,
    real_s=12.0,
    simulated_s=3.4e5,
)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A replay: 3 strategies × 10 seeds, no test metrics, and its report."""
    assert ms.MANY_SEEDS == MANY
    folder = tmp_path_factory.mktemp("replay")
    study_dir = synthetic_study(
        folder, trials=3 * MANY * 4, epochs=3, strategies=STRATEGIES, seeds=range(MANY)
    )
    record = read_study_record(study_dir)
    for run in record.runs.values():
        run.best.test, run.best.checkpoint_epoch = {}, None
    record.replay = REPLAY
    write_study_record(study_dir, record)
    return study_dir, build_report(study_dir).read_text()


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """A trained study with 3 seeds, and its report."""
    folder = tmp_path_factory.mktemp("few")
    study_dir = synthetic_study(
        folder, trials=3 * 3 * 4, epochs=3, strategies=STRATEGIES, seeds=(0, 1, 2)
    )
    return study_dir, build_report(study_dir).read_text()


def test_the_replay_banner_is_the_first_line_of_the_page(replayed):
    page = replayed[1]
    body = page.split("<body>", 1)[1]
    match = re.match(r'<div class="banner replay" id="replay">([^<]*)</div><h1>', body)
    assert match, body[:300]
    banner = match.group(1)
    assert banner.startswith("REPLAY: simulated on recorded learning curves, nothing was trained")
    for fact in (
        "results/synthetic/table (600 configurations × 3 training seeds: 0, 1, 2)",
        "4 simulated workers",
        "decision time charged",
        "surrogate: k-nearest neighbours (k=5), held-out MAE of final val_accuracy 0.0123 "
        "(curve 0.0150), 12.0 % of trial-epochs predicted",
        "no test metric was measured",
    ):
        assert fact in banner
    assert "<h1>HPO study report (replay, simulated): synthetic</h1>" in page


def test_a_trained_study_has_no_replay_banner(few):
    study_dir, page = few
    assert 'id="replay"' not in page and "REPLAY" not in page
    assert replay_summary(read_study_record(study_dir)) is None


def test_an_exact_replay_says_every_configuration_was_looked_up(replayed):
    record = read_study_record(replayed[0])
    record.replay = REPLAY.model_copy(update={"surrogate": None, "charge_decisions": False})
    text = replay_summary(record)
    assert "every configuration looked up exactly in the table" in text
    assert "decision time not charged" in text and "MAE" not in text


def test_a_replay_shows_no_empty_test_columns_and_labels_simulated_seconds(replayed):
    page = replayed[1]
    board = section(page, "leaderboard")
    assert "of selected config" not in board and "simulated wall time (s)" in board
    assert "No run has a test_accuracy measurement" in board
    configs = section(page, "best-configs")
    assert "test checkpoint epoch" not in configs and "<th>test_accuracy</th>" not in configs
    assert "simulated seconds" in section(page, "anytime")
    assert "median simulated seconds" in section(page, "time-to-target")


def test_the_many_seeds_section_follows_the_statistics_with_its_files(replayed):
    study_dir, page = replayed
    ids = re.findall(r'<section id="([^"]+)"><h2>(\d+)\. ', page)
    expected = list(SECTION_IDS)
    expected.insert(SECTION_IDS.index("statistics") + 1, MANY_SEEDS_SECTION[0])
    assert [i for i, _ in ids] == expected
    assert [int(n) for _, n in ids] == list(range(1, len(expected) + 1))
    body = section(page, "many-seeds")
    assert f"{MANY} seeds on which all 3 strategies ran" in body
    assert "Friedman test (scipy.stats.friedmanchisquare)" in body and "CD = " in body
    assert body.count("<img") == 3
    report = study_dir / "report"
    winners = pd.read_csv(report / "many_seeds_winners.csv")
    assert winners["fraction"].tolist() == [0.1, 0.3, 1.0]
    ranks = pd.read_csv(report / "many_seeds_mean_rank.csv")
    assert len(ranks) == 20 * 3 and ranks["seeds"].eq(MANY).all()
    # at 100 % of the budget every run has spent all it reported: the leaderboard's ranks
    board = pd.read_csv(report / "leaderboard.csv").set_index("strategy")["mean_rank"]
    final = ranks[ranks["fraction"] == 1.0].set_index("strategy")["mean_rank"]
    assert final.to_dict() == pytest.approx(board.to_dict())
    cd = pd.read_csv(report / "many_seeds_critical_difference.csv").set_index("strategy")
    assert cd["mean_rank"].to_dict() == pytest.approx(board.to_dict())
    beats = pd.read_csv(report / "many_seeds_p_better.csv")
    assert len(beats) == 6 and beats["seeds"].eq(MANY).all()
    friedman = pd.read_csv(report / "many_seeds_friedman.csv")
    assert friedman["seeds"].tolist() == [MANY] and 0 <= friedman["p_value"].iloc[0] <= 1
    for name in ("mean_rank", "p_better", "critical_difference"):
        assert (report / f"many_seeds_{name}.png").stat().st_size > 1000


def test_with_three_seeds_there_is_no_many_seeds_section_and_one_line_says_why(few):
    study_dir, page = few
    assert 'id="many-seeds"' not in page
    assert not list((study_dir / "report").glob("many_seeds_*"))
    statistics = section(page, "statistics")
    assert f"need at least {MANY} seeds that every strategy ran; these results have 3" in (
        statistics
    )
    assert "Too few seeds for these tests to mean anything: 3 paired seeds" in statistics

"""The report's fidelity choice, proposals, PBT schedule and seed arithmetic, checked by
value on small hand-made frames (no Ray, no files)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hpo.records import RunRecord, StudyRecord
from hpo.report import tables as tab
from hpo.spec import Budget, parse_study
from tests.conftest import TINY_STUDY

NAN = float("nan")
BUDGET = Budget(max_epochs=9, min_epochs=1, reduction_factor=3, total_epochs=100)


def trial(
    strategy: str,
    trial_id: str,
    values: list[float],
    status: str = "finished",
    seed: int = 0,
    **config,
) -> pd.DataFrame:
    """One trial's rows: epoch 1..len(values); a config value may be a per-epoch list."""
    n = len(values)
    return pd.DataFrame(
        {
            "strategy": strategy,
            "seed": seed,
            "trial_id": trial_id,
            "status": status,
            "epoch": range(1, n + 1),
            "val_accuracy": values,
            "cum_epochs": range(1, n + 1),
            **{f"config/{k}": v for k, v in config.items()},
        }
    )


def study(*trials: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(trials, ignore_index=True)


def full(strategy: str, count: int, start: int = 0, epochs: int = 9) -> list[pd.DataFrame]:
    """`count` trials trained to `epochs`, each peaking at epoch 5 and ending lower."""
    curve = [0.5, 0.6, 0.7, 0.8, 0.95, 0.9, 0.9, 0.9, 0.85][:epochs]
    return [
        trial(strategy, f"{strategy}{i}", curve, lr=0.01 * (i + 1))
        for i in range(start, start + count)
    ]


def stopped(strategy: str, count: int, epochs: int, start: int = 0) -> list[pd.DataFrame]:
    """`count` trials stopped after `epochs` epochs (a rung of SHA / ASHA)."""
    return [
        trial(strategy, f"{strategy}{i}", [0.1 + 0.01 * e for e in range(epochs)], "early_stopped")
        for i in range(start, start + count)
    ]


# ----------------------------------------------------------------- fidelity
def test_rungs_are_min_epochs_times_powers_of_eta_highest_first():
    assert tab.fidelity_rungs(BUDGET) == [9, 3, 1]
    assert tab.fidelity_rungs(Budget(max_epochs=20, min_epochs=2, total_epochs=40)) == [18, 6, 2]


def test_full_trials_are_compared_at_max_epochs_and_one_epoch_trials_left_out():
    trials = study(
        *full("grid", 8), *stopped("sha", 20, 1), trial("sha", "d", [0.5, NAN], "diverged")
    )
    fidelity = tab.choose_fidelity(trials, "val_accuracy", BUDGET)
    assert (fidelity.epoch, fidelity.reason, fidelity.trials) == (9, "max_epochs", 8)
    assert (fidelity.stopped, fidelity.diverged) == (20, 1)
    assert fidelity.by_strategy == {"grid": 8}
    assert fidelity.describe() == "at epoch 9 (max_epochs): 8 trials that reached it (grid 8)"
    at = tab.trials_at(trials, "val_accuracy", fidelity.epoch)
    assert set(at["strategy"]) == {"grid"} and len(at) == 8
    # the value at epoch 9, not the best-so-far 0.95 of epoch 5
    assert at[tab.AT_FIDELITY].tolist() == [0.85] * 8
    assert at["epochs"].tolist() == [9] * 8 and set(at["status"]) == {"finished"}


def test_too_few_full_trials_fall_back_to_the_highest_rung_enough_trials_reached():
    trials = study(*full("asha", 3), *stopped("asha", 6, 3, start=3), *stopped("asha", 30, 1, 9))
    fidelity = tab.choose_fidelity(trials, "val_accuracy", BUDGET)
    assert fidelity.epoch == 3 and fidelity.trials == 9  # 3 full + 6 stopped at rung 3
    assert fidelity.reason.startswith("rung min_epochs·η^1")
    assert "fewer than 8 trials reached max_epochs = 9" in fidelity.reason
    at = tab.trials_at(trials, "val_accuracy", 3)
    full_ones = at[at["epochs"] == 9]
    assert full_ones[tab.AT_FIDELITY].tolist() == [0.7] * 3  # their epoch-3 value
    assert fidelity.stopped == 30


def test_a_rung_is_preferred_to_a_higher_epoch_off_the_rungs():
    # 8 trials reached epoch 5 (budget-stopped), only 4 of them epoch 9: rung 3 wins
    trials = study(*full("random", 4), *stopped("random", 4, 5, start=4))
    assert tab.choose_fidelity(trials, "val_accuracy", BUDGET).epoch == 3


def test_without_an_eligible_rung_the_highest_epoch_enough_trials_reached():
    budget = Budget(max_epochs=9, min_epochs=3, reduction_factor=3, total_epochs=50)
    trials = study(*stopped("random", 8, 2))  # the budget ended them before rung 3
    fidelity = tab.choose_fidelity(trials, "val_accuracy", budget)
    assert fidelity.epoch == 2 and "or any rung" in fidelity.reason


def test_a_small_study_takes_the_epoch_most_trials_reached():
    trials = study(*full("grid", 2), *stopped("sha", 3, 1))
    fidelity = tab.choose_fidelity(trials, "val_accuracy", BUDGET)
    assert (fidelity.epoch, fidelity.trials) == (1, 5)
    assert "fewer than 8 trials reached any epoch" in fidelity.reason
    nothing = tab.choose_fidelity(trials.iloc[0:0], "val_accuracy", BUDGET)
    assert (nothing.epoch, nothing.trials) == (9, 0)


def test_a_trial_that_diverged_after_the_fidelity_counts_with_its_value_there():
    trials = study(*stopped("sha", 8, 3), trial("sha", "late", [0.3, 0.4, 0.5, NAN], "diverged"))
    fidelity = tab.choose_fidelity(trials, "val_accuracy", BUDGET)
    assert (fidelity.epoch, fidelity.trials, fidelity.diverged) == (3, 9, 0)
    at = tab.trials_at(trials, "val_accuracy", 3).set_index("trial_id")
    assert at.loc["late", tab.AT_FIDELITY] == 0.5 and at.loc["late", "status"] == "diverged"


def test_a_pbt_trial_is_placed_by_the_config_in_force_at_the_fidelity():
    lr = [0.1] * 4 + [0.08] * 5  # exploited and perturbed after epoch 4
    trials = study(*full("grid", 8), trial("pbt", "p", [0.5] * 9, lr=lr))
    at = tab.trials_at(trials, "val_accuracy", 9).set_index("trial_id")
    assert at.loc["p", "config/lr"] == 0.08
    assert (
        tab.trials_at(trials, "val_accuracy", 3).set_index("trial_id").loc["p", "config/lr"] == 0.1
    )


# ---------------------------------------------------------------- proposals
def test_proposals_count_per_strategy_with_the_model_share_over_seeds():
    def labelled(strategy, seed, labels):
        return study(
            *(
                trial(strategy, f"{strategy}{seed}-{i}", [0.5], seed=seed).assign(proposed_by=label)
                for i, label in enumerate(labels)
            )
        )

    pbt = trial("pbt", "p0", [0.5, 0.6, 0.7]).assign(
        proposed_by=["random", "perturbation", "perturbation"]
    )
    trials = study(
        labelled("optuna", 0, ["startup", "startup", "model", "model"]),  # share 0.5
        labelled("optuna", 1, ["startup", "model", "model", "model"]),  # share 0.75
        labelled("grid", 0, ["grid"] * 3),
        pbt,
        trial("pbt", "p1", [0.5, 0.6]).assign(proposed_by="random"),
    )
    table = tab.proposals(trials).set_index("strategy")
    assert list(table.index) == ["grid", "optuna", "pbt"]
    optuna = table.loc["optuna"]
    assert (optuna["seeds"], optuna["trials"], optuna["startup"], optuna["model"]) == (2, 8, 3, 5)
    assert optuna["model_share_mean"] == pytest.approx(0.625)
    assert optuna["model_share_min"] == pytest.approx(0.5)
    assert table.loc["grid", ["grid", "model_share_mean"]].tolist() == [3, 0.0]
    # a PBT trial counts once, as perturbed if any of its epochs was
    assert table.loc["pbt", ["trials", "random", "perturbation"]].tolist() == [2, 1, 1]


def test_proposals_of_results_without_the_column_are_empty_and_unknown_values_kept():
    old = trial("grid", "g", [0.5, 0.6])
    assert tab.proposals(old).empty and "model_share_min" in tab.proposals(old).columns
    odd = study(old.assign(proposed_by="lhs"), trial("grid", "h", [0.5]).assign(proposed_by=NAN))
    table = tab.proposals(odd).set_index("strategy")
    assert table.loc["grid", ["lhs", "not_recorded", "trials"]].tolist() == [1, 1, 2]


# --------------------------------------------------------------------- pbt
def test_pbt_schedule_follows_the_best_trial_of_each_seed_and_marks_exploits():
    best = trial(
        "pbt", "b", [0.5, 0.6, 0.7, 0.9],
        lr=[0.1, 0.1, 0.08, 0.08], dropout=[0.2, 0.2, 0.24, 0.24], optimizer="adam", units=16,
    ).assign(proposed_by=["random", "random", "perturbation", "perturbation"])  # fmt: skip
    worse = trial("pbt", "w", [0.4, 0.5, 0.6, 0.7], lr=0.01, dropout=0.1, optimizer="sgd", units=8)
    other_seed = trial(
        "pbt", "s", [0.6, 0.8], seed=1, lr=0.03, dropout=0.3, optimizer="sgd", units=8
    )
    grid = trial("grid", "g", [0.99], lr=0.5, dropout=0.0, optimizer="sgd", units=8)
    schedule = tab.pbt_schedule(study(best, worse, other_seed, grid), "val_accuracy", "max")
    assert set(zip(schedule["seed"], schedule["trial_id"], strict=True)) == {(0, "b"), (1, "s")}
    assert list(dict.fromkeys(schedule["param"])) == ["lr", "dropout"]  # units never changed
    lr = schedule[(schedule["seed"] == 0) & (schedule["param"] == "lr")]
    assert lr["value"].tolist() == [0.1, 0.1, 0.08, 0.08]
    assert lr["exploited"].tolist() == [False, False, True, False]
    assert schedule[schedule["seed"] == 1]["exploited"].sum() == 0
    assert schedule["best"].iloc[0] == 0.9


def test_pbt_schedule_reads_the_lr_metric_without_a_config_lr_and_is_empty_without_pbt():
    rows = trial("pbt", "p", [0.5, 0.6, 0.7], momentum=0.9).assign(lr=[0.1, 0.05, 0.01])
    schedule = tab.pbt_schedule(rows, "val_accuracy", "max")
    assert schedule["param"].unique().tolist() == ["lr"]
    assert schedule["value"].tolist() == [0.1, 0.05, 0.01]
    assert not schedule["exploited"].any()  # a learning-rate schedule is no exploit
    assert tab.pbt_schedule(rows.assign(strategy="grid"), "val_accuracy", "max").empty


# -------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seeds", range(2, 8))
def test_min_attainable_p_is_what_scipy_gives_when_one_side_wins_every_seed(seeds):
    from scipy import stats

    wins = np.arange(1, seeds + 1) * 0.01
    p_value = stats.wilcoxon(wins, np.zeros(seeds), alternative="two-sided").pvalue
    assert tab.min_attainable_p(seeds) == pytest.approx(p_value)


def test_seeds_needed_for_a_significant_wilcoxon_test():
    assert tab.seeds_needed(0.05) == 6 and tab.seeds_needed(0.01) == 8
    assert tab.min_attainable_p(1) == 1.0 and math.isnan(tab.min_attainable_p(0))


def test_pairwise_tests_report_the_smallest_p_their_seeds_allow():
    runs = pd.DataFrame(
        [
            {"strategy": s, "seed": k, "best_val": v}
            for s, v in (("grid", 0.9), ("sha", 0.8))
            for k in range(3)
        ]
    )
    row = tab.pairwise_tests(runs, "max").iloc[0]
    assert row["seeds"] == 3 and row["min_p"] == 0.25


# ---------------------------------------------------------------- decisions
def test_runs_frame_has_decision_seconds_even_where_the_record_has_none():
    record = StudyRecord(
        study=parse_study({**TINY_STUDY, "strategies": ["grid"], "seeds": [0]}),
        study_file="t.yaml",
        study_hash="h",
        runs={"grid/seed-0": RunRecord(strategy="grid", seed=0, started=0.0)},
    )
    frame = tab.runs_frame(record)
    assert "decision_s" in frame and frame["decision_s"].isna().all()
    if "decision_s" in RunRecord.model_fields:  # once the runner records it
        record.runs["grid/seed-0"] = RunRecord(strategy="grid", seed=0, started=0.0, decision_s=2.5)
        assert tab.runs_frame(record)["decision_s"].tolist() == [2.5]


def test_seed_warning_states_the_measured_seeds_and_the_smallest_p_they_allow():
    from hpo.report.build import _seed_warning

    def pairs(*seeds: int) -> pd.DataFrame:
        return pd.DataFrame({"seeds": list(seeds)})

    five = _seed_warning(pairs(5, 5))
    assert "Too few seeds" in five and "2/2^5 = 0.0625" in five and "at least 6 seeds" in five
    mixed = _seed_warning(pairs(4, 7, 7))
    assert mixed.startswith("4 to 7 paired seeds: the smallest p-value the test can give is")
    assert "2/2^7 = 0.0156" in mixed and "1 pairs have fewer than 6 seeds" in mixed
    assert "Only 1 seed" in _seed_warning(pairs(1))

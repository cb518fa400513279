"""The report's numbers, checked by value on small hand-made frames (no Ray, no files)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hpo.records import BestTrial, RunRecord, StudyRecord
from hpo.report import tables as tab
from hpo.spec import parse_study
from hpo.strategies import STRATEGIES
from tests.conftest import TINY_STUDY

NAN = float("nan")


def record(strategies: list[str], *runs: RunRecord) -> StudyRecord:
    """study.json of a one-seed study of `strategies` with these runs recorded."""
    study = parse_study({**TINY_STUDY, "strategies": strategies, "seeds": [0]})
    return StudyRecord(
        study=study, study_file="t.yaml", study_hash="h", runs={r.key: r for r in runs}
    )


def run(strategy: str, status: str, **fields) -> RunRecord:
    return RunRecord(strategy=strategy, seed=0, started=0.0, status=status, **fields)


def best(trial_id: str, value: float, epoch: int = 2, config=None, **test) -> BestTrial:
    return BestTrial(
        trial_id=trial_id,
        epoch=epoch,
        cum_epochs=epoch,
        metric="val_accuracy",
        value=value,
        config=config or {},
        test=test,
    )


def epochs(strategy: str, seed: int, values: list[float], seconds: list[float] | None = None):
    """One run's rows: one trial per value, in report order (cum_epochs 1..n)."""
    n = len(values)
    return pd.DataFrame(
        {
            "strategy": strategy,
            "seed": seed,
            "trial_id": [f"{strategy}-{seed}-{i}" for i in range(n)],
            "status": "finished",
            "epoch": 1,
            "val_accuracy": values,
            "cum_epochs": range(1, n + 1),
            "wall_s": seconds if seconds is not None else [10.0 * (i + 1) for i in range(n)],
        }
    )


def runs(rows: list[tuple[str, int, float]], test: float = NAN) -> pd.DataFrame:
    """A run table as `run_table` returns it, from (strategy, seed, best_val)."""
    return pd.DataFrame(
        [
            {
                "strategy": s,
                "seed": k,
                "run_status": "finished",
                "trials": 3,
                "epochs": 10,
                "wall_s": 5.0,
                "decision_s": 0.5,
                "best_val": v,
                "test": test,
            }
            for s, k, v in rows
        ]
    )


# ---------------------------------------------------------------- anytime
def test_anytime_is_the_running_max_and_keeps_it_through_a_diverged_epoch():
    values = [NAN, 0.3, 0.2, NAN, 0.5, 0.4, math.inf]
    curve = tab.anytime(epochs("random", 0, values), "val_accuracy", "max")
    got = curve["best_so_far"].tolist()
    assert math.isnan(got[0])  # nothing finite yet: no made-up value
    assert got[1:] == [0.3, 0.3, 0.3, 0.5, 0.5, 0.5]
    assert curve["best_so_far"].dropna().is_monotonic_increasing
    assert curve["cum_epochs"].tolist() == list(range(1, 8))


def test_anytime_for_a_metric_to_minimize_is_the_running_min_per_run():
    trials = pd.concat(
        [epochs("sha", 0, [3.0, 1.0, 2.0]), epochs("sha", 1, [5.0, 6.0, 4.0])]
    ).rename(columns={"val_accuracy": "val_loss"})
    curve = tab.anytime(trials, "val_loss", "min")
    assert curve[curve["seed"] == 0]["best_so_far"].tolist() == [3.0, 1.0, 1.0]
    assert curve[curve["seed"] == 1]["best_so_far"].tolist() == [5.0, 5.0, 4.0]


def test_anytime_on_grid_holds_a_finished_seed_and_starts_where_every_seed_has_a_value():
    curves = tab.anytime(
        pd.concat(
            [
                epochs("asha", 0, [0.5, 0.7], seconds=[1.0, 2.0]),
                epochs("asha", 1, [0.4, 0.6, 0.9, 0.95], seconds=[3.0, 4.0, 5.0, 8.0]),
            ]
        ),
        "val_accuracy",
        "max",
    )
    grid = tab.anytime_on_grid(curves, "wall_s", points=9)  # 0, 1, ..., 8 s
    seed0 = grid[grid["seed"] == 0].set_index("wall_s")["best_so_far"]
    seed1 = grid[grid["seed"] == 1].set_index("wall_s")["best_so_far"]
    assert seed0.index.tolist() == seed1.index.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert seed0.tolist() == [0.7] * 6  # ended at 2 s: keeps what it found
    assert seed1.tolist() == [0.4, 0.6, 0.9, 0.9, 0.9, 0.95]
    assert grid.groupby("wall_s")["best_so_far"].mean().is_monotonic_increasing


# ----------------------------------------------------------- time to target
def test_time_to_target_picks_the_first_crossing():
    curves = tab.anytime(
        epochs("grid", 0, [0.5, 0.81, 0.7, 0.9, 0.95], seconds=[2, 4, 6, 8, 10]),
        "val_accuracy",
        "max",
    )
    targets = pd.DataFrame({"target": ["a", "b", "c"], "level": [0.8, 0.9, 0.99]})
    got = tab.time_to_target(curves, targets, "max").set_index("target")
    assert got.loc["a", ["epochs", "seconds"]].tolist() == [2.0, 4.0]
    assert got.loc["b", ["epochs", "seconds"]].tolist() == [4.0, 8.0]
    assert np.isnan(got.loc["c", "epochs"]) and np.isnan(got.loc["c", "seconds"])


def test_time_to_target_for_a_loss_crosses_from_above():
    curves = tab.anytime(
        epochs("grid", 0, [3.0, 1.5, 0.9]).rename(columns={"val_accuracy": "val_loss"}),
        "val_loss",
        "min",
    )
    targets = pd.DataFrame({"target": ["t"], "level": [1.5]})
    assert tab.time_to_target(curves, targets, "min")["epochs"].tolist() == [2.0]


def test_target_levels_in_points_for_accuracy_and_percent_for_a_loss():
    accuracy = tab.target_levels(0.98, "max", bounded=True)
    assert accuracy["level"].tolist() == pytest.approx([0.975, 0.97])
    assert accuracy["target"].tolist() == ["within 0.5 points", "within 1.0 points"]
    loss = tab.target_levels(0.2, "min", bounded=False, points=[1.0])
    assert loss["level"].tolist() == pytest.approx([0.202])
    assert tab.metric_is_bounded(pd.Series([0.1, 0.99, NAN]), "max")
    assert not tab.metric_is_bounded(pd.Series([0.1, 2.3]), "max")
    assert not tab.metric_is_bounded(pd.Series([0.1, 0.2]), "min")


def test_time_to_target_summary_medians_and_speedups():
    per_run = pd.DataFrame(
        [
            # target t: grid needs 100/120 epochs, random 50/60, sha one of two seeds only
            ("t", "grid", 0, 100.0, 10.0),
            ("t", "grid", 1, 120.0, 14.0),
            ("t", "random", 0, 50.0, 5.0),
            ("t", "random", 1, 60.0, 6.0),
            ("t", "sha", 0, 10.0, 1.0),
            ("t", "sha", 1, NAN, NAN),
            # target u: only random gets there
            ("u", "grid", 0, NAN, NAN),
            ("u", "grid", 1, NAN, NAN),
            ("u", "random", 0, 80.0, 8.0),
            ("u", "random", 1, 90.0, 12.0),
        ],
        columns=["target", "strategy", "seed", "epochs", "seconds"],
    ).assign(level=0.9)
    table = tab.time_to_target_summary(per_run).set_index(["target", "strategy"])
    assert table.loc[("t", "grid"), "median_epochs"] == 110.0
    assert table.loc[("t", "random"), "median_seconds"] == 5.5
    assert table.loc[("t", "random"), "speedup_epochs_vs_grid"] == pytest.approx(110 / 55)
    assert table.loc[("t", "random"), "speedup_seconds_vs_random"] == pytest.approx(1.0)
    # half of sha's seeds missed: not reached, no speed-up, 1 of 2 seeds reached
    assert np.isnan(table.loc[("t", "sha"), "median_epochs"])
    assert np.isnan(table.loc[("t", "sha"), "speedup_epochs_vs_grid"])
    assert table.loc[("t", "sha"), "seeds_reached"] == 1
    # random reached a target grid never did: infinitely faster
    assert np.isinf(table.loc[("u", "random"), "speedup_epochs_vs_grid"])
    assert np.isnan(table.loc[("u", "grid"), "median_epochs"])
    assert list(table.index.get_level_values("strategy")[:3]) == ["grid", "random", "sha"]


# ----------------------------------------------------------- leaderboard
def test_seed_ranks_and_leaderboard_average_ranks_over_seeds():
    table = runs(
        [
            ("grid", 0, 0.90),
            ("random", 0, 0.95),
            ("sha", 0, 0.95),  # tie with random on seed 0: both rank 1.5
            ("grid", 1, 0.97),
            ("random", 1, 0.93),
            ("sha", 1, 0.91),
        ]
    )
    ranks = tab.seed_ranks(table, "max").set_index(["strategy", "seed"])["rank"]
    assert ranks.to_dict() == {
        ("grid", 0): 3.0,
        ("random", 0): 1.5,
        ("sha", 0): 1.5,
        ("grid", 1): 1.0,
        ("random", 1): 2.0,
        ("sha", 1): 3.0,
    }
    board = tab.leaderboard(table, "max").set_index("strategy")
    assert board["mean_rank"].to_dict() == {"random": 1.75, "grid": 2.0, "sha": 2.25}
    assert list(board.index) == ["random", "grid", "sha"]  # sorted by mean rank
    assert board.loc["grid", "best_val_mean"] == pytest.approx(0.935)
    assert board.loc["grid", "best_val_std"] == pytest.approx(np.std([0.90, 0.97], ddof=1))
    assert board.loc["grid", "seeds"] == 2
    # to minimize, the order of ranks flips
    flipped = tab.leaderboard(table, "min").set_index("strategy")["mean_rank"]
    assert flipped.to_dict() == {"sha": 1.75, "grid": 2.0, "random": 2.25}


def test_leaderboard_keeps_a_strategy_that_has_not_reported_yet():
    table = runs([("grid", 0, 0.9), ("random", 0, 0.8)])
    table.loc[len(table)] = ["optuna", 0, "not started", 0, 0, NAN, NAN, NAN, NAN]
    board = tab.leaderboard(table, "max").set_index("strategy")
    assert list(board.index) == ["grid", "random", "optuna"]
    assert board.loc["optuna", "seeds"] == 0 and np.isnan(board.loc["optuna", "best_val_mean"])
    assert board.loc["random", "trials_per_run"] == 3  # a missing run does not count as 0
    assert board.loc["random", "decision_s_per_run"] == 0.5
    assert board[["runs_finished", "runs"]].loc["optuna"].tolist() == [0, 1]
    assert board[["runs_finished", "runs"]].loc["grid"].tolist() == [1, 1]


def test_run_table_counts_from_trials_and_takes_wall_time_from_the_marker():
    trials = pd.concat(
        [epochs("grid", 0, [0.5, 0.7, NAN]), epochs("random", 0, [0.6], seconds=[42.0])]
    )
    meta = record(
        ["grid", "random", "sha"],
        run("grid", "finished", wall_s=33.0, best=best("grid-0-1", 0.7, test_accuracy=0.69)),
        run("random", "running"),
    )
    table = tab.run_table(tab.runs_frame(meta), trials, "val_accuracy", "max")
    table = table.set_index("strategy")
    assert table["decision_s"].isna().all()  # not recorded: NaN, not 0
    assert table.drop(columns="decision_s").loc["grid"].to_dict() == {
        "seed": 0,
        "run_status": "finished",
        "trials": 3,
        "epochs": 3,
        "wall_s": 33.0,
        "best_val": 0.7,
        "test": 0.69,
    }
    assert table.loc["random", "wall_s"] == 42.0  # still running: its last report
    assert np.isnan(table.loc["random", "test"])
    assert table.loc["sha", "run_status"] == "not started" and table.loc["sha", "trials"] == 0


# ------------------------------------------------------------- statistics
def test_pairwise_wilcoxon_sign_and_exact_p_value():
    a = [0.95, 0.96, 0.94, 0.97, 0.95, 0.96]
    b = [0.90, 0.92, 0.93, 0.91, 0.94, 0.90]  # a better on all 6 seeds
    table = runs(
        [("random", k, v) for k, v in enumerate(a)] + [("grid", k, v) for k, v in enumerate(b)]
    )
    row = tab.pairwise_tests(table, "max").iloc[0]
    assert (row["strategy_a"], row["strategy_b"]) == ("grid", "random")  # fixed order
    assert row["seeds"] == 6
    assert row["difference"] == pytest.approx(np.mean(b) - np.mean(a))
    assert row["better"] == "random" and (row["wins_a"], row["wins_b"]) == (0, 6)
    assert row["p_value"] == pytest.approx(2 / 2**6)  # exact two-sided: the smallest possible
    assert row["significant"]
    # the same numbers as a loss: grid is better now, with the same p-value
    loss = tab.pairwise_tests(table, "min").iloc[0]
    assert loss["better"] == "grid" and loss["p_value"] == pytest.approx(2 / 2**6)


def test_pairwise_with_few_seeds_is_never_significant():
    two = runs([("grid", 0, 0.9), ("grid", 1, 0.8), ("sha", 0, 0.95), ("sha", 1, 0.85)])
    row = tab.pairwise_tests(two, "max").iloc[0]
    assert row["p_value"] == pytest.approx(0.5) and not row["significant"]
    one = runs([("grid", 0, 0.9), ("sha", 0, 0.95)])
    row = tab.pairwise_tests(one, "max").iloc[0]
    assert row["seeds"] == 1 and np.isnan(row["p_value"]) and not row["significant"]
    same = runs([("grid", 0, 0.9), ("grid", 1, 0.8), ("sha", 0, 0.9), ("sha", 1, 0.8)])
    row = tab.pairwise_tests(same, "max").iloc[0]
    assert row["p_value"] == 1.0 and row["better"] == "tie"


# -------------------------------------------------------- configurations
def test_best_configs_selected_from_study_json_and_provisional_from_trials():
    trials = pd.concat([epochs("grid", 0, [0.5, 0.7]), epochs("sha", 0, [0.6, 0.8, 0.8])])
    trials["config/lr"] = [0.1, 0.01, 0.2, 0.02, 0.03]
    selected = best("grid-0-1", 0.7, epoch=1, config={"lr": 0.01}, test_accuracy=0.66)
    meta = record(
        ["grid", "sha", "asha"],
        run("grid", "finished", best=selected.model_copy(update={"checkpoint_epoch": 1})),
        run("sha", "running"),
    )
    table = tab.best_configs(tab.runs_frame(meta), trials, "val_accuracy", "max")
    table = table.set_index("strategy")
    assert list(table.index) == ["grid", "sha"]  # asha has nothing yet: no row
    assert table.loc["grid", ["selection", "trial_id", "val", "test", "config/lr"]].tolist() == [
        "selected",
        "grid-0-1",
        0.7,
        0.66,
        0.01,
    ]
    sha = table.loc["sha"]
    assert (sha["selection"], sha["trial_id"], sha["config/lr"]) == ("provisional", "sha-0-1", 0.02)
    assert np.isnan(sha["test"])  # tie 0.8/0.8: the earliest in the run wins


# -------------------------------------------------------- hyperparameters
def test_choice_index_matches_numbers_read_as_floats_and_booleans():
    assert tab.choice_index(pd.Series([32.0, 128, 64, 7]), [32, 64, 128]).tolist()[:3] == [0, 2, 1]
    assert np.isnan(tab.choice_index(pd.Series([7]), [32, 64]).iloc[0])
    assert tab.choice_index(pd.Series([True, False]), [False, True]).tolist() == [1, 0]
    assert tab.choice_index(pd.Series(["adam", "sgd"]), ["sgd", "adam"]).tolist() == [1, 0]


def test_normalized_position_uses_log_scale_for_log_domains():
    log = {"loguniform": {"low": 1e-4, "high": 1e-2}}
    assert tab.normalized_position(pd.Series([1e-4, 1e-3, 1e-2]), log).tolist() == pytest.approx(
        [0.0, 0.5, 1.0]
    )
    ints = {"randint": {"low": 2, "high": 6}}  # 2..5
    assert tab.normalized_position(pd.Series([2, 5]), ints).tolist() == [0.0, 1.0]
    choice = {"choice": ["a", "b", "c"]}
    assert tab.normalized_position(pd.Series(["c", "b"]), choice).tolist() == [1.0, 0.5]


def test_fanova_importance_finds_the_hyperparameter_that_matters():
    rng = np.random.default_rng(0)
    n = 120
    lr = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), n))
    table = pd.DataFrame(
        {
            "strategy": "random",
            "seed": 0,
            "trial_id": [str(i) for i in range(n)],
            "config/lr": lr,
            "config/optimizer": rng.choice(["sgd", "adam"], n),
            "config/units": rng.integers(1, 5, n),
            tab.AT_FIDELITY: 1 - (np.log10(lr) + 2.5) ** 2 / 10 + rng.normal(0, 0.001, n),
        }
    )
    table.loc[0, tab.AT_FIDELITY] = NAN  # diverged: left out, not scored as 0
    table.loc[1, "config/lr"] = 5.0  # outside the space: left out
    space = {
        "lr": {"loguniform": {"low": 1e-4, "high": 1e-1}},
        "optimizer": {"choice": ["sgd", "adam"]},
        "units": {"randint": {"low": 1, "high": 5}},
    }
    result, note = tab.importance(table, space, "max")
    assert result["param"].iloc[0] == "lr" and result["importance"].iloc[0] > 0.8
    assert result["importance"].sum() == pytest.approx(1.0)
    assert note.startswith(f"{n - 2} trials used") and "2 left out" in note
    empty, note = tab.importance(table.head(1), space, "max")
    assert empty.empty and "too few" in note
    # every trial scored the same: no variance
    flat = table.iloc[2:12].assign(**{tab.AT_FIDELITY: 0.9})
    empty, note = tab.importance(flat, space, "max")
    assert empty.empty and "same metric" in note


def test_parallel_coordinates_takes_the_top_trials_scaled_to_unit_range():
    table = pd.DataFrame(
        {
            "strategy": ["grid", "sha", "asha"],
            "seed": 0,
            "trial_id": ["a", "b", "c"],
            "config/lr": [1e-4, 1e-3, 1e-2],
            tab.AT_FIDELITY: [0.5, 0.9, 0.7],
        }
    )
    space = {"lr": {"loguniform": {"low": 1e-4, "high": 1e-2}}}
    top = tab.parallel_coordinates(table, space, "max", count=2)
    assert top["trial_id"].tolist() == ["b", "c"]
    assert top["lr"].tolist() == pytest.approx([0.5, 1.0])
    assert top["metric"].tolist() == [1.0, 0.0]


def test_status_counts_lists_every_status():
    table = pd.DataFrame({"status": ["finished", "diverged", "finished", "early_stopped"]})
    assert tab.status_counts(table) == {
        "finished": 2,
        "early_stopped": 1,
        "diverged": 1,
        "errored": 0,
        "running": 0,
    }


def test_strategy_order_follows_the_registry_then_alphabetical():
    names = [*reversed(list(STRATEGIES)), "zz_unregistered", "aa_unregistered"]
    assert tab.strategy_order(names) == [*STRATEGIES, "aa_unregistered", "zz_unregistered"]


def test_choice_effects_group_trials_at_the_fidelity_and_count_every_started_trial():
    at_fidelity = pd.DataFrame(
        {
            tab.AT_FIDELITY: [0.9, 0.7, 0.95, NAN],
            "config/freeze": ["head", "head", "all", "all"],
            "config/lr": [0.1, 0.2, 0.3, 0.4],
        }
    )
    started = pd.DataFrame(
        {
            "epochs": [8, 8, 8, 8, 1, 1],
            "config/freeze": ["head", "head", "all", "all", "head", "last_k_blocks"],
        }
    )
    space = {
        "freeze": {"choice": ["head", "all", "last_k_blocks"]},
        "lr": {"loguniform": {"low": 0.01, "high": 1.0}},
    }
    table = tab.choice_effects(at_fidelity, space, "max", started=started).set_index("value")
    assert list(table.index) == ["head", "all", "last_k_blocks"]  # lr is not categorical
    assert table.loc["head", ["trials", "trials_started", "epochs"]].tolist() == [2, 3, 17]
    assert table.loc["head", "median"] == pytest.approx(0.8)
    assert table.loc["all", ["trials", "best"]].tolist() == [1, 0.95]  # NaN: no value there
    last = table.loc["last_k_blocks"]
    assert (last["trials"], last["trials_started"]) == (0, 1) and math.isnan(last["best"])
    low = tab.choice_effects(at_fidelity, space, "min").set_index("value")
    assert low.loc["head", "best"] == 0.7 and "trials_started" not in low


def test_importance_ranks_the_parameters_every_trial_has_when_one_is_conditional(tmp_path):
    """momentum is an empty trials.csv cell wherever the optimizer is not momentum: those
    trials still count, over the other parameters; momentum is named as left out."""
    rng = np.random.default_rng(1)
    n = 90
    optimizer = rng.choice(["sgd", "momentum", "adam"], n)
    lr = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), n))
    frame = pd.DataFrame(
        {
            "trial_id": [str(i) for i in range(n)],
            "config/lr": lr,
            "config/optimizer": optimizer,
            "config/momentum": np.where(optimizer == "momentum", rng.uniform(0.5, 0.99, n), NAN),
            "config/dropout": rng.integers(0, 6, n) / 10,  # quniform's grid, as CSV reads it
            "config/units": np.floor(np.exp(rng.uniform(np.log(8), np.log(129), n))),
            tab.AT_FIDELITY: 1 - (np.log10(lr) + 2.5) ** 2 / 10 + rng.normal(0, 0.001, n),
        }
    )
    frame.to_csv(tmp_path / "trials.csv", index=False)
    table = pd.read_csv(tmp_path / "trials.csv")
    assert table["config/momentum"].isna().sum() == (optimizer != "momentum").sum() > 0
    space = {
        "lr": {"loguniform": {"low": 1e-4, "high": 1e-1}},
        "optimizer": {"choice": ["sgd", "momentum", "adam"]},
        "momentum": {"uniform": {"low": 0.5, "high": 0.99}, "when": {"optimizer": "momentum"}},
        "dropout": {"quniform": {"low": 0.0, "high": 0.5, "q": 0.1}},
        "units": {"lograndint": {"low": 8, "high": 129}},
    }
    result, note = tab.importance(table, space, "max")
    assert set(result["param"]) == {"lr", "optimizer", "dropout", "units"}
    assert result["param"].iloc[0] == "lr"
    assert note.startswith(f"{n} trials used;")
    assert "conditional parameters absent from some trials left out: momentum" in note
    # momentum trials alone have it: then it is ranked too
    only = table[table["config/optimizer"] == "momentum"]
    result, note = tab.importance(only, space, "max")
    assert "momentum" in set(result["param"]) and "left out" not in note


def test_new_kinds_are_placed_on_their_axes():
    units = {"lograndint": {"low": 1, "high": 101}}  # high exclusive, log scale
    assert tab.normalized_position(pd.Series([1, 100]), units).tolist() == [0.0, 1.0]
    assert tab.normalized_position(pd.Series([10]), units).iloc[0] == pytest.approx(0.5)
    dropout = {"quniform": {"low": 0.0, "high": 0.5, "q": 0.1}}
    assert tab.normalized_position(pd.Series([0.1, NAN]), dropout).iloc[0] == pytest.approx(0.2)
    assert tab.normalized_position(pd.Series([0.1, NAN]), dropout).isna().iloc[1]  # absent


def test_a_selected_config_never_holds_an_inactive_parameter():
    from hpo.results import best_config

    row = pd.Series({"trial_id": "a", "config/optimizer": "adam", "config/momentum": NAN})
    assert best_config(row) == {"optimizer": "adam"}

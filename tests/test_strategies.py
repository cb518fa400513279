"""Every strategy's Tuner configuration, and the per-run epoch budget."""

from __future__ import annotations

import json

import pytest

from hpo.spec import parse_study
from hpo.strategies import STRATEGIES
from hpo.strategies.brackets import bracket_cost, rung_plan
from hpo.strategies.budget import EpochBudget
from hpo.strategies.successive_halving import SynchronousSuccessiveHalving


@pytest.fixture
def study(study_dict):
    study_dict["budget"] = {
        "max_epochs": 9,
        "min_epochs": 1,
        "reduction_factor": 3,
        "total_epochs": 90,
    }
    study_dict["space"]["dropout"] = {"uniform": {"low": 0.0, "high": 0.5}}
    return parse_study(study_dict)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_tuner_carries_the_same_plan_as_validation(study, name):
    """What `hpo validate` and `hpo status` show (plan, no Ray) is what Tune is given."""
    strategy = STRATEGIES[name]
    assert strategy.tuner(study, seed=3).plan == strategy.plan(study, seed=3)


def test_grid_fits_the_budget(study):
    tuner = STRATEGIES["grid"].tuner(study, seed=0)
    grid_dims = {
        k for k, v in tuner.param_space.items() if isinstance(v, dict) and "grid_search" in v
    }
    assert grid_dims == {"lr", "optimizer", "dropout"}
    assert tuner.plan.notes["grid_points"] <= 90 // 9
    assert tuner.plan.planned_epochs == tuner.plan.notes["grid_points"] * 9 <= 90
    assert tuner.param_space["channels"] == 8  # fixed values pass through
    assert tuner.search_alg.max_concurrent == 2 and tuner.plan.num_samples == 1


def test_random_spends_the_budget_on_full_trials(study):
    tuner = STRATEGIES["random"].tuner(study, seed=4)
    assert tuner.plan.num_samples == 10 and tuner.scheduler is None
    assert tuner.plan.planned_epochs == 90
    assert type(tuner.param_space["lr"]).__name__ == "Float"


def test_sha_bracket_fits_the_budget(study):
    tuner = STRATEGIES["sha"].tuner(study, seed=0)
    assert isinstance(tuner.scheduler, SynchronousSuccessiveHalving)
    rungs, n = tuner.scheduler.rungs, tuner.plan.num_samples
    assert rungs == tuner.plan.notes["rungs"]
    assert rungs[0][0] == n and rungs[-1][1] == 9
    assert [epochs for _, epochs in rungs] == [1, 3, 9]
    assert tuner.plan.planned_epochs == bracket_cost(rungs)
    assert bracket_cost(rungs) <= 90 < bracket_cost(rung_plan(n + 1, 1, 9, 3))
    assert tuner.scheduler.cap.max_running == 2


def test_asha_and_hyperband_use_rays_schedulers(study):
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    asha = STRATEGIES["asha"].tuner(study, seed=0)
    assert isinstance(asha.scheduler, ASHAScheduler)
    assert asha.scheduler._max_t == 9 and asha.scheduler._reduction_factor == 3
    assert asha.scheduler._brackets[0]._rungs[-1][0] == 1  # first rung at min_epochs
    hyperband = STRATEGIES["hyperband"].tuner(study, seed=0)
    assert isinstance(hyperband.scheduler, HyperBandScheduler)
    assert hyperband.scheduler._max_t_attr == 9 and hyperband.scheduler._eta == 3
    assert hyperband.scheduler.cap.max_running == 2
    # open-ended: the run's epoch budget is what ends them
    assert asha.plan.planned_epochs is None and hyperband.plan.planned_epochs is None


def test_optuna_is_seeded_tpe(study):
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    tuner = STRATEGIES["optuna"].tuner(study, seed=7)
    assert isinstance(tuner.search_alg, OptunaSearch)
    sampler = tuner.search_alg._sampler
    assert isinstance(sampler, TPESampler)
    assert tuner.max_concurrent_trials == 2 and tuner.plan.num_samples == 10
    again = STRATEGIES["optuna"].tuner(study, seed=7).search_alg._sampler
    assert sampler._rng.rng.random() == again._rng.rng.random()


def test_budget_stops_trials_and_the_run():
    stopper = EpochBudget(max_epochs=3, total_epochs=5)
    assert stopper("a", {"training_iteration": 1}) is False
    assert stopper("a", {"training_iteration": 2}) is False
    assert stopper("b", {"training_iteration": 1, "diverged": True}) is True
    assert not stopper.stop_all()  # 2 + 1 epochs
    assert stopper("a", {"training_iteration": 3}) is True  # R reached
    assert stopper.spent == 4
    stopper("c", {"training_iteration": 1})
    assert stopper.stop_all()


def test_budget_counts_a_resumed_trial_once():
    stopper = EpochBudget(max_epochs=9, total_epochs=100)
    for epoch in (1, 2, 3, 2, 3, 4):  # restored from the epoch-1 checkpoint after a crash
        stopper("a", {"training_iteration": epoch})
    assert stopper.spent == 4


def test_budget_reads_finished_trials_after_restore(tmp_path):
    for trial, last in (("t1", 9), ("t2", 3)):
        folder = tmp_path / f"run_trial_{trial}"
        folder.mkdir()
        rows = [{"trial_id": trial, "training_iteration": i} for i in range(1, last + 1)]
        (folder / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n{cut")
    stopper = EpochBudget(max_epochs=9, total_epochs=14, experiment_dir=str(tmp_path))
    stopper("t3", {"training_iteration": 1})
    assert stopper.spent == 13 and not stopper.stop_all()
    stopper("t3", {"training_iteration": 2})
    assert stopper.stop_all()


def test_a_grid_larger_than_the_budget_says_so(study_dict):
    study_dict["budget"] = {"max_epochs": 5, "min_epochs": 5, "total_epochs": 5}
    plan = STRATEGIES["grid"].plan(parse_study(study_dict), seed=0)
    assert plan.notes["grid_points"] == 2 and plan.planned_epochs == 10  # both optimizers
    assert "2 points, the budget pays for 1 full trials" in plan.notes["over_budget"]


# ------------------------------------------------------------ conditional spaces
@pytest.fixture
def conditional(study_dict):
    """SGD's momentum only where the optimizer is momentum; quantized and log-integer kinds."""
    study_dict["budget"] = {
        "max_epochs": 9,
        "min_epochs": 1,
        "reduction_factor": 3,
        "total_epochs": 90,
    }
    study_dict["fixed"] = {"channels": 8}
    study_dict["space"] = {
        "lr": {"loguniform": {"low": 1e-4, "high": 1e-1}},
        "optimizer": {"choice": ["sgd", "momentum", "adam"]},
        "momentum": {"uniform": {"low": 0.5, "high": 0.99}, "when": {"optimizer": "momentum"}},
        "dropout": {"quniform": {"low": 0.0, "high": 0.5, "q": 0.1}},
        "hidden_units": {"lograndint": {"low": 8, "high": 129}},
    }
    return parse_study(study_dict)


def well_formed(config: dict) -> bool:
    return ("momentum" in config) == (config["optimizer"] == "momentum")


def drawn(tuner, study, count: int | None = None) -> list[dict]:
    """The configs (at most `count`) a variant generator hands Tune, without a trial run."""
    import tempfile

    from ray.tune.experiment import Experiment

    search = tuner.search_alg
    search.set_search_properties(study.metric.name, study.metric.mode, tuner.param_space)
    with tempfile.TemporaryDirectory() as storage:
        experiment = Experiment(
            name="draw",
            run=lambda config: None,
            config=tuner.param_space,
            num_samples=tuner.plan.num_samples,
            storage_path=storage,
        )
        search.add_configurations([experiment])
    return handed_out(search, count)


def handed_out(search, count: int | None = None) -> list[dict]:
    configs = []
    while (count is None or len(configs) < count) and (trial := search.next_trial()):
        configs.append(trial.config)
        search.on_trial_complete(trial.trial_id)  # frees the generator's concurrency slot
    return configs


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_builds_on_a_conditional_space(conditional, name):
    tuner = STRATEGIES[name].tuner(conditional, seed=3)
    assert tuner.plan == STRATEGIES[name].plan(conditional, seed=3)
    assert "momentum" not in tuner.param_space and tuner.param_space["channels"] == 8


@pytest.mark.parametrize("name", ["random", "sha", "asha", "hyperband", "pbt"])
def test_random_configs_of_a_conditional_space_are_seeded_and_well_formed(conditional, name):
    from hpo.space import sample_points

    tuner = STRATEGIES[name].tuner(conditional, seed=0)
    configs = drawn(tuner, conditional)
    # exactly hpo.space's seeded sample, in order, plus the fixed values, nothing else
    searched = [{k: v for k, v in c.items() if k != "channels"} for c in configs]
    assert searched == sample_points(conditional.space, tuner.plan.num_samples, seed=0)
    assert configs == drawn(STRATEGIES[name].tuner(conditional, seed=0), conditional)
    assert configs != drawn(STRATEGIES[name].tuner(conditional, seed=1), conditional)
    assert all(well_formed(c) and c["channels"] == 8 for c in configs)
    assert any("momentum" in c for c in configs) and any("momentum" not in c for c in configs)
    assert all(c["dropout"] in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5) for c in configs)
    assert all(isinstance(c["hidden_units"], int) and 8 <= c["hidden_units"] < 129 for c in configs)


def test_grid_of_a_conditional_space_holds_only_valid_combinations(conditional):
    from hpo.space import grid_points

    tuner = STRATEGIES["grid"].tuner(conditional, seed=0)
    configs = drawn(tuner, conditional)
    points = grid_points(conditional.space, tuner.plan.notes["grid"])
    assert [{k: v for k, v in c.items() if k != "channels"} for c in configs] == points
    assert all(well_formed(c) for c in configs)
    assert len(configs) == tuner.plan.notes["grid_points"] == tuner.plan.planned_trials <= 10
    keys = {tuple(sorted((k, str(v)) for k, v in c.items())) for c in configs}
    assert len(keys) == len(configs)  # each point once
    assert tuner.search_alg.max_concurrent == 2


def test_pbt_never_perturbs_a_conditional_quantized_or_integer_parameter(conditional):
    scheduler = STRATEGIES["pbt"].tuner(conditional, seed=0).scheduler
    assert set(scheduler._hyperparam_mutations) == {"lr"}


@pytest.mark.parametrize("name", ["optuna", "bohb"])
def test_tpe_proposes_a_conditional_parameter_only_where_it_is_active(conditional, name):
    from hpo.strategies.plan import MODEL

    tuner = STRATEGIES[name].tuner(conditional, seed=1)
    search = tuner.search_alg
    assert search.set_search_properties("val_accuracy", "max", tuner.param_space)
    configs = []
    for number in range(14):
        config = search.suggest(str(number))
        configs.append(config)
        value = config["lr"] + config.get("momentum", 0.0)
        search.on_trial_complete(str(number), {"val_accuracy": value, "training_iteration": 9})
    assert all(well_formed(c) for c in configs)
    assert configs[-1]["proposed_by"] == MODEL  # TPE's model proposed the last ones
    assert all(c["dropout"] in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5) for c in configs)


def test_a_points_generator_resumes_where_its_saved_state_left_off(conditional, tmp_path):
    """Tuner.restore: the generator's saved state goes on with the next config."""
    configs = drawn(STRATEGIES["random"].tuner(conditional, seed=0), conditional)
    interrupted = STRATEGIES["random"].tuner(conditional, seed=0)
    first = drawn(interrupted, conditional, count=4)
    interrupted.search_alg.save_to_dir(str(tmp_path), session_str="s")
    restored = STRATEGIES["random"].tuner(conditional, seed=0).search_alg
    restored.restore_from_dir(str(tmp_path))
    assert first + handed_out(restored) == configs

"""The `optuna` and `bohb` strategies propose from TPE's model, and TPE is told the truth
about each trial (final, stopped at a rung, or failed). Driven through the strategies'
own searcher objects, as Tune calls them, on a cheap objective with a known optimum."""

from __future__ import annotations

import math

import numpy as np

from hpo.spec import parse_study
from hpo.strategies import STRATEGIES
from hpo.strategies.plan import MODEL, STARTUP
from tests.conftest import TINY_STUDY
from trainables import PROPOSED_BY

OPTIMUM = {"lr": 1e-2, "dropout": 0.2}


def quadratic_study(trials: int, max_epochs: int = 1):
    study = {
        **TINY_STUDY,
        "space": {
            "lr": {"loguniform": {"low": 1e-4, "high": 1e-1}},
            "dropout": {"uniform": {"low": 0.0, "high": 0.5}},
        },
        "budget": {"max_epochs": max_epochs, "total_epochs": trials * max_epochs},
        "strategies": ["optuna", "bohb"] if max_epochs > 1 else ["optuna"],
    }
    return parse_study(study)


def distance(config: dict) -> float:
    """Distance to the optimum, each axis scaled to [0, 1] (lr on a log scale)."""
    lr = (math.log10(config["lr"]) - math.log10(OPTIMUM["lr"])) / 3
    dropout = (config["dropout"] - OPTIMUM["dropout"]) / 0.5
    return math.hypot(lr, dropout)


def searcher_for(study, seed: int, strategy: str = "optuna"):
    plan = STRATEGIES[strategy].tuner(study, seed)
    plan.search_alg.set_search_properties("val_accuracy", "max", plan.param_space)
    return plan.search_alg


def run_two_at_a_time(searcher, trials: int) -> list[dict]:
    """Ask and tell as Tune does with two trials running: the next proposal is asked
    while the previous trial still runs."""
    proposed, running = [], []
    for number in range(trials):
        config = searcher.suggest(str(number))
        proposed.append(config)
        running.append((str(number), config))
        if len(running) == 2 or number == trials - 1:
            while running:
                trial_id, config = running.pop(0)
                result = {"val_accuracy": 1 - distance(config), "training_iteration": 1}
                searcher.on_trial_result(trial_id, result)
                searcher.on_trial_complete(trial_id, result)
                if running and number < trials - 1:
                    break  # keep one running while the next is asked
    return proposed


def test_model_proposals_are_closer_to_the_optimum_than_startup_ones():
    """Over 8 seeds (not in every one: TPE's 15 proposals after 9 random ones are still
    noisy), a one-sided paired Wilcoxon test on each seed's mean distance to the optimum."""
    from scipy.stats import wilcoxon

    startup, model = [], []
    for seed in range(8):
        proposed = run_two_at_a_time(searcher_for(quadratic_study(trials=24), seed), 24)
        labels = [c[PROPOSED_BY] for c in proposed]
        assert labels.count(MODEL) >= len(labels) / 2  # start-up: a third of the trials
        startup.append(np.mean([distance(c) for c in proposed if c[PROPOSED_BY] == STARTUP]))
        model.append(np.mean([distance(c) for c in proposed if c[PROPOSED_BY] == MODEL]))
    assert np.mean(model) < 0.8 * np.mean(startup), (model, startup)
    assert wilcoxon(startup, model, alternative="greater").pvalue < 0.05


def test_labels_follow_tpe_start_up_count():
    """Optuna's TPE samples at random until `n_startup_trials` trials have finished."""
    study = quadratic_study(trials=12)
    study = study.model_copy(update={"strategy_options": {"optuna": {"n_startup_trials": 4}}})
    searcher = searcher_for(study, 0)
    labels = []
    for number in range(8):
        config = searcher.suggest(str(number))
        labels.append(config[PROPOSED_BY])
        result = {"val_accuracy": 1 - distance(config), "training_iteration": 1}
        searcher.on_trial_complete(str(number), result)
    assert labels == [STARTUP] * 4 + [MODEL] * 4


def test_stopped_trials_are_pruned_at_their_rung_and_diverged_ones_failed():
    from optuna.trial import TrialState

    study = quadratic_study(trials=10, max_epochs=9)
    searcher = searcher_for(study, 0, "bohb")
    for trial_id, reached, value in (("a", 9, 0.9), ("b", 3, 0.5), ("c", 1, math.nan)):
        searcher.suggest(trial_id)
        for epoch in range(1, reached + 1):
            searcher.on_trial_result(trial_id, {"val_accuracy": value, "training_iteration": epoch})
        searcher.on_trial_complete(trial_id, {"val_accuracy": value, "training_iteration": reached})
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert trials[0].value == 0.9
    assert trials[1].last_step == 3  # TPE ranks it by the rung it reached

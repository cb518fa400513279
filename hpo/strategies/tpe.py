"""Bayesian optimization: Optuna's multivariate TPE through Ray Tune's OptunaSearch,
seeded, full-fidelity trials, a start-up phase scaled to the budget (see tpe_search)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo import space as spaces
from hpo.strategies.options import TPEOptions
from hpo.strategies.plan import Plan, TunerPlan, full_fidelity_plan, options_of

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    planned = full_fidelity_plan(study)
    startup = startup_trials(study, planned.planned_trials)
    return Plan(
        planned.num_samples,
        planned.planned_trials,
        planned.planned_epochs,
        notes={"startup_trials": startup, "model_trials": planned.planned_trials - startup},
    )


def startup_trials(study: Study, trials: int) -> int:
    options = options_of(study, "optuna", TPEOptions)
    return min(trials, options.n_startup_trials or max(2, trials // 3))


def tuner(study: Study, seed: int) -> TunerPlan:
    from hpo.strategies.tpe_search import tpe_searcher

    planned, options = plan(study, seed), options_of(study, "optuna", TPEOptions)
    return TunerPlan(
        planned,
        spaces.tune_space(study.space, study.fixed),
        search_alg=tpe_searcher(study, seed, options, planned.notes["startup_trials"]),
        max_concurrent_trials=study.max_concurrent_trials,
    )

"""Optuna's TPE sampler through Ray Tune's OptunaSearch, seeded, full-fidelity trials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo import space as spaces
from hpo.strategies.plan import Plan, TunerPlan, full_fidelity_plan

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    return full_fidelity_plan(study)


def tuner(study: Study, seed: int) -> TunerPlan:
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    return TunerPlan(
        plan(study, seed),
        spaces.tune_space(study.space, study.fixed),
        search_alg=OptunaSearch(sampler=TPESampler(seed=seed)),
        max_concurrent_trials=study.max_concurrent_trials,
    )

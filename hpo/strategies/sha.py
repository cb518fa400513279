"""Synchronous successive halving: the largest single bracket that fits the budget, run by
this project's scheduler (hpo.strategies.successive_halving) over seeded random configs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.strategies.brackets import bracket_cost, rung_plan, trials_for_budget
from hpo.strategies.plan import Plan, TunerPlan, random_configs

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    b = study.budget
    n = trials_for_budget(b.total_epochs, b.min_epochs, b.max_epochs, b.reduction_factor)
    rungs = rung_plan(n, b.min_epochs, b.max_epochs, b.reduction_factor)
    return Plan(n, n, bracket_cost(rungs), notes={"rungs": rungs})


def tuner(study: Study, seed: int) -> TunerPlan:
    from hpo.strategies.successive_halving import SynchronousSuccessiveHalving

    b, planned = study.budget, plan(study, seed)
    scheduler = SynchronousSuccessiveHalving(
        planned.num_samples,
        b.min_epochs,
        b.max_epochs,
        b.reduction_factor,
        max_running=study.max_concurrent_trials,
    )
    return TunerPlan(
        planned,
        scheduler=scheduler,
        **random_configs(study, seed, planned.num_samples),  # the scheduler caps running trials
    )

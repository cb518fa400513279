"""Ray Tune's ASHAScheduler (grace period r, max R, η) over seeded random configs; the
run's epoch budget ends it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.strategies.plan import Plan, TunerPlan, random_configs

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    # Upper bound: every trial stopped at the first rung; the budget stopper ends the run.
    trials = study.budget.total_epochs // study.budget.min_epochs
    return Plan(trials, trials, planned_epochs=None)


def tuner(study: Study, seed: int) -> TunerPlan:
    from ray.tune.schedulers import ASHAScheduler

    b, planned = study.budget, plan(study, seed)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=b.max_epochs,
        grace_period=b.min_epochs,
        reduction_factor=b.reduction_factor,
    )
    return TunerPlan(
        planned,
        scheduler=scheduler,
        **random_configs(study, seed, planned.num_samples, study.max_concurrent_trials),
    )

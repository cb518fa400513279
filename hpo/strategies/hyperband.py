"""Ray Tune's synchronous HyperBandScheduler (max R, η) over seeded random configs, with
the running-trial cap that pausing schedulers need; the run's epoch budget ends it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.strategies.plan import Plan, TunerPlan, random_configs

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    # Upper bound (one epoch per trial); trials the budget never starts are dropped from
    # the experiment's saved state at its end (hpo.experiment).
    trials = study.budget.total_epochs
    return Plan(trials, trials, planned_epochs=None)


def tuner(study: Study, seed: int) -> TunerPlan:
    from hpo.strategies.capped_hyperband import CappedHyperBand

    b, planned = study.budget, plan(study, seed)
    scheduler = CappedHyperBand(
        max_running=study.max_concurrent_trials,
        time_attr="training_iteration",
        max_t=b.max_epochs,
        reduction_factor=b.reduction_factor,
    )
    return TunerPlan(
        planned,
        scheduler=scheduler,
        **random_configs(study, seed, planned.num_samples),  # the scheduler caps running trials
    )

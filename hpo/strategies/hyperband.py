"""Ray Tune's synchronous HyperBandScheduler (max R, η) over seeded random configs, with
the running-trial cap that pausing schedulers need; the run's epoch budget ends it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo import space as spaces
from hpo.strategies.plan import Plan, TunerPlan, seeded_sampler

if TYPE_CHECKING:
    from hpo.spec import Study


def plan(study: Study, seed: int) -> Plan:
    # Upper bound (one epoch per trial); trials the budget never starts are dropped from
    # the experiment's saved state at its end (hpo.experiment).
    trials = study.budget.total_epochs
    return Plan(trials, trials, planned_epochs=None)


def tuner(study: Study, seed: int) -> TunerPlan:
    from hpo.strategies.capped_hyperband import CappedHyperBand

    b = study.budget
    scheduler = CappedHyperBand(
        max_running=study.max_concurrent_trials,
        time_attr="training_iteration",
        max_t=b.max_epochs,
        reduction_factor=b.reduction_factor,
    )
    return TunerPlan(
        plan(study, seed),
        spaces.tune_space(study.space, study.fixed),
        search_alg=seeded_sampler(seed),  # the scheduler caps running trials itself
        scheduler=scheduler,
    )
